"""`foley run`: materialise the whole asset graph for a profile on the local instance.

Runs go through the persistent instance in $DAGSTER_HOME, so every run, its metadata,
checks and lineage show up in `make ui`. Consecutive stages with the same partitioning run
together in one Dagster run (so blocking quality checks gate what follows them in that run);
per-class stages run one run per class, as a backfill would. Anything Dagster reports FRESH
(same code version, same upstream data versions) is skipped: a second run with nothing
changed recomputes nothing expensive.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from dagster import AssetKey, DagsterInstance, DagsterRunStatus, RunsFilter, materialize
from dagster._core.definitions.data_version import CachingStaleStatusResolver, StaleStatus
from dagster._core.loader import LoadingContextForTest  # a plain LoadingContext; the UI builds the same

from foley_core.config import PROJECT_ROOT
from foley_core.config import load_profile
from foley_core.generation.pipeline import accepted_metrics
from foley_core.fsutil import LockHeld, describe_holder, exclusive_lock, process_alive
from orchestration.definitions import build_definitions
from orchestration.report import terminal_summary, write_run_outputs

# Dagster's console logger prints every engine event; the terminal gets one line per
# stage instead, and the full event log is in the UI.
QUIET_CONSOLE = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


@dataclass
class PipelineRun:
    run_ids: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    materialised: list[str] = field(default_factory=list)
    failed_checks: list[str] = field(default_factory=list)
    output_dir: Path | None = None


def ensure_dagster_home() -> Path:
    """$DAGSTER_HOME (default .dagster_home/) holding the project's dagster.yaml."""
    home = Path(os.environ.setdefault("DAGSTER_HOME", str(PROJECT_ROOT / ".dagster_home")))
    home.mkdir(parents=True, exist_ok=True)
    if not (home / "dagster.yaml").exists():
        shutil.copyfile(PROJECT_ROOT / "dagster.yaml", home / "dagster.yaml")
    return home


def _groups(graph) -> list[tuple[list[AssetKey], object]]:
    """Assets in dependency order, consecutive ones with the same partitions definition grouped."""
    groups: list[tuple[list[AssetKey], object]] = []
    for key in graph.toposorted_asset_keys:
        node = graph.get(key)
        if not node.is_materializable:
            continue
        if groups and groups[-1][1] == node.partitions_def:
            groups[-1][0].append(key)
        else:
            groups.append(([key], node.partitions_def))
    return groups


def quiet_training_logs() -> None:
    """Lightning's banners ("GPU available: False", tips) go to the run logs, not the terminal."""
    for name in ("pytorch_lightning", "lightning", "lightning.pytorch", "lightning_fabric", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)
    import diffusers
    import transformers

    transformers.utils.logging.disable_progress_bar()  # "Loading weights" bars on every model load
    diffusers.utils.logging.disable_progress_bar()


def _data_version(instance: DagsterInstance, key: AssetKey, partition: str | None) -> str | None:
    records = instance.fetch_materializations(key, limit=100).records
    for record in records:  # newest first
        if record.partition_key == partition:
            return (record.asset_materialization.tags or {}).get("dagster/data_version")
    return None


RUN_LOCK = ".foley-run.lock"


def run_pipeline(profile_name: str, overrides: dict | None = None, echo: Callable[[str], None] = print,
                 force: bool = False) -> PipelineRun:
    """Materialise every asset that is missing or stale (all of them with ``force``).

    One run at a time per artifacts folder: a second run exits at once, naming the holder.
    The lock is an flock, so a run killed with -9 leaves no stale lock behind.
    """
    artifacts = load_profile(profile_name, overrides).artifact_dir()
    try:
        with exclusive_lock(artifacts / RUN_LOCK, timeout=0):
            return _run_unlocked(profile_name, overrides, echo, force)
    except LockHeld as exc:
        raise RuntimeError(f"another foley run is using {artifacts}: {describe_holder(exc.holder)}; "
                           "wait for it to finish or stop it") from None


def _owner_tags() -> dict[str, str]:
    """Which process executes a run in-process: lets the next `foley run` recognise a dead one."""
    return {"foley/pid": str(os.getpid()), "foley/host": socket.gethostname()}


def fail_orphaned_runs(instance: DagsterInstance) -> list[tuple[str, int]]:
    """Mark failed the runs whose `foley run` process died (kill -9, power loss) and free their
    pool slots. Without this, the dead run keeps its "compute" pool slot and every later run
    waits for it forever. Only runs this host executed in-process (tagged with their pid) are
    touched, and only when that pid is gone; runs launched by a daemon are its to monitor."""
    reaped = []
    host = socket.gethostname()
    unfinished = [DagsterRunStatus.STARTED, DagsterRunStatus.STARTING, DagsterRunStatus.NOT_STARTED]
    for record in instance.get_run_records(RunsFilter(statuses=unfinished, tags={"foley/host": host})):
        run = record.dagster_run
        pid = int(run.tags.get("foley/pid", "0"))
        if pid and not process_alive(pid):
            instance.report_run_failed(run, message=f"the foley run process (pid {pid}) died before the run ended")
            instance.event_log_storage.free_concurrency_slots_for_run(run.run_id)
            reaped.append((run.run_id, pid))
    return reaped


def _run_unlocked(profile_name: str, overrides: dict | None, echo: Callable[[str], None], force: bool) -> PipelineRun:
    ensure_dagster_home()
    quiet_training_logs()
    defs = build_definitions(profile_name, overrides)
    instance = DagsterInstance.get()
    for run_id, pid in fail_orphaned_runs(instance):
        echo(f"  run {run_id[:8]} (pid {pid}) was killed before it ended: marked failed, its pool slots freed")
    everything = [*defs.assets, *defs.asset_checks]
    resources = dict(defs.resources)
    graph = defs.resolve_asset_graph()
    outcome = PipelineRun()
    # Dagster's staleness does not cross from an unpartitioned asset to a partitioned child, so
    # the runner also re-runs anything whose parent got a new data version in this run.
    changed: set[AssetKey] = set()
    for keys, partitions_def in _groups(graph):
        for partition in partitions_def.get_partition_keys() if partitions_def else [None]:
            # staleness is judged afresh after each run: upstream versions may just have changed
            resolver = CachingStaleStatusResolver(instance, graph, LoadingContextForTest(instance))
            todo = keys if force or keys[0].path == ["raw_foley_data"] else [
                k for k in keys if resolver.get_status(k, partition) != StaleStatus.FRESH
                or changed & set(graph.get(k).parent_keys)]
            before = {k: _data_version(instance, k, partition) for k in todo}
            label = ", ".join(k.to_user_string() for k in keys) + (f" [{partition}]" if partition else "")
            if not todo:
                outcome.skipped.append(label)
                echo(f"  {label:<58} fresh, skipped")
                continue
            started = time.perf_counter()
            result = materialize(everything, instance=instance, resources=resources, selection=todo,
                                 partition_key=partition, tags={"foley/profile": profile_name, **_owner_tags()},
                                 run_config=QUIET_CONSOLE, raise_on_error=False)
            outcome.run_ids.append(result.run_id)
            failed = [f"{e.asset_key.to_user_string()}:{e.check_name}"
                      for e in result.get_asset_check_evaluations() if not e.passed]
            outcome.failed_checks += failed
            if not result.success and not failed:
                raise RuntimeError(f"{label} failed; see run {result.run_id} in `make ui` (DAGSTER_HOME={os.environ['DAGSTER_HOME']})")
            outcome.materialised.append(label)
            changed |= {k for k in todo if _data_version(instance, k, partition) != before[k]}
            note = f"  checks failed: {', '.join(failed)}" if failed else ""
            echo(f"  {label:<58} {time.perf_counter() - started:7.1f}s  run {result.run_id[:8]}{note}")
    profile = load_profile(profile_name, overrides)
    outcome.output_dir = write_run_outputs(profile, instance, list(graph.toposorted_asset_keys), outcome.run_ids)
    echo(terminal_summary(profile, outcome.output_dir))
    if outcome.failed_checks:
        echo(f"quality gate failed ({', '.join(outcome.failed_checks)}): the model was NOT promoted; "
             f"`foley generate` keeps using the last accepted one")
    else:  # the gate may also have refused a promotion launched alone (promote re-applies it)
        evaluated = json.loads(profile.artifact_dir("evaluation", "metrics.json").read_text())["model_version"]
        kept = (accepted_metrics(profile) or {}).get("model_version")
        if kept != evaluated:
            echo(f"quality gate: the evaluated model {evaluated} was NOT promoted (see promoted_pipeline in "
                 f"`make ui`); `foley generate` keeps using {kept or 'no model yet'}")
    return outcome
