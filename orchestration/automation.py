"""Retraining automation with Declarative Automation (public ``AutomationCondition`` API).

- Every asset carries ``RETRAIN``: it is materialised when its code version changed, when one
  of its upstream assets got a *new data version* (not merely re-materialised), or when it
  went missing. A stage whose inputs came out unchanged stops the cascade, so a data change
  in one class retrains what depends on it and nothing else.
- ``retrain_on_data_change`` (sensor, on by default) re-snapshots the data when ``data.dvc``
  records a different version of *this profile's* sources than the last snapshot. It stays
  quiet while a `foley run` holds the artifacts folder: that run's own rewrite of
  ``data.dvc`` is not new data, and the run itself recomputes what depends on it. When the
  profile names ``transfer.source``, it also fires when the recordings' recorded version
  (their part of ``data.dvc``, or their content hash outside DVC) differs from the last
  ``own_recordings`` snapshot; the job snapshots both.
- ``weekly_retraining`` (schedule, off by default) re-snapshots the data every Monday 03:00,
  picking up files added to ``data/`` without ``dvc add``; the cascade does the rest.
- Updates made by `foley run` itself (runs tagged ``foley/pid``) do not trigger the cascade:
  the run materialises everything downstream on its own.
"""

from __future__ import annotations

from dagster import (
    AssetSelection,
    AutomationCondition,
    AutomationConditionSensorDefinition,
    DefaultScheduleStatus,
    DefaultSensorStatus,
    RunRequest,
    ScheduleDefinition,
    SensorDefinition,
    SensorEvaluationContext,
    SkipReason,
    sensor,
)

from foley_core.config import Profile
from foley_core.fsutil import who_holds
from foley_core.layout import layout
from foley_core.records import read_record

FOLEY_RUN_TAG = "foley/pid"  # set on every run `foley run` executes in-process

_upstream_changed = AutomationCondition.any_deps_match(
    AutomationCondition.data_version_changed() & ~AutomationCondition.executed_with_tags(tag_keys={FOLEY_RUN_TAG})
).with_label("an upstream asset has a new data version (not made by `foley run`)")

RETRAIN = (
    (AutomationCondition.newly_missing() | AutomationCondition.code_version_changed() | _upstream_changed)
    .since_last_handled()
    & ~AutomationCondition.any_deps_missing()
    & ~AutomationCondition.any_deps_in_progress()
    & ~AutomationCondition.in_progress()
).with_label("retrain when code or upstream data changed")

SNAPSHOT_JOB = "foley_data_snapshot"


def automation_sensor() -> AutomationConditionSensorDefinition:
    return AutomationConditionSensorDefinition(
        "retrain_when_changed", target=AssetSelection.all(), default_status=DefaultSensorStatus.RUNNING,
        minimum_interval_seconds=60,
        description="Evaluates every asset's condition: retrain when code or upstream data changed.")


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
    from foley_core.data.raw import recorded_data_version

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
    from foley_core.data.own import recorded_recordings_version

    if not profile.transfer.source:
        return None
    current = recorded_recordings_version(profile)
    snapshot = read_record(layout(profile).record("own_recordings"))
    if current is None or (snapshot is not None and snapshot.version == current):
        return None
    return RunRequest(run_key=f"recordings-{current}", tags={"foley/trigger": f"recordings:{current}"})
