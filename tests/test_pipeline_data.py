"""The data stage through Dagster: definitions load, assets materialise, versions are stable."""

from __future__ import annotations

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
    records = instance.fetch_materializations(AssetKey(key), limit=100).records
    return [(r.partition_key, r.asset_materialization.tags["dagster/data_version"]) for r in reversed(records)]


def test_definitions_load_and_partition_by_class(tmp_path):
    defs = build_definitions("smoke", _overrides(tmp_path))
    graph = defs.resolve_asset_graph()
    dataset = graph.get(AssetKey("foley_dataset"))
    assert dataset.partitions_def.get_partition_keys() == [
        "DogBark", "Footstep", "GunShot", "Keyboard", "MovingMotorVehicle", "Rain", "Sneeze_Cough", "Bell"]
    assert AssetKey("raw_foley_data") in graph.get(AssetKey("foley_dataset")).parent_keys
    assert all(defs.resolve_job_def(name) is not None for name in JOBS)
    Definitions.validate_loadable(defs)  # what `dagster dev` does: every job, schedule and sensor resolves
    assert {j.name for j in defs.get_repository_def().get_all_jobs()} >= set(JOBS)
    assert all(graph.get(k).code_version for k in graph.materializable_asset_keys)


def test_smoke_pipeline_materialises_and_versions_are_stable(tmp_path, monkeypatch):
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    lines: list[str] = []
    run_pipeline("smoke", _overrides(tmp_path), echo=lines.append)
    assert len(lines) >= 1 + 8  # raw data + one run per class partition, then the model stages
    dataset = tmp_path / "artifacts/dataset"
    assert sorted(p.name for p in dataset.iterdir() if not p.name.startswith(".") and p.is_dir()) == sorted(
        ["DogBark", "Footstep", "GunShot", "Keyboard", "MovingMotorVehicle", "Rain", "Sneeze_Cough", "Bell"])
    instance = DagsterInstance.get()
    latest = instance.get_latest_materialization_event(AssetKey("raw_foley_data")).asset_materialization
    assert latest.metadata["versioned_by"].value == "content-hash"
    assert latest.metadata["audio_files"].value == 7 * 3 + 2
    dogs = [r for r in instance.fetch_materializations(AssetKey("foley_dataset"), limit=100).records if r.partition_key == "DogBark"]
    metadata = dogs[0].asset_materialization.metadata
    assert metadata["clips"].value == 3 and "data:image/png;base64," in metadata["spectrogram"].value

    first_raw, first_dataset = _data_versions(instance, "raw_foley_data"), _data_versions(instance, "foley_dataset")
    again = run_pipeline("smoke", _overrides(tmp_path), echo=lines.append)  # nothing changed
    assert again.materialised == ["raw_foley_data"]  # the cheap DVC/content check; every other stage is fresh
    assert any("clap_model" in s for s in again.skipped) and any("pretrained_ldm" in s for s in again.skipped)
    assert _data_versions(instance, "raw_foley_data")[-1] == first_raw[-1]
    assert _data_versions(instance, "foley_dataset")[-8:] == first_dataset  # no spurious staleness

    # one more recording in one class changes that class's version and the raw version only
    import numpy as np, soundfile as sf
    sf.write(tmp_path / "data/synthetic/Rain/extra.wav", np.random.default_rng(0).normal(0, 0.2, 16000), 16000)
    run_pipeline("smoke", _overrides(tmp_path), echo=lines.append)
    changed = [old != new for old, new in zip(first_dataset, _data_versions(instance, "foley_dataset")[-8:])]
    assert [k for (k, _), c in zip(first_dataset, changed) if c] == ["Rain"]
    assert _data_versions(instance, "raw_foley_data")[-1] != first_raw[-1]


def test_retraining_sensor_fires_only_when_data_dvc_changes(tmp_path, monkeypatch):
    from dagster import SkipReason, build_sensor_context

    import orchestration.automation as automation

    dvc_file = tmp_path / "data.dvc"
    monkeypatch.setattr(automation, "DATA_DVC", dvc_file)
    defs = build_definitions("smoke", _overrides(tmp_path))
    sensor = defs.resolve_sensor_def("retrain_on_data_change")
    repo = defs.get_repository_def()

    def evaluate(cursor):
        context = build_sensor_context(cursor=cursor, repository_def=repo)
        return sensor.evaluate_tick(context), context

    assert isinstance(evaluate(None)[0].skip_message, str)  # no data.dvc yet
    dvc_file.write_text("outs:\n- md5: aaa.dir\n  path: data\n")
    result, context = evaluate(None)
    assert not result.run_requests and context.cursor == "aaa.dir"  # first look only remembers
    assert not evaluate("aaa.dir")[0].run_requests
    dvc_file.write_text("outs:\n- md5: bbb.dir\n  path: data\n")
    result, context = evaluate("aaa.dir")
    assert len(result.run_requests) == 1 and context.cursor == "bbb.dir"
    request = result.run_requests[0]
    assert request.requires_backfill_daemon()
    assert AssetKey("foley_dataset") in request.asset_graph_subset.asset_keys


def test_weekly_schedule_is_defined_and_off_by_default(tmp_path):
    from dagster import DefaultScheduleStatus

    defs = build_definitions("smoke", _overrides(tmp_path))
    weekly = defs.resolve_schedule_def("weekly_retraining")
    assert weekly.cron_schedule == "0 3 * * 1"
    assert weekly.default_status == DefaultScheduleStatus.STOPPED


def test_weekly_schedule_requests_a_whole_graph_backfill(tmp_path):
    from dagster import build_schedule_context

    defs = build_definitions("smoke", _overrides(tmp_path))
    weekly = defs.resolve_schedule_def("weekly_retraining")
    result = weekly.evaluate_tick(build_schedule_context(repository_def=defs.get_repository_def()))
    assert len(result.run_requests) == 1
    keys = result.run_requests[0].asset_graph_subset.asset_keys
    assert keys == set(defs.resolve_asset_graph().materializable_asset_keys) and AssetKey("foley_dataset") in keys
