"""The Celery app a worker serves (FOLEY_EXECUTOR=celery, docs/scaling.md), one per accelerator:

    CUDA_VISIBLE_DEVICES=0 celery -A orchestration.worker worker -c 1 -n gpu0@%h

``-c 1``: one step at a time, the accelerator's one ``compute`` slot. The broker and the result
backend come from ``FOLEY_CELERY_BROKER`` / ``FOLEY_CELERY_BACKEND``; the Dagster instance and the
job to run come with each task (the instance's PostgreSQL settings from ``DAGSTER_PG_*``). The
task is dagster-celery's ``execute_plan``: one step of a run, the job rebuilt from the pointer the
run sends (``orchestration.distributed.steps_job``, or the code location's jobs). The pipeline's
modules are imported here, before the pool's process forks, so a step starts without loading them.
"""

from __future__ import annotations

from dagster_celery.tasks import create_task

from orchestration import distributed  # noqa: F401  (the pipeline's modules, loaded once before the fork)
from orchestration.celery_executor import celery_app
from orchestration.runner import quiet_training_logs

quiet_training_logs()
app = celery_app()
execute_plan = create_task(app)
