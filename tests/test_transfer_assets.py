"""The transfer step as assets: own_recordings (versioned, DVC-mirrored) -> finetuned_model (gated)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import smoke_overrides
from dagster import AssetKey, DagsterInstance, Definitions, RunRequest, SkipReason, materialize

from foley_core.core.config import load_profile
from foley_core.core.fsutil import exclusive_lock
from foley_core.core.hashing import folder_hash
from foley_core.core.layout import layout
from foley_core.core.records import read_record
from foley_core.data.own import recorded_recordings_version, snapshot_recordings
from foley_core.data.versioning import DvcError, dvc_executable, run_dvc
from foley_core.registry import PIPELINE_CONFIG, latest_pipeline_dir
from foley_core.transfer import ingest_recordings
from orchestration.automation import SNAPSHOT_JOB, data_change_request
from orchestration.definitions import build_definitions
from orchestration.freshness import groups as _groups
from orchestration.runner import run_pipeline

TINY = {"steps": 3, "clap_steps": 2, "vocoder_steps": 2, "eval_clips_per_class": 2, "batch_size": 4, "clap_batch_size": 4}
BASE = ["raw_foley_data", "foley_dataset", "clap_model", "clap_embeddings", "pretrained_ldm", "finetuned_adapter",
        "class_prompts", "generated_candidates", "selected_outputs", "evaluation_metrics", "promoted_pipeline", "foley_report"]


def write_recordings(root, rate=16000):
    """Two classes x two recordings x two takes (``a-1``, ``a-2`` are one recording), 1 s each, all different."""
    rng = np.random.default_rng(0)
    t = np.arange(rate) / rate
    for k, label in enumerate(["DogBark", "Rain"]):
        (root / label).mkdir(parents=True)
        for r, name in enumerate("ab"):
            for take in (1, 2):
                freq = 200 + 150 * k + 60 * r + 17 * take
                audio = 0.3 * np.sin(2 * np.pi * freq * t) * np.exp(-3 * t) + rng.normal(0, 0.02 + 0.05 * k, rate)
                sf.write(root / label / f"{name}-{take}.wav", audio.astype(np.float32), rate)
    (root / "README.txt").write_text("not audio: not mirrored")
    (root / "MANIFEST.csv").write_text("file,recording\n")
    return root


def _keys(defs) -> set[str]:
    return {a.key.path[-1] for a in defs.assets}


def test_definitions_add_the_transfer_assets_only_when_a_source_is_named(tmp_path):
    plain = build_definitions("smoke", smoke_overrides(tmp_path))
    assert sorted(_keys(plain)) == sorted(BASE)
    assert {c.name for d in plain.asset_checks for c in d.check_specs} == {"dcase_export_valid", "no_quality_regression"}

    overrides = {**smoke_overrides(tmp_path), "transfer": {"source": str(tmp_path / "recordings"), **TINY}}
    defs = build_definitions("smoke", overrides)
    assert _keys(defs) == set(BASE) | {"own_recordings", "finetuned_model"}
    by_key = {a.key: a for a in defs.assets}
    model = by_key[AssetKey(["smoke", "finetuned_model"])]
    assert model.asset_deps[model.key] == {AssetKey(["smoke", "promoted_pipeline"]), AssetKey(["smoke", "own_recordings"])}
    assert not by_key[AssetKey(["smoke", "own_recordings"])].asset_deps[AssetKey(["smoke", "own_recordings"])]
    assert all(a.code_versions_by_key[a.key] for a in defs.assets)
    # the daemon's retrain sensor (the one freshness rule) covers the transfer assets too
    assert defs.resolve_sensor_def("retrain_when_changed").asset_selection.resolve(defs.resolve_asset_graph()) == {
        a.key for a in defs.assets}
    specs = {c.name: c for d in defs.asset_checks for c in d.check_specs}
    assert specs["transfer_gate"].asset_key == model.key and not specs["transfer_gate"].blocking
    # the code versions of the main graph do not depend on the transfer settings
    assert {a.key: a.code_versions_by_key[a.key] for a in plain.assets} == {
        a.key: a.code_versions_by_key[a.key] for a in defs.assets if a.key.path[-1] in BASE}
    Definitions.validate_loadable(defs)
    jobs = {j.name: {k.path[-1] for k in j.selection.resolve(list(defs.assets))} for j in defs.jobs}
    assert jobs[SNAPSHOT_JOB] == {"raw_foley_data", "own_recordings"}  # the sensor's and the schedule's job
    assert "finetuned_model" in jobs["foley_models"]
    # `foley run` snapshots the recordings with the raw data, and fine-tunes in a run of its own, after the
    # promotion: so it is judged fresh or stale on the model just promoted
    groups = [[a.key.path[-1] for a in group] for group, _ in _groups(list(defs.assets))]
    assert groups[0] == ["raw_foley_data", "own_recordings"] and groups[-1] == ["finetuned_model"]
    assert groups[-2][-2:] == ["promoted_pipeline", "foley_report"]


def test_the_paper_graph_fine_tunes_the_unet_on_its_dev_set_and_gates_it():
    """Issue 23: the paper profile learns the dev set as the paper did. Its graph fine-tunes the diffusion
    model (the whole UNet, with the adapter) on the folder its data source ingests as the DCASE dev set,
    through the transfer step `foley finetune` runs, gated against held-out dev clips; adapter-only
    (the graph as it was) is one setting away."""
    profile = load_profile("paper")
    dev_set = profile.data.sources[0]
    assert (dev_set.kind, Path(profile.transfer.source)) == ("folder", dev_set.path)  # <Class>/<file>, both
    assert profile.transfer.train == "unet" and profile.transfer.unet_lora_rank is None
    defs = build_definitions("paper")
    assert _keys(defs) == set(BASE) | {"own_recordings", "finetuned_model"}
    model = next(a for a in defs.assets if a.key == AssetKey(["paper", "finetuned_model"]))
    assert model.asset_deps[model.key] == {AssetKey(["paper", name]) for name in ("promoted_pipeline", "own_recordings")}
    specs = {c.name: c for d in defs.asset_checks for c in d.check_specs}
    assert specs["transfer_gate"].asset_key == model.key

    adapter_only = build_definitions("paper", {"transfer": {"source": None}})
    assert sorted(_keys(adapter_only)) == sorted(BASE)
    assert {c.name for d in adapter_only.asset_checks for c in d.check_specs} == {"dcase_export_valid",
                                                                                   "no_quality_regression"}


def test_classes_of_a_named_model_keep_it_and_are_not_fine_tuned_on(smoke_profile, tmp_path, caplog):
    """With ``ldm.models`` (the paper's ``model: big`` classes), the fine-tune trains the main model only, and
    a promoted fine-tune serves its classes with it: a class routed to a named model is left to that model."""
    source = write_recordings(tmp_path / "mine")
    profile = smoke_profile(ldm={"models": {"big": str(tmp_path / "big")}}, transfer={"source": str(source)})
    assert profile.model_of("Rain") == "big" and profile.model_of("DogBark") is None
    data = ingest_recordings(profile, source)
    assert data.classes == ["DogBark"] and set(data.manifest["class"]) == {"DogBark"}
    assert "Rain: generated by another model" in caplog.text


def test_snapshot_without_dvc_is_the_folder_and_its_content_hash(smoke_profile, tmp_path):
    source = write_recordings(tmp_path / "mine")
    profile = smoke_profile(transfer={"source": str(source)})
    snapshot = snapshot_recordings(profile, source)
    assert (snapshot.path, snapshot.version, snapshot.versioned_by) == (source, folder_hash(source)[:16], "content-hash")
    assert recorded_recordings_version(profile) == snapshot.version
    sf.write(source / "Rain/a-1.wav", np.zeros(16000, dtype=np.float32) + 0.1, 16000)
    assert snapshot_recordings(profile, source).version != snapshot.version != recorded_recordings_version(profile)


def git(*args, cwd):
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@localhost", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@localhost"}
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, env=env)


def test_dvc_mirrors_the_recordings_into_data_own_and_versions_only_them(tmp_path, monkeypatch):
    try:
        dvc_executable()
    except DvcError as exc:
        pytest.fail(f"DVC must be installed for the data tests (make install): {exc}")
    repo = tmp_path / "project"
    (repo / "data/other").mkdir(parents=True)
    (repo / "data/other/x.wav").write_bytes(b"RIFF-another-corpus")
    git("init", "-q", cwd=repo)
    run_dvc("init", "-q", cwd=repo)
    run_dvc("remote", "add", "-d", "local", str(tmp_path / "remote"), cwd=repo)
    monkeypatch.setattr("foley_core.data.raw.PROJECT_ROOT", repo)  # DVC tracks <project>/data
    source = write_recordings(tmp_path / "mine")
    profile = load_profile("smoke", {"paths": {"data_dir": str(repo / "data"), "artifacts_dir": str(tmp_path / "art")},
                                     "dvc": {"enabled": True, "auto_track": True, "remote": "local"},
                                     "transfer": {"source": str(source)}})

    first = snapshot_recordings(profile, source)
    mirror = repo / "data/own/mine"
    assert first.path == mirror and first.versioned_by == "dvc" and first.version.startswith("dvc-"), first
    assert sorted(p.relative_to(mirror).as_posix() for p in mirror.rglob("*") if p.is_file()) == [
        "DogBark/a-1.wav", "DogBark/a-2.wav", "DogBark/b-1.wav", "DogBark/b-2.wav", "MANIFEST.csv",
        "Rain/a-1.wav", "Rain/a-2.wav", "Rain/b-1.wav", "Rain/b-2.wav"]  # audio and the root table only
    assert recorded_recordings_version(profile) == first.version  # what the data sensor compares with

    inode = mirror.stat().st_ino
    (repo / "data/other/y.wav").write_bytes(b"RIFF-more-of-another-corpus")  # data/ changes, the recordings do not
    again = snapshot_recordings(profile, source)
    assert again.version == first.version and mirror.stat().st_ino == inode  # same content: not copied again

    sf.write(source / "Rain/b-2.wav", np.zeros(16000, dtype=np.float32) + 0.1, 16000)
    changed = snapshot_recordings(profile, source)
    assert changed.versioned_by == "dvc" and changed.version != first.version
    assert (mirror / "Rain/b-2.wav").read_bytes() == (source / "Rain/b-2.wav").read_bytes()
    assert recorded_recordings_version(profile) == changed.version


@pytest.fixture
def transfer_run(smoke_run, tmp_path, monkeypatch):
    """A copy of the smoke run's artifacts (the shared run is left alone) and a profile fine-tuning on own recordings."""
    root = smoke_run["root"]
    shutil.copytree(root / "artifacts", tmp_path / "artifacts", symlinks=True)
    source = write_recordings(tmp_path / "mine")
    overrides = smoke_overrides(root)  # the shared run's data, read only
    overrides["paths"] = {**overrides["paths"], "artifacts_dir": str(tmp_path / "artifacts"),
                          "outputs_dir": str(tmp_path / "outputs")}
    overrides["transfer"] = {"source": str(source), **TINY}
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    return {"overrides": overrides, "source": source, "profile": load_profile("smoke", overrides)}


def _gate_says(monkeypatch, problems):
    import foley_core.transfer.run as transfer  # where finetune_on_recordings looks gate up

    real = transfer.gate
    monkeypatch.setattr(transfer, "gate", lambda *a, **k: {**real(*a, **k), "problems": problems})


def _latest_metadata(instance, name):
    event = instance.get_latest_materialization_event(AssetKey(["smoke", name]))
    return {k: v.value for k, v in event.asset_materialization.metadata.items()}


def test_foley_run_fine_tunes_on_the_source_and_a_refused_gate_is_not_a_failure(transfer_run, monkeypatch):
    profile, overrides = transfer_run["profile"], transfer_run["overrides"]
    where = layout(profile)
    base = json.loads((latest_pipeline_dir(profile) / PIPELINE_CONFIG).read_text())["model_version"]

    # `foley run`: everything of the smoke run is fresh; the recordings are snapshotted, the model fine-tuned
    _gate_says(monkeypatch, [])  # the real gate on 3 steps could go either way: pass it
    lines: list[str] = []
    outcome = run_pipeline("smoke", overrides, echo=lines.append)
    assert outcome.materialised == ["raw_foley_data, own_recordings", "finetuned_model"], outcome.materialised
    assert not outcome.failed_checks
    assert any("promoted ft-" in line for line in lines), lines
    instance = DagsterInstance.get()
    made = {name for name in BASE + ["own_recordings", "finetuned_model"]
            if instance.get_latest_materialization_event(AssetKey(["smoke", name])) is not None}
    assert made == {"raw_foley_data", "own_recordings", "finetuned_model"}  # the rest was fresh
    own = read_record(where.record("own_recordings"))
    promoted = read_record(where.record("promoted_pipeline"))
    assert own.version == folder_hash(transfer_run["source"])[:16] and promoted.version == base
    meta = _latest_metadata(instance, "own_recordings")
    assert meta["files_per_class"] == {"DogBark": 4, "Rain": 4} and meta["recordings_per_class"] == {"DogBark": 2, "Rain": 2}
    assert meta["versioned_by"] == "content-hash" and meta["quarantined"] == 0

    record = read_record(where.record("finetuned_model"))
    meta = _latest_metadata(instance, "finetuned_model")
    assert meta["promoted"] is True and meta["base_model_version"] == base
    assert meta["source_data_version"] == own.version
    assert record.inputs == {"own_recordings": own.version, "promoted_pipeline": base}  # lineage in the record
    latest = json.loads((latest_pipeline_dir(profile) / PIPELINE_CONFIG).read_text())
    assert record.version == meta["model_version"] == latest["model_version"] != base
    assert latest["transfer"]["base_model_version"] == base
    assert "fad_finetuned" in meta["per_class"] and set(meta["classes"]) == {"DogBark", "Rain"}
    assert set(meta["clap_zero_shot"]) == {"recordings_before", "recordings_after", "procedural_before", "procedural_after"}

    # the same asset again with the gate refusing: the run succeeds, nothing is promoted, latest stays
    _gate_says(monkeypatch, ["fine-tuned mean FAD 9.0 > base 1.0"])
    monkeypatch.setenv("FOLEY_RETRAIN", "1")  # else the finished fine-tune of the same base and data is reused
    target = os.readlink(where.pipelines / "latest")
    defs = build_definitions("smoke", overrides)
    result = materialize([*defs.assets, *defs.asset_checks], selection=[AssetKey(["smoke", "finetuned_model"])],
                         instance=instance, resources=dict(defs.resources), raise_on_error=False)
    assert result.success
    assert os.readlink(where.pipelines / "latest") == target
    meta = _latest_metadata(instance, "finetuned_model")
    assert meta["promoted"] is False and "fine-tuned mean FAD 9.0" in meta["reasons"]
    assert meta["model_version"] == read_record(where.record("finetuned_model")).version == latest["model_version"]
    assert meta["base_model_version"] == base
    [check] = result.get_asset_check_evaluations()
    assert check.check_name == "transfer_gate" and not check.passed

    # the data sensor fires when the recordings change, never while a run holds the folder
    assert isinstance(data_change_request(profile), SkipReason)
    sf.write(transfer_run["source"] / "DogBark/c-1.wav", np.full(16000, 0.05, dtype=np.float32), 16000)
    with exclusive_lock(where.run_lock):
        assert "foley run is using" in data_change_request(profile).skip_message
    request = data_change_request(profile)
    assert isinstance(request, RunRequest) and request.tags["foley/trigger"].startswith("recordings:")

    # `foley run` on the changed recordings: fine-tuned again; a refusal is a line, not a failed run
    monkeypatch.delenv("FOLEY_RETRAIN")
    lines.clear()
    again = run_pipeline("smoke", overrides, echo=lines.append)
    assert not again.failed_checks and any("NOT promoted" in line for line in lines), lines
    assert os.readlink(where.pipelines / "latest") == target
    now = read_record(where.record("own_recordings")).version
    assert now != own.version and read_record(where.record("finetuned_model")).inputs["own_recordings"] == now


def test_foley_run_reruns_what_follows_a_stale_stage_within_a_group():
    """Within one group, freshness is read before any of it runs: a stage downstream of a stale
    one looked fresh against the old output and was skipped until the next run."""
    from orchestration.definitions import build_definitions
    from orchestration.freshness import groups as _groups
    from orchestration.freshness import stale_in_group

    assets = list(build_definitions("smoke").assets)
    group = next(g for g, _ in _groups(assets) if "evaluation_metrics" in [a.key.path[-1] for a in g])
    names = [a.key.path[-1] for a in group]
    assert names[:2] == ["evaluation_metrics", "promoted_pipeline"]
    todo = stale_in_group(group, lambda a: a.key.path[-1] != "evaluation_metrics")
    assert [a.key.path[-1] for a in todo][:2] == ["evaluation_metrics", "promoted_pipeline"]
    assert stale_in_group(group, lambda a: True) == []
    assert len(stale_in_group(group, lambda a: True, force=True)) == len(group)
