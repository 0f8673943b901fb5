"""The data stage through Dagster: definitions load, assets materialise, versions are stable."""

from __future__ import annotations

import os

from dagster import AssetKey, DagsterInstance, Definitions

from orchestration.definitions import JOBS, build_definitions
from orchestration.runner import run_pipeline


def _overrides(tmp_path):
    return {"paths": {"data_dir": str(tmp_path / "data"), "artifacts_dir": str(tmp_path / "artifacts"),
                      "outputs_dir": str(tmp_path / "outputs")},
            "data": {"sources": [{"kind": "synthetic", "path": str(tmp_path / "data/synthetic"),
                                  "clips_per_class": 3, "extra_types": ["Bell"], "clips_per_extra_type": 2}],
                     "extra_classes": ["Bell"]}}


def _data_versions(instance, key):
    records = instance.fetch_materializations(AssetKey(["smoke", key]), limit=100).records
    return [(r.partition_key, r.asset_materialization.tags["dagster/data_version"]) for r in reversed(records)]


def test_definitions_load_and_partition_by_class(tmp_path):
    defs = build_definitions("smoke", _overrides(tmp_path))
    by_key = {a.key: a for a in defs.assets}
    dataset = by_key[AssetKey(["smoke", "foley_dataset"])]
    assert dataset.partitions_def.get_partition_keys() == [
        "DogBark", "Footstep", "GunShot", "Keyboard", "MovingMotorVehicle", "Rain", "Sneeze_Cough", "Bell"]
    assert dataset.asset_deps[dataset.key] == {AssetKey(["smoke", "raw_foley_data"])}
    assert all(key.path[0] == "smoke" for key in by_key)  # the profile's own history
    assert all(defs.resolve_job_def(name) is not None for name in JOBS)
    Definitions.validate_loadable(defs)  # what `dagster dev` does: every job, schedule and sensor resolves
    assert {j.name for j in defs.get_repository_def().get_all_jobs()} >= set(JOBS)
    assert all(a.code_versions_by_key[a.key] for a in defs.assets)
    # one freshness rule: the daemon's retrain sensor may request any asset (orchestration.freshness)
    assert defs.resolve_sensor_def("retrain_when_changed").asset_selection.resolve(defs.resolve_asset_graph()) == {
        a.key for a in defs.assets}


def test_smoke_pipeline_materialises_and_versions_are_stable(tmp_path, monkeypatch, capfd):
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    lines: list[str] = []
    run_pipeline("smoke", _overrides(tmp_path), echo=lines.append)
    assert len(lines) >= 1 + 8  # raw data + one run per class partition, then the model stages
    dataset = tmp_path / "artifacts/dataset"
    assert sorted(p.name for p in dataset.iterdir() if not p.name.startswith(".") and p.is_dir()) == sorted(
        ["DogBark", "Footstep", "GunShot", "Keyboard", "MovingMotorVehicle", "Rain", "Sneeze_Cough", "Bell"])
    instance = DagsterInstance.get()
    latest = instance.get_latest_materialization_event(AssetKey(["smoke", "raw_foley_data"])).asset_materialization
    assert latest.metadata["versioned_by"].value == "content-hash"
    assert latest.metadata["audio_files"].value == 7 * 3 + 2
    dogs = [r for r in instance.fetch_materializations(AssetKey(["smoke", "foley_dataset"]), limit=100).records if r.partition_key == "DogBark"]
    metadata = dogs[0].asset_materialization.metadata
    assert metadata["clips"].value == 3 and "data:image/png;base64," in metadata["spectrogram"].value

    first_raw, first_dataset = _data_versions(instance, "raw_foley_data"), _data_versions(instance, "foley_dataset")
    again = run_pipeline("smoke", _overrides(tmp_path), echo=lines.append)  # nothing changed
    assert again.materialised == ["raw_foley_data"]  # the cheap DVC/content check; every other stage is fresh
    assert any("clap_model" in s for s in again.skipped) and any("pretrained_ldm" in s for s in again.skipped)
    assert _data_versions(instance, "raw_foley_data")[-1] == first_raw[-1]
    assert _data_versions(instance, "foley_dataset")[-8:] == first_dataset  # no spurious staleness

    # another profile in the same instance and data folder has its own history: this one stays fresh
    other = {**_overrides(tmp_path), "name": "smoke-other",
             "paths": {**_overrides(tmp_path)["paths"], "artifacts_dir": str(tmp_path / "artifacts-other")},
             "data": {**_overrides(tmp_path)["data"], "sources": [{"kind": "synthetic", "path": str(tmp_path / "data/synthetic-other"),
                                                                    "clips_per_class": 2, "extra_types": ["Bell"], "clips_per_extra_type": 2}]}}
    clap_history = _data_versions(instance, "clap_model")
    run_pipeline("smoke", other, echo=lines.append)
    assert instance.fetch_materializations(AssetKey(["smoke_other", "clap_model"]), limit=1).records
    assert _data_versions(instance, "clap_model") == clap_history  # the other run never touched this lineage
    after_other = run_pipeline("smoke", _overrides(tmp_path), echo=lines.append)
    assert after_other.materialised == ["raw_foley_data"], after_other.materialised

    # one more recording in one class changes that class's version and the raw version only
    import numpy as np
    import soundfile as sf
    sf.write(tmp_path / "data/synthetic/Rain/extra.wav", np.random.default_rng(0).normal(0, 0.2, 16000), 16000)
    run_pipeline("smoke", _overrides(tmp_path), echo=lines.append)
    changed = [old != new for old, new in zip(first_dataset, _data_versions(instance, "foley_dataset")[-8:])]
    assert [k for (k, _), c in zip(first_dataset, changed) if c] == ["Rain"]
    assert _data_versions(instance, "raw_foley_data")[-1] != first_raw[-1]

    # --force retrains every model from scratch (no finished model, no checkpoint reused): the
    # trainings report their steps again, and the same code and data give the same weights
    models = _data_versions(instance, "pretrained_ldm")[-1], _data_versions(instance, "clap_model")[-1]
    capfd.readouterr()
    forced = run_pipeline("smoke", _overrides(tmp_path), echo=lines.append, force=True)
    printed = capfd.readouterr().err
    for stage in ("clap", "vae", "vocoder", "unet"):
        assert f"    {stage}: " in printed and " steps in " in printed, (stage, printed[-2000:])
    assert len(forced.materialised) == len(forced.materialised + forced.skipped)  # nothing skipped
    assert (_data_versions(instance, "pretrained_ldm")[-1], _data_versions(instance, "clap_model")[-1]) == models
    assert os.environ.get("FOLEY_RETRAIN") is None  # only for the forced run


def test_data_sensor_fires_on_new_data_of_this_profile_only_and_never_during_a_run(tmp_path, monkeypatch):
    from dagster import RunRequest, SkipReason

    from foley_core.core.config import load_profile
    from foley_core.core.fsutil import exclusive_lock
    from foley_core.core.layout import layout
    from orchestration.automation import data_change_request

    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    profile = load_profile("smoke", _overrides(tmp_path))
    assert "no data snapshot yet" in data_change_request(profile).skip_message
    run_pipeline("smoke", _overrides(tmp_path), echo=lambda line: None)
    assert isinstance(data_change_request(profile), SkipReason)  # just snapshotted: unchanged
    import numpy as np
    import soundfile as sf
    sf.write(tmp_path / "data/synthetic/Rain/new.wav", np.random.default_rng(1).normal(0, 0.2, 16000), 16000)
    with exclusive_lock(layout(profile).run_lock):  # a `foley run` is at work: its own rewrite is not new data
        assert "foley run is using" in data_change_request(profile).skip_message
    request = data_change_request(profile)
    assert isinstance(request, RunRequest) and request.tags["foley/trigger"].startswith("data.dvc:")
    defs = build_definitions("smoke", _overrides(tmp_path))
    sensor = defs.resolve_sensor_def("retrain_on_data_change")
    assert sensor.job_name == "foley_data_snapshot"


def test_weekly_schedule_is_defined_and_off_by_default(tmp_path):
    from dagster import DefaultScheduleStatus, DefaultSensorStatus

    defs = build_definitions("smoke", _overrides(tmp_path))
    weekly = defs.resolve_schedule_def("weekly_retraining")
    assert weekly.cron_schedule == "0 3 * * 1" and weekly.job_name == "foley_data_snapshot"
    assert weekly.default_status == DefaultScheduleStatus.STOPPED
    automation = defs.resolve_sensor_def("retrain_when_changed")
    assert automation.default_status == DefaultSensorStatus.RUNNING
