"""Offline-safe defaults, applied before any hub-aware library is imported.

Nothing may hang waiting for a network: the hub is opt-in (``HF_HUB_OFFLINE=0``),
wandb logs offline unless configured, DVC and Dagster send no telemetry.
A value the user already set is never overridden.
"""

from __future__ import annotations

import os

OFFLINE_DEFAULTS = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "WANDB_MODE": "offline",
    "WANDB_SILENT": "true",
    "DVC_NO_ANALYTICS": "1",
    "DAGSTER_DISABLE_TELEMETRY": "1",
    "TOKENIZERS_PARALLELISM": "false",
}


def apply_offline_defaults() -> None:
    for key, value in OFFLINE_DEFAULTS.items():
        os.environ.setdefault(key, value)


RETRAIN = "FOLEY_RETRAIN"  # "1": `foley run --force`, every model trains from scratch


def retrain_requested() -> bool:
    """True under `foley run --force`: the training caches (a finished model with the same
    fingerprint, checkpoints to resume from) are not used, so every model trains from scratch.
    The fingerprints themselves are unchanged, so the next plain run finds the results fresh."""
    return os.environ.get(RETRAIN) == "1"
