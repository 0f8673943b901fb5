"""`foley run`: materialise the whole asset graph for a profile on the local instance.

Runs go through the persistent instance in $DAGSTER_HOME, so every run, its metadata,
checks and lineage show up in `make ui`. Consecutive stages with the same partitioning run
together in one Dagster run (so blocking quality checks gate what follows them in that run);
per-class stages run one run per class, as a backfill would. A stage is skipped when it is
fresh (``orchestration.freshness``, the rule the daemon's sensor follows too). A second run
with nothing changed recomputes nothing.

With ``FOLEY_EXECUTOR=celery`` (``orchestration.distributed``, docs/scaling.md) the same runs
execute their steps on Celery workers, and the partitions of a per-class group run at once.
"""

from __future__ import annotations

import functools
import json
import logging
import multiprocessing
import os
import shutil
import socket
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import diffusers
import transformers
from dagster import (
    DagsterInstance,
    DagsterRunStatus,
    RunsFilter,
    get_dagster_logger,
    materialize,
)

from foley_core.core.config import PROJECT_ROOT, Profile, load_profile
from foley_core.core.fsutil import LockHeld, describe_holder, exclusive_lock, process_alive
from foley_core.core.layout import layout
from foley_core.core.progress import attach_terminal, warnings_to_log
from foley_core.core.records import read_record
from foley_core.data.own import recordings_source
from foley_core.registry import accepted_metrics, describe_served, served
from foley_core.run_outputs import terminal_summary
from foley_core.transfer import RESULT
from orchestration import celery_executor, distributed
from orchestration.assets import retraining
from orchestration.automation import FOLEY_HOST_TAG, FOLEY_RETRAIN_TAG, FOLEY_RUN_TAG
from orchestration.definitions import build_definitions
from orchestration.distributed import Launched
from orchestration.freshness import groups, is_fresh, stale_in_group

# Dagster's console logger prints every engine event; the terminal gets one line per
# stage instead, and the full event log is in the UI.
QUIET_CONSOLE = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
ADVISORY = ("finetuned_model",)  # assets whose failed checks do not mean the main model was refused


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


def quiet_training_logs() -> None:
    """Lightning's banners ("GPU available: False", tips) go to the run logs, not the terminal."""
    for name in ("pytorch_lightning", "lightning", "lightning.pytorch", "lightning_fabric", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)
    transformers.utils.logging.disable_progress_bar()  # "Loading weights" bars on every model load
    diffusers.utils.logging.disable_progress_bar()


def run_pipeline(profile_name: str, overrides: dict | None = None, echo: Callable[[str], None] = print,
                 force: bool = False) -> PipelineRun:
    """Materialise every asset that is missing or stale (all of them with ``force``).

    One run at a time per artifacts folder: a second run exits at once, naming the holder.
    The lock is an flock, so a run killed with -9 leaves no stale lock behind.
    """
    where = layout(load_profile(profile_name, overrides))
    workers = None
    if celery_executor.selected():
        ensure_dagster_home()
        with DagsterInstance.get() as instance:
            workers = distributed.check_ready(where.root, instance)  # one line when it cannot start
        echo(f"  executor: Celery, {len(workers)} worker(s) on {celery_executor.redact(celery_executor.broker_url())}: "
             + ", ".join(workers))
    try:
        with exclusive_lock(where.run_lock, timeout=0), retraining(force):
            return _run_unlocked(profile_name, overrides, echo, force, on_workers=workers is not None)
    except LockHeld as exc:
        raise RuntimeError(f"another foley run is using {where.root}: {describe_holder(exc.holder)}; "
                           "wait for it to finish or stop it") from None


def _owner_tags() -> dict[str, str]:
    """Which process launched a run: lets the next `foley run` recognise a dead one, and a step on
    a worker recognise the run that holds the artifacts folder for it."""
    return {FOLEY_RUN_TAG: str(os.getpid()), FOLEY_HOST_TAG: socket.gethostname()}


def fail_orphaned_runs(instance: DagsterInstance) -> list[tuple[str, int]]:
    """Mark failed the runs whose `foley run` process died (kill -9, power loss) and free their
    pool slots. Without this, the dead run keeps its "compute" pool slot and every later run
    waits for it forever. Only runs this host executed in-process (tagged with their pid) are
    touched, and only when that pid is gone; runs launched by a daemon are its to monitor."""
    reaped = []
    host = socket.gethostname()
    unfinished = [DagsterRunStatus.STARTED, DagsterRunStatus.STARTING, DagsterRunStatus.NOT_STARTED]
    for record in instance.get_run_records(RunsFilter(statuses=unfinished, tags={FOLEY_HOST_TAG: host})):
        run = record.dagster_run
        pid = int(run.tags.get(FOLEY_RUN_TAG, "0"))
        if pid and not process_alive(pid):
            instance.report_run_failed(run, message=f"the foley run process (pid {pid}) died before the run ended")
            instance.event_log_storage.free_concurrency_slots_for_run(run.run_id)
            reaped.append((run.run_id, pid))
    return reaped


def _run_unlocked(profile_name: str, overrides: dict | None, echo: Callable[[str], None], force: bool,
                  on_workers: bool = False) -> PipelineRun:
    ensure_dagster_home()
    quiet_training_logs()
    profile = load_profile(profile_name, overrides)
    defs = build_definitions(profile_name, overrides)
    instance = DagsterInstance.get()
    for run_id, pid in fail_orphaned_runs(instance):
        echo(f"  run {run_id[:8]} (pid {pid}) was killed before it ended: marked failed, its pool slots freed")
    assets = list(defs.assets)
    everything = [*assets, *defs.asset_checks]
    by_key = {a.key: a for a in assets}
    resources = dict(defs.resources)
    outcome = PipelineRun()
    tags = {"foley/profile": profile_name, **_owner_tags(), **({FOLEY_RETRAIN_TAG: "1"} if force else {})}

    def launch(keys: list, partition: str | None) -> Launched:
        if on_workers:
            return distributed.run_steps(profile_name, overrides, keys, partition, tags, QUIET_CONSOLE)
        result = materialize(everything, instance=instance, resources=resources, selection=keys,
                             partition_key=partition, tags=tags, run_config=QUIET_CONSOLE, raise_on_error=False)
        return Launched.of(result)

    def record(label: str, launched: Launched, seconds: float) -> None:
        outcome.run_ids.append(launched.run_id)
        failed = [f"{asset}:{check}" for asset, check, passed in launched.checks if not passed and asset not in ADVISORY]
        outcome.failed_checks += failed
        if not launched.success and not failed:
            why = f": {launched.error}" if launched.error else ""
            raise RuntimeError(f"{label} failed{why}; see run {launched.run_id} in `make ui` "
                               f"(DAGSTER_HOME={os.environ['DAGSTER_HOME']})")
        outcome.materialised.append(label)
        note = f"  checks failed: {', '.join(failed)}" if failed else ""
        echo(f"  {label:<58} {seconds:7.1f}s  run {launched.run_id[:8]}{note}")

    # Progress goes to the real terminal (Dagster captures the assets' stdout/stderr);
    # library warnings go to the run's event log instead of the terminal.
    with attach_terminal(), warnings_to_log(get_dagster_logger("warnings")):
        for group, partitions_def in groups(assets):
            names = ", ".join(a.key.path[-1] for a in group)
            if on_workers and partitions_def is not None:
                # the partitions are independent: judge them all, then run the stale ones at once
                work = []
                for partition in partitions_def.get_partition_keys():
                    todo = stale_in_group(group, lambda a: is_fresh(profile, a, partition, by_key), force)
                    if todo:
                        work.append((f"{names} [{partition}]", todo, partition))
                    else:
                        outcome.skipped.append(f"{names} [{partition}]")
                        echo(f"  {names + f' [{partition}]':<58} fresh, skipped")
                work.sort(key=lambda item: -_sampling_work(profile, item[2]))  # the longest class first
                _launch_at_once(work, functools.partial(distributed.run_steps, profile_name, overrides, tags=tags,
                                                        run_config=QUIET_CONSOLE), record)
                continue
            for partition in partitions_def.get_partition_keys() if partitions_def else [None]:
                # freshness is judged afresh after each run: upstream versions may just have changed
                todo = stale_in_group(group, lambda a: is_fresh(profile, a, partition, by_key), force)
                label = names + (f" [{partition}]" if partition else "")
                if not todo:
                    outcome.skipped.append(label)
                    echo(f"  {label:<58} fresh, skipped")
                    continue
                started = time.perf_counter()
                record(label, launch([a.key for a in todo], partition), time.perf_counter() - started)
    report = read_record(layout(profile).record("foley_report"))
    if report is not None:
        outcome.output_dir = report.location
        echo(terminal_summary(profile, outcome.output_dir))
    _explain_gate(profile, outcome, echo)
    _explain_transfer(profile, outcome, echo)
    return outcome


def _sampling_work(profile: Profile, partition: str) -> int:
    """A class's sampling work relative to the others: its candidates, twice over under guidance
    (the unconditional pass). Its runs start first, so on N workers the longest class is never the
    last to get one (docs/scaling.md)."""
    spec = next((c for c in profile.classes if c.name == partition), None)
    return 0 if spec is None else spec.candidates * (2 if spec.guidance > 1 else 1)


def _launch_at_once(work: list[tuple[str, list, str]], launch, record) -> None:
    """One run per partition, all at once (their steps wait for workers and pool slots); each is
    recorded as it ends, and the first failure is raised once every run has ended.

    Each run is driven from its own process, forked from this one (nothing to import again): not
    from threads, because Dagster reconfigures Python's logging as each run starts
    (``logging.config.dictConfig``), which closes the other runs' log handlers and can deadlock
    on the logging locks they hold."""
    if not work:
        return
    started = time.perf_counter()
    failure = None
    with ProcessPoolExecutor(max_workers=len(work), mp_context=multiprocessing.get_context("fork")) as pool:
        futures = {pool.submit(launch, [a.key for a in todo], partition): label for label, todo, partition in work}
        for future in as_completed(futures):
            try:
                record(futures[future], future.result(), time.perf_counter() - started)
            except Exception as exc:  # the other runs still end (and are recorded) first
                failure = failure or exc
    if failure is not None:
        raise failure


def _explain_transfer(profile: Profile, outcome: PipelineRun, echo: Callable[[str], None]) -> None:
    """One line on the fine-tune on transfer.source, when this run made it."""
    if not any("finetuned_model" in label for label in outcome.materialised) or not profile.transfer.source:
        return
    path = layout(profile).transfer(recordings_source(profile).name) / RESULT
    if not path.is_file():
        echo("fine-tune on transfer.source: nothing to fine-tune yet (no accepted model)")
        return
    record = json.loads(path.read_text())
    if record["gate"]["problems"]:
        echo(f"fine-tune on {profile.transfer.source}: {record['model_version']} NOT promoted "
             f"({'; '.join(record['gate']['problems'])}); `foley generate` keeps using the model before it")
    else:
        echo(f"fine-tune on {profile.transfer.source}: promoted {record['model_version']} "
             f"(from {record['base_model_version']}); `foley generate` uses it")


def _explain_gate(profile: Profile, outcome: PipelineRun, echo: Callable[[str], None]) -> None:
    evaluated = read_record(layout(profile).record("evaluation_metrics"))
    if outcome.failed_checks:
        echo(f"quality gate failed ({', '.join(outcome.failed_checks)}): the model was NOT promoted; "
             f"`foley generate` keeps using the last accepted one")
    elif evaluated is not None:  # the gate may also have refused a promotion launched alone
        model = json.loads(evaluated.location.read_text())["model_version"]
        kept = (accepted_metrics(profile) or {}).get("model_version")
        if kept != model:
            echo(f"quality gate: the evaluated model {model} was NOT promoted (see promoted_pipeline in "
                 f"`make ui`); `foley generate` keeps using {describe_served(profile) if kept else 'no model yet'}")
        elif (serving := served(profile) or {}).get("kind") == "finetuned" and serving["base_model_version"] != model:
            echo(f"model {model} accepted as the new base; `foley generate` keeps serving your fine-tuned "
                 f"{describe_served(profile)} until it is fine-tuned on the new base: "
                 f"`foley finetune {serving.get('source') or 'SOURCE'}`, or name transfer.source in the profile")
