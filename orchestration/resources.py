"""Dagster resources: the profile every asset reads its settings from."""

from __future__ import annotations

import json

from dagster import ConfigurableResource

from foley_core.config import Profile, load_profile


class FoleyProfile(ConfigurableResource):
    """Which profile (configs/<name>.yaml) the assets run with.

    ``overrides_json`` is deep-merged over the file (tests point paths at a tmp dir).
    """

    name: str = "cpu"
    overrides_json: str = "{}"

    def load(self) -> Profile:
        return load_profile(self.name, json.loads(self.overrides_json))
