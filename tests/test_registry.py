"""The registry: one place promotes, gates and points ``latest``; a base model never silently
replaces a served fine-tune; promoted files are checked against their recorded hashes."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from test_locks import FakePipeline, _metrics
from test_locks import _profile as _lock_profile

from foley_core import registry


def _profile(tmp_path):
    profile = _lock_profile(tmp_path)
    return SimpleNamespace(**vars(profile), model_of=lambda label: None)


def _finetune(profile, tmp_path, version: str, base: str):
    """A fine-tuned candidate folder and the transfer record that passed its gate."""
    candidate = tmp_path / "candidate"
    (candidate / "ldm").mkdir(parents=True, exist_ok=True)
    (candidate / "ldm" / "weights").write_text("tuned")
    (candidate / registry.PIPELINE_CONFIG).write_text(json.dumps({"model_version": "candidate"}))
    gate = {"base": {"mean": {"fad": 2.0, "kad": 0.2}}, "finetuned": {"mean": {"fad": 1.0, "kad": 0.1}}, "problems": []}
    record = {"model_version": version, "base_model_version": base, "classes": ["DogBark"], "gate": gate,
              "source": "my-recordings"}
    base_dir = registry.base_pipeline_dir(profile)
    return registry.promote_finetuned(profile, base_dir, json.loads((base_dir / registry.PIPELINE_CONFIG).read_text()),
                                      candidate, record)


def test_a_fine_tune_then_a_retrained_base_keeps_serving_the_fine_tune(tmp_path):
    profile = _profile(tmp_path)
    registry.promote_base(FakePipeline(), profile, _metrics("v1"), export_problems=0)
    tuned = _finetune(profile, tmp_path, "ft-1", "v1")
    assert registry.latest_pipeline_dir(profile) == tuned.resolve()
    served = registry.served(profile)
    assert served["kind"] == "finetuned" and served["base_model_version"] == "v1"
    assert served["accepted"]["finetuned"]["mean"] == {"fad": 1.0, "kad": 0.1}  # what the fine-tune was accepted on
    assert json.loads((tuned / registry.METRICS).read_text())["problems"] == []

    # New data, a new base: the gate compares it with the accepted metrics the fine-tune was built on (v1's) ...
    with pytest.raises(registry.PromotionRefused, match="v2-worse"):
        registry.promote_base(FakePipeline(), profile, _metrics("v2-worse", mean={"fad": 9.0, "kad": 0.1}), export_problems=0)
    assert registry.latest_pipeline_dir(profile) == tuned.resolve()
    # ... and one that passes becomes the accepted base, while the user's fine-tune keeps serving
    registry.promote_base(FakePipeline(), profile, _metrics("v2"), export_problems=0)
    assert registry.accepted_metrics(profile)["model_version"] == "v2"
    assert registry.base_pipeline_dir(profile).name == "v2"
    assert registry.latest_pipeline_dir(profile) == tuned.resolve()
    assert "ft-1" in registry.describe_served(profile) and "from base v1" in registry.describe_served(profile)

    # the next fine-tune starts from the new base, and serves
    again = _finetune(profile, tmp_path, "ft-2", "v2")
    assert registry.latest_pipeline_dir(profile) == again.resolve()
    assert registry.served(profile)["base_model_version"] == "v2"


def test_without_a_fine_tune_a_passing_base_is_served(tmp_path):
    profile = _profile(tmp_path)
    registry.promote_base(FakePipeline(), profile, _metrics("v1"), export_problems=0)
    registry.promote_base(FakePipeline(), profile, _metrics("v2"), export_problems=0)
    assert registry.latest_pipeline_dir(profile).name == "v2" == registry.served(profile)["model_version"]


@pytest.mark.parametrize("damage", ["truncate", "delete"])
def test_a_damaged_or_missing_promoted_file_is_a_one_line_error_naming_it(tmp_path, damage):
    profile = _profile(tmp_path)
    folder = registry.promote_base(FakePipeline(), profile, _metrics("v1"), export_problems=0)
    recorded = json.loads((folder / registry.FILES).read_text())
    assert {"ldm/weights", registry.PIPELINE_CONFIG, registry.METRICS} <= set(recorded)
    weights = folder / "ldm" / "weights"
    if damage == "truncate":
        weights.write_bytes(weights.read_bytes()[:5])
    else:
        weights.unlink()
    with pytest.raises(registry.DamagedModel) as error:
        registry.latest_pipeline_dir(profile)
    message = str(error.value)
    assert str(weights) in message and "\n" not in message
    assert ("damaged" if damage == "truncate" else "missing") in message


def test_a_foley_run_after_a_fine_tune_keeps_serving_it_and_says_so(smoke_run, tmp_path, monkeypatch):
    """The whole path: the user's fine-tune is served, then `foley run` makes a new base model that
    passes the gate: it becomes the accepted base, and the fine-tune keeps serving."""
    import shutil

    from conftest import smoke_overrides

    from foley_core.core.config import _deep_merge, load_profile
    from orchestration.runner import run_pipeline

    shutil.copytree(smoke_run["root"] / "artifacts", tmp_path / "artifacts", symlinks=True)
    overrides = smoke_overrides(smoke_run["root"])  # the shared run's data, read only
    overrides["paths"] = {**overrides["paths"], "artifacts_dir": str(tmp_path / "artifacts"),
                          "outputs_dir": str(tmp_path / "outputs")}
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    profile = load_profile("smoke", overrides)
    root = registry.pipelines_dir(profile)
    base = registry.latest_pipeline_dir(profile)

    # the user's fine-tune (here: the base's weights under a fine-tune's record) is promoted and served
    record = {"model_version": "ft-mine", "base_model_version": base.name, "classes": ["DogBark"], "source": "mine",
              "gate": {"base": {"mean": {"fad": 2.0, "kad": 0.2}}, "finetuned": {"mean": {"fad": 1.0, "kad": 0.1}},
                       "problems": []}}
    tuned = registry.promote_finetuned(profile, base, json.loads((base / registry.PIPELINE_CONFIG).read_text()),
                                       base, record)
    accepted = json.loads((root / registry.ACCEPTED).read_text())
    accepted["mean"] = {"fad": 1e9, "kad": 1e9}  # whatever the retrained model scores, it passes the gate
    (root / registry.ACCEPTED).write_text(json.dumps(accepted))

    lines: list[str] = []
    run_pipeline("smoke", _deep_merge(overrides, {"finetune": {"steps": 6}}), echo=lines.append)  # a new base model
    new_base = json.loads((profile.artifact_dir("evaluation", "metrics.json")).read_text())["model_version"]
    assert new_base != base.name
    assert registry.base_pipeline_dir(profile).name == new_base == registry.accepted_metrics(profile)["model_version"]
    assert registry.latest_pipeline_dir(profile) == tuned.resolve()  # not silently replaced
    assert any("accepted as the new base" in line and "ft-mine" in line for line in lines), lines
