"""Retraining automation: sensors and a schedule (public Dagster APIs only).

- ``retrain_when_changed`` (sensor, on by default) runs what is stale by the one freshness
  rule (``orchestration.freshness``, the rule `foley run` follows): a stage whose code version
  changed, whose inputs have new versions, or that never ran. A stage that came out unchanged
  stops the cascade, so a data change in one class retrains what depends on it and nothing else.
- ``retrain_on_data_change`` (sensor, on by default) re-snapshots the data when ``data.dvc``
  records a different version of *this profile's* sources than the last snapshot. It stays
  quiet while a `foley run` holds the artifacts folder: that run's own rewrite of
  ``data.dvc`` is not new data, and the run itself recomputes what depends on it. When the
  profile names ``transfer.source``, it also fires when the recordings' recorded version
  (their part of ``data.dvc``, or their content hash outside DVC) differs from the last
  ``own_recordings`` snapshot; the job snapshots both.
- ``weekly_retraining`` (schedule, off by default) re-snapshots the data every Monday 03:00,
  picking up files added to ``data/`` without ``dvc add``; the cascade does the rest.
- While a `foley run` holds the artifacts folder, the sensor waits: the run brings every stage
  up to date on its own.
"""

from __future__ import annotations

from dagster import (
    AssetsDefinition,
    AssetSelection,
    DagsterInstance,
    DagsterRunStatus,
    DefaultScheduleStatus,
    DefaultSensorStatus,
    RunRequest,
    RunsFilter,
    ScheduleDefinition,
    SensorDefinition,
    SensorEvaluationContext,
    SkipReason,
    sensor,
)

from foley_core.core.config import Profile
from foley_core.core.fsutil import who_holds
from foley_core.core.hashing import json_hash
from foley_core.core.layout import layout
from foley_core.core.records import read_record
from foley_core.data.own import recorded_recordings_version
from foley_core.data.raw import recorded_data_version
from orchestration.freshness import current_inputs, stale_work

FOLEY_RUN_TAG = "foley/pid"  # set on every run `foley run` launches (in-process, or its steps on workers)
FOLEY_HOST_TAG = "foley/host"  # ... with the host it runs on
FOLEY_RETRAIN_TAG = "foley/retrain"  # "1": launched by `foley run --force` (read by steps on workers)
STALE_TRIGGER = {"foley/trigger": "stale"}  # set on the runs retrain_when_changed requests
SNAPSHOT_JOB = "foley_data_snapshot"


def retrain_sensor(profile: Profile, assets: list[AssetsDefinition]) -> SensorDefinition:
    """``retrain_when_changed``: requests a run of the first group (and partition) that has a stale
    asset, by the one freshness rule (``orchestration.freshness``); the next tick asks again."""

    @sensor(name="retrain_when_changed", asset_selection=AssetSelection.all(), minimum_interval_seconds=60,
            default_status=DefaultSensorStatus.RUNNING,
            description="Retrain what is stale: a stage whose code version changed, or whose inputs have new "
                        "versions (the same rule as `foley run`).")
    def retrain_when_changed(context: SensorEvaluationContext):
        return stale_request(profile, assets, context.instance)

    return retrain_when_changed


def stale_request(profile: Profile, assets: list[AssetsDefinition], instance: DagsterInstance) -> RunRequest | SkipReason:
    holder = who_holds(layout(profile).run_lock)
    if holder is not None:
        return SkipReason(f"a foley run is using {layout(profile).root} ({holder}): it brings every stage up to date")
    running = instance.get_run_records(RunsFilter(statuses=[DagsterRunStatus.QUEUED, DagsterRunStatus.NOT_STARTED,
                                                            DagsterRunStatus.STARTING, DagsterRunStatus.STARTED],
                                                  tags=STALE_TRIGGER), limit=1)
    if running:
        return SkipReason(f"run {running[0].dagster_run.run_id[:8]} is bringing stale stages up to date")
    by_key = {a.key: a for a in assets}
    for todo, partition in stale_work(profile, assets):
        # the same stale state gives the same key, so a failed run is not requested again until
        # something changes (a fix to the code, or new data)
        state = [[a.key.to_user_string(), a.code_versions_by_key.get(a.key),
                  current_inputs(profile, a, partition, by_key)] for a in todo]
        return RunRequest(run_key=f"stale-{json_hash([partition, state])[:16]}", asset_selection=[a.key for a in todo],
                          partition_key=partition, tags=STALE_TRIGGER)
    return SkipReason("every stage is fresh")


def weekly_retraining() -> ScheduleDefinition:
    return ScheduleDefinition(
        name="weekly_retraining", cron_schedule="0 3 * * 1", job_name=SNAPSHOT_JOB,
        default_status=DefaultScheduleStatus.STOPPED,
        description="Weekly data snapshot (off by default): new data retrains what depends on it.")


def data_change_sensor(profile: Profile) -> SensorDefinition:
    @sensor(name="retrain_on_data_change", job_name=SNAPSHOT_JOB, minimum_interval_seconds=60,
            default_status=DefaultSensorStatus.RUNNING,
            description="Snapshot the data when data.dvc records a new version of this profile's sources "
                        "(or of its own recordings, transfer.source).")
    def retrain_on_data_change(context: SensorEvaluationContext):
        return data_change_request(profile)

    return retrain_on_data_change


def data_change_request(profile: Profile) -> RunRequest | SkipReason:
    where = layout(profile)
    holder = who_holds(where.run_lock)
    if holder is not None:
        return SkipReason(f"a foley run is using {where.root} ({holder}): "
                          "its own data.dvc rewrite is not new data")
    snapshot = read_record(where.record("raw_foley_data"))
    if snapshot is None:
        return SkipReason("no data snapshot yet: run `foley run` or materialise raw_foley_data")
    current = recorded_data_version(profile)
    if current is not None and snapshot.version != current:
        return RunRequest(run_key=f"data-{current}", tags={"foley/trigger": f"data.dvc:{current}"})
    recordings = _recordings_request(profile)
    if recordings is not None:
        return recordings
    if current is None:
        return SkipReason("no data recorded (data.dvc or the source folders) to compare with")
    return SkipReason(f"this profile's data unchanged ({current})")


def _recordings_request(profile: Profile) -> RunRequest | None:
    """A snapshot run when the recordings of ``transfer.source`` are recorded at a new version."""
    if not profile.transfer.source:
        return None
    current = recorded_recordings_version(profile)
    snapshot = read_record(layout(profile).record("own_recordings"))
    if current is None or (snapshot is not None and snapshot.version == current):
        return None
    return RunRequest(run_key=f"recordings-{current}", tags={"foley/trigger": f"recordings:{current}"})
