"""`foley run`: materialise the whole asset graph for a profile on the local instance.

Runs go through the persistent instance in $DAGSTER_HOME, so every run, its metadata
and its lineage show up in `make ui`. Unpartitioned stages run once; per-class stages
run one Dagster run per class partition (fine-grained retries, as a backfill would).
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Callable

from dagster import AssetKey, DagsterInstance, materialize

from foley_core.config import PROJECT_ROOT
from orchestration.definitions import build_definitions


# Dagster's console logger prints every engine event; the terminal gets one line per
# stage instead, and the full event log is in the UI.
QUIET_CONSOLE = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


def ensure_dagster_home() -> Path:
    """$DAGSTER_HOME (default .dagster_home/) holding the project's dagster.yaml."""
    home = Path(os.environ.setdefault("DAGSTER_HOME", str(PROJECT_ROOT / ".dagster_home")))
    home.mkdir(parents=True, exist_ok=True)
    if not (home / "dagster.yaml").exists():
        shutil.copyfile(PROJECT_ROOT / "dagster.yaml", home / "dagster.yaml")
    return home


def _stages(defs) -> list[tuple[object, bool]]:
    """Assets in dependency order, each with whether it is partitioned."""
    graph = defs.resolve_asset_graph()
    order = graph.toposorted_asset_keys
    return [(key, graph.get(key).partitions_def is not None) for key in order if graph.get(key).is_materializable]


def run_pipeline(profile_name: str, overrides: dict | None = None, echo: Callable[[str], None] = print) -> list[str]:
    """Materialise every asset; returns the Dagster run ids in order."""
    ensure_dagster_home()
    defs = build_definitions(profile_name, overrides)
    instance = DagsterInstance.get()
    assets = list(defs.assets)
    resources = dict(defs.resources)
    run_ids = []
    graph = defs.resolve_asset_graph()
    for key, partitioned in _stages(defs):
        keys = graph.get(key).partitions_def.get_partition_keys() if partitioned else [None]
        for partition in keys:
            label = key.to_user_string() + (f"[{partition}]" if partition else "")
            started = time.perf_counter()
            result = materialize(
                assets, instance=instance, resources=resources, selection=[key], partition_key=partition,
                tags={"foley/profile": profile_name},
                run_config=QUIET_CONSOLE,
            )
            if not result.success:
                raise RuntimeError(f"{label} failed; see run {result.run_id} in `make ui`")
            run_ids.append(result.run_id)
            echo(f"  {label:<40} {time.perf_counter() - started:6.1f}s  run {result.run_id[:8]}")
    return run_ids


def latest_metadata(asset_key: str, partition: str | None = None) -> dict:
    instance = DagsterInstance.get()
    record = instance.get_latest_materialization_event(AssetKey(asset_key)) if partition is None else None
    if partition is not None:
        records = instance.fetch_materializations(AssetKey(asset_key), limit=50).records
        record = next((r.event_log_entry for r in records if r.partition_key == partition), None)
    if record is None:
        return {}
    return {k: v.value for k, v in record.asset_materialization.metadata.items()}
