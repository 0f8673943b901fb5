"""Dagster resources: the profile every asset reads its settings from, and the IO manager that
passes each stage's ``Artifact`` record (path, version, inputs) to the stages downstream."""

from __future__ import annotations

import json

from dagster import ConfigurableIOManager, ConfigurableResource, InputContext, OutputContext
from pydantic import PrivateAttr

from foley_core.core.config import Profile, load_profile
from foley_core.core.layout import layout
from foley_core.core.records import Artifact, read_record, write_record


class FoleyProfile(ConfigurableResource):
    """Which profile (configs/<name>.yaml) the assets run with.

    ``overrides_json`` is deep-merged over the file (tests point paths at a tmp dir).
    """

    name: str = "cpu"
    overrides_json: str = "{}"

    def load(self) -> Profile:
        return load_profile(self.name, json.loads(self.overrides_json))


class ArtifactIOManager(ConfigurableIOManager):
    """Stores each asset's ``Artifact`` as JSON in ``artifacts/<profile>/records/`` and loads it
    as the input of the assets downstream: one record, or ``{partition: record}`` when a stage
    over all classes reads a per-class stage. The record is small; the data stays where the
    stage wrote it (``foley_core.core.layout``)."""

    name: str = "cpu"
    overrides_json: str = "{}"
    # the layout, read once per manager: each input and output used to parse and validate the
    # profile again (a smoke run did it ~100 times)
    _where = PrivateAttr(default=None)

    def _layout(self):
        if self._where is None:
            self._where = layout(load_profile(self.name, json.loads(self.overrides_json)))
        return self._where

    def handle_output(self, context: OutputContext, obj: Artifact) -> None:
        if not isinstance(obj, Artifact):
            raise TypeError(f"{context.asset_key.to_user_string()} returned {type(obj).__name__}, not an Artifact")
        write_record(self._layout().record(obj.name, obj.partition), obj)

    def load_input(self, context: InputContext) -> Artifact | dict[str, Artifact]:
        name = context.asset_key.path[-1]
        where = self._layout()
        if not context.has_asset_partitions:
            return _read(where.record(name), name)
        if context.has_partition_key:  # per-class stage reading the same class upstream
            return _read(where.record(name, context.asset_partition_key), f"{name}[{context.asset_partition_key}]")
        return {p: _read(where.record(name, p), f"{name}[{p}]") for p in context.asset_partition_keys}


def _read(path, label: str) -> Artifact:
    artifact = read_record(path)
    if artifact is None:
        raise FileNotFoundError(f"no record of {label} at {path}: materialise {label} first")
    return artifact
