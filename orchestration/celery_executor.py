"""Dagster's Celery executor (``dagster-celery``) as this project runs it, and how it is selected.

    FOLEY_EXECUTOR=celery                      (default: in_process)
    FOLEY_CELERY_BROKER=redis://127.0.0.1:6379/0
    FOLEY_CELERY_BACKEND=...                   (optional; default: the broker)

``foley_celery_executor`` is dagster-celery's own execution loop with a watch on each started
step. A worker killed outright (its host lost, ``kill -9`` of the whole worker) never reports its
task, and dagster-celery would wait for it forever; here a step whose worker no longer answers
that it runs the step (gone, or restarted under its name) is failed with a message naming the
worker. (A killed pool process alone is reported by the surviving worker process: Celery's
``WorkerLostError``.) The workers serve ``celery_app`` (``orchestration.worker``); the settings
both sides share are ``CELERY_SETTINGS``.
"""

from __future__ import annotations

import os
import time
from urllib.parse import urlsplit, urlunsplit

from dagster import executor, multiple_process_executor_requirements
from dagster_celery import celery_executor
from dagster_celery.core_execution_loop import core_celery_execution_loop
from dagster_celery.defaults import broker_transport_options
from dagster_celery.executor import CELERY_CONFIG, CeleryExecutor, _submit_task
from dagster_celery.make_app import make_app

EXECUTOR = "FOLEY_EXECUTOR"
BROKER = "FOLEY_CELERY_BROKER"
BACKEND = "FOLEY_CELERY_BACKEND"
CHOICES = ("in_process", "celery")

# Celery settings shared by the executor (which sends the steps) and the workers (which run them).
CELERY_SETTINGS = {
    # a worker takes a task only when its one process is free: a long training step never keeps
    # a second step waiting behind it on a busy worker while another worker idles (Redis only)
    "worker_disable_prefetch": True,
    "worker_prefetch_multiplier": 1,
    # STARTED, with the worker's name and pid: whom the watch below asks
    "task_track_started": True,
    # a task taken by a worker that died before starting it goes back to the queue after 5 min
    # (Redis's default: 1 h). A started task is already acknowledged (Celery's default early
    # acknowledgement), so a long training step is never sent a second time.
    "broker_transport_options": {**broker_transport_options, "visibility_timeout": 300},
}
WATCH = "FOLEY_CELERY_WATCH_S"  # how often (s) a started step's worker is asked about it; default 10
MISSES = 3  # checks in a row without the step before it is failed: 30-40 s after a worker dies


class NotReady(RuntimeError):
    """The distributed executor cannot start: one line saying what and where."""


def selected() -> bool:
    """True when ``FOLEY_EXECUTOR`` asks for the workers (``celery``); the default is in-process."""
    value = os.environ.get(EXECUTOR, "").strip() or "in_process"
    if value not in CHOICES:
        raise NotReady(f"{EXECUTOR}={value!r}: expected one of {', '.join(CHOICES)}")
    return value == "celery"


def redact(url: str) -> str:
    """The URL without its password, for messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username or ''}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def broker_url() -> str:
    url = os.environ.get(BROKER, "").strip()
    if not url:
        raise NotReady(f"{EXECUTOR}=celery needs {BROKER} (the Redis broker, e.g. redis://127.0.0.1:6379/0)")
    return url


def backend_url() -> str:
    return os.environ.get(BACKEND, "").strip() or broker_url()


def executor_config() -> dict:
    """The executor's run config. The URLs stay references to the environment, so a password in
    them is never stored in a run's config (which the UI shows)."""
    return {"broker": {"env": BROKER}, "backend": {"env": BACKEND if os.environ.get(BACKEND, "").strip() else BROKER},
            "config_source": dict(CELERY_SETTINGS)}


def celery_app(broker: str | None = None, backend: str | None = None):
    """The Celery app with dagster-celery's queues and our settings (what the workers serve)."""
    return make_app(CeleryExecutor.for_cli(broker=broker or broker_url(), backend=backend or backend_url(),
                                           config_source=dict(CELERY_SETTINGS)).app_args())


class WorkerLost(RuntimeError):
    """The worker running a step is gone: the step's error, as its run records it."""


class _Watched:
    """A step's Celery result as dagster-celery's loop polls it (``ready``, ``get``, ``revoke``),
    which also becomes ready, with an error, when the worker running the step stops answering."""

    def __init__(self, result, app, step_key: str):
        self._result, self._app, self._step = result, app, step_key
        self._checked, self._misses, self._lost = time.monotonic(), 0, None
        self._every = float(os.environ.get(WATCH) or 10.0)

    def ready(self) -> bool:
        if self._result.ready():
            return True
        if time.monotonic() - self._checked < self._every:
            return False
        self._checked = time.monotonic()
        if self._result.state != "STARTED" or not isinstance(self._result.info, dict):
            return False  # still queued: no worker has it yet
        worker = self._result.info.get("hostname")
        # asked by task id, not a mere ping: a worker restarted under the same name answers pings
        reply = self._app.control.inspect(destination=[worker], timeout=min(5.0, self._every)).query_task(
            self._result.id) or {}
        if self._result.id in (reply.get(worker) or {}):
            self._misses = 0
            return False
        self._misses += 1
        if self._misses < MISSES or self._result.ready():
            return self._result.ready()
        self._lost = (f"the worker {worker} (pid {self._result.info.get('pid')}) running {self._step} is gone "
                      f"({'no answer' if not reply else 'restarted without it'} {MISSES} times over "
                      f"{MISSES * self._every:.0f} s): killed, or its host lost")
        self._result.revoke(terminate=True, signal="SIGKILL")  # in case it comes back: no second writer
        return True

    def get(self):
        if self._lost:
            raise WorkerLost(self._lost)
        return self._result.get()

    def revoke(self, *args, **kwargs):
        return self._result.revoke(*args, **kwargs)


def _submit_watched(app, plan_context, step, queue, priority, known_state):
    return _Watched(_submit_task(app, plan_context, step, queue, priority, known_state), app, step.key)


class FoleyCeleryExecutor(CeleryExecutor):
    def execute(self, plan_context, execution_plan):
        return core_celery_execution_loop(plan_context, execution_plan, step_execution_fn=_submit_watched)


@executor(name="foley_celery", config_schema=CELERY_CONFIG, requirements=multiple_process_executor_requirements())
def foley_celery_executor(init_context):
    """dagster-celery's executor, with a watch on the workers of started steps (see the module)."""
    config = init_context.executor_config
    return FoleyCeleryExecutor(broker=config.get("broker"), backend=config.get("backend"),
                               config_source=config.get("config_source"), include=config.get("include"),
                               # the retry mode as dagster-celery's own executor reads it from the config
                               retries=celery_executor.executor_creation_fn(init_context).retries)
