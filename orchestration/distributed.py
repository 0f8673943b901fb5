"""The graph's steps on a pool of workers: Dagster's Celery executor (``dagster-celery``) with a
Redis broker. No queue of our own: Celery moves the steps, Dagster's instance (PostgreSQL)
records them and its pools hand out the ``compute`` slots. See docs/scaling.md.

Selected by the environment, so `make run` / `foley run` keep the in-process executor:

    FOLEY_EXECUTOR=celery                      (default: in_process)
    FOLEY_CELERY_BROKER=redis://127.0.0.1:6379/0
    FOLEY_CELERY_BACKEND=...                   (optional; default: the broker)

`foley run` then sends every step of a run to the workers, and runs the partitions of a
per-class group (ingestion, embeddings, generation) as concurrent runs; runs launched from the
UI, the schedule or the sensors use the same executor (``build_definitions``). A worker is
``celery -A orchestration.worker worker -c 1 -n gpu0@%h`` per accelerator (deploy/).

What is added to dagster-celery, and why:
- ``check_ready``: before anything runs, a one-line error for a broker that does not answer,
  no worker listening, an instance the workers cannot share, or an artifacts folder without
  working flock (``fsutil.check_shared_folder``).
- ``foley_celery_executor`` (``orchestration.celery_executor``): dagster-celery's own loop,
  with a watch that fails a step whose worker died instead of waiting for it forever.
"""

from __future__ import annotations

import functools
import json
import os
import re
from dataclasses import dataclass, field

from celery.exceptions import CeleryError
from dagster import (
    AssetKey,
    AssetSelection,
    DagsterInstance,
    Definitions,
    ExecuteInProcessResult,
    JobDefinition,
    JobExecutionResult,
    build_reconstructable_job,
    define_asset_job,
    execute_job,
)
from kombu import Connection

from foley_core.core.fsutil import check_shared_folder
from orchestration.celery_executor import (
    BACKEND,
    BROKER,
    EXECUTOR,
    NotReady,
    backend_url,
    broker_url,
    celery_app,
    executor_config,
    foley_celery_executor,
    redact,
)
from orchestration.definitions import build_definitions

# Dagster's run tag for a partition (the UI and `dagster asset materialize --partition` set the same)
PARTITION_TAG = "dagster/partition"
JOB = "foley_run_steps"  # the job `foley run` launches on the workers: the stale assets of one group


def check_ready(artifacts: os.PathLike, instance: DagsterInstance) -> list[str]:
    """Refuse, in one line, what would make a distributed run fail or hang later: a broker (or
    result backend) that does not answer, no worker listening, an instance the workers cannot
    reach, an artifacts folder without working flock. Returns the names of the workers."""
    urls = {broker_url(): ("broker", BROKER)}
    urls.setdefault(backend_url(), ("result backend", BACKEND))  # often the broker itself
    for url, (what, variable) in urls.items():
        try:
            with Connection(url, connect_timeout=3) as connection:
                connection.ensure_connection(max_retries=1, interval_start=0, interval_step=0, timeout=3)
        except Exception as exc:  # kombu wraps the transport's own errors in several ways
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise NotReady(f"the Celery {what} {redact(url)} ({variable}) does not answer: {reason}; "
                           f"start it (deploy/README.md) or unset {EXECUTOR}") from None
    try:
        replies = celery_app().control.ping(timeout=2.0)
    except (CeleryError, OSError) as exc:
        raise NotReady(f"the Celery broker {redact(broker_url())} failed to reach the workers: {exc}") from None
    workers = sorted(name for reply in replies for name in reply)
    if not workers:
        raise NotReady(f"no Celery worker answers on {redact(broker_url())}: start the workers "
                       f"(`celery -A orchestration.worker worker`, deploy/README.md) or unset {EXECUTOR}")
    storage = type(instance.run_storage).__name__
    if "Sqlite" in storage:
        raise NotReady(f"{EXECUTOR}=celery needs a Dagster instance every worker reaches (deploy/dagster.yaml, "
                       f"PostgreSQL); the one in {os.environ.get('DAGSTER_HOME')} keeps runs in SQLite ({storage})")
    check_shared_folder(artifacts)
    return workers


def steps_job(profile_name: str, overrides_json: str, asset_names: list[str]) -> JobDefinition:
    """The job of one `foley run` group: the named assets (their checks with them) of the profile,
    on the workers. Rebuilt by each worker from these arguments (``steps_job_pointer``), once per
    worker process."""
    return _steps_job(profile_name, overrides_json, tuple(asset_names))


@functools.lru_cache(maxsize=32)
def _steps_job(profile_name: str, overrides_json: str, asset_names: tuple[str, ...]) -> JobDefinition:
    defs = build_definitions(profile_name, json.loads(overrides_json))
    keys = {a.key.path[-1]: a.key for a in defs.assets}
    job = define_asset_job(JOB, selection=AssetSelection.assets(*[keys[n] for n in asset_names]),
                           executor_def=foley_celery_executor)
    return Definitions(assets=list(defs.assets), asset_checks=list(defs.asset_checks), jobs=[job],
                       resources=dict(defs.resources)).resolve_job_def(JOB)


def steps_job_pointer(profile_name: str, overrides: dict | None, keys: list[AssetKey]):
    """What a worker needs to rebuild ``steps_job``: the module, the function and its arguments."""
    return build_reconstructable_job(__name__, steps_job.__name__, reconstructable_kwargs={
        "profile_name": profile_name, "overrides_json": json.dumps(overrides or {}, sort_keys=True),
        "asset_names": [k.path[-1] for k in keys]})


@dataclass
class Launched:
    """What `foley run` keeps of one Dagster run, whichever executor ran it (plain data: it may
    come back from another process)."""

    run_id: str
    success: bool
    checks: list[tuple[str, str, bool]] = field(default_factory=list)  # (asset name, check name, passed)
    error: str | None = None  # why it failed, in a line or two

    @classmethod
    def of(cls, result: ExecuteInProcessResult | JobExecutionResult, error: str | None = None) -> Launched:
        return cls(result.run_id, result.success, [(e.asset_key.path[-1], e.check_name, e.passed)
                                                   for e in result.get_asset_check_evaluations()], error)


def run_steps(profile_name: str, overrides: dict | None, keys: list[AssetKey], partition: str | None,
              tags: dict[str, str], run_config: dict) -> Launched:
    """One Dagster run of ``keys`` (one partition) with its steps on the workers; returns when it ends.
    A failed run's ``compute`` pool slots are freed: a step whose worker died never reports its
    end, and its slot would otherwise stay taken for every later run."""
    job = steps_job_pointer(profile_name, overrides, keys)
    config = {**run_config, "execution": {"config": executor_config()}}
    with DagsterInstance.get() as instance:
        result = execute_job(job, instance=instance, run_config=config, raise_on_error=False,
                             tags={**tags, **({PARTITION_TAG: partition} if partition else {})})
        if not result.success:
            instance.event_log_storage.free_concurrency_slots_for_run(result.run_id)
        return Launched.of(result, None if result.success else _why_failed(result))


def _why_failed(result: JobExecutionResult) -> str:
    """The failed steps and their errors, or the executor's (a lost worker), one line each."""
    lines = [f"{event.step_key}: {event.event_specific_data.error.message.strip().splitlines()[-1]}"
             for event in result.get_step_failure_events() if event.event_specific_data.error]
    for event in result.all_events:
        error = getattr(event.event_specific_data, "error", None)
        if error is None or not (event.is_engine_event or event.is_run_failure):
            continue
        # dagster-celery: "During celery execution errors occurred in workers:\n[step]: module.Error: message"
        for step, message in re.findall(r"^\[([^\]]+)\]: (?:[\w.]+: )?(.*)$", error.message, re.M):
            lines.append(message if step in message else f"{step}: {message}")
    return "; ".join(dict.fromkeys(lines)) or "see the run's events"
