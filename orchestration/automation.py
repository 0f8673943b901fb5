"""Retraining automation: a weekly schedule (off by default, switch it on in the UI) and a
sensor that retrains when the DVC-tracked data changes (``data.dvc`` gets a new hash).

Both launch a backfill of the whole asset graph (every class partition included);
unchanged stages are cheap because every expensive stage is content-versioned.
"""

from dagster import (
    AssetSelection,
    DefaultScheduleStatus,
    DefaultSensorStatus,
    RunRequest,
    ScheduleEvaluationContext,
    SensorEvaluationContext,
    SkipReason,
    schedule,
    sensor,
)
from dagster._core.definitions.assets.graph.asset_graph_subset import AssetGraphSubset

from foley_core.config import PROJECT_ROOT
from foley_core.data.versioning import read_dvc_hash

DATA_DVC = PROJECT_ROOT / "data.dvc"


def _whole_graph_backfill(asset_graph, tags: dict) -> RunRequest:
    subset = AssetGraphSubset.from_asset_keys(asset_graph.materializable_asset_keys, asset_graph)
    return RunRequest.for_asset_graph_subset(subset, tags=tags)


@schedule(
    cron_schedule="0 3 * * 1",  # Mondays 03:00
    # A schedule needs a job; one job cannot span the graph's three partitionings, so the
    # schedule names the unpartitioned one and requests a backfill of the whole graph instead.
    job_name="foley_models",
    default_status=DefaultScheduleStatus.STOPPED,
    description="Weekly retraining of the whole pipeline (off by default).",
)
def weekly_retraining(context: ScheduleEvaluationContext):
    return _whole_graph_backfill(context.repository_def.asset_graph, {"foley/trigger": "weekly_schedule"})


@sensor(
    asset_selection=AssetSelection.all(),
    minimum_interval_seconds=60,
    default_status=DefaultSensorStatus.RUNNING,
    description="Retrain when data.dvc records a new DVC hash of data/.",
)
def retrain_on_data_change(context: SensorEvaluationContext):
    version = read_dvc_hash(DATA_DVC)
    if version is None:
        return SkipReason(f"{DATA_DVC.name} does not exist yet")
    if context.cursor is None:
        context.update_cursor(version)  # first look: remember, don't retrain what is already there
        return SkipReason(f"watching {DATA_DVC.name} (now {version})")
    if version == context.cursor:
        return SkipReason(f"data unchanged ({version})")
    context.update_cursor(version)
    return _whole_graph_backfill(context.repository_def.asset_graph, {"foley/trigger": f"data.dvc:{version}"})
