"""foley_core: the ML library of the text-to-Foley pipeline (no Dagster inside)."""

from foley_core.core.env import apply_offline_defaults

apply_offline_defaults()

__version__ = "0.1.0"
