"""The quality gate decides promotion, however promotion is launched: in the run that failed
the checks, in a later `foley run`, or materialised alone as a click in the UI does."""

from __future__ import annotations

import json
import math

import pytest
from conftest import smoke_overrides
from dagster import AssetKey, materialize
from test_locks import FakePipeline, _metrics, _profile

from foley_core.core.config import _deep_merge, load_profile
from foley_core.registry import gate_problems, regression


@pytest.mark.parametrize("bad", [math.nan, math.inf, None])
def test_a_nan_or_missing_metric_never_passes_the_regression_rule(bad):
    assert regression({"fad": bad, "kad": 0.1}, None, 0.25)  # even with nothing accepted yet
    assert regression({"fad": bad, "kad": 0.1}, {"fad": 1.0, "kad": 0.1}, 0.25)
    assert not regression({"fad": 1.0, "kad": 0.1}, {"fad": 1.0, "kad": 0.1}, 0.25)


def test_gate_problems_name_export_problems_and_regressions():
    accepted = {"mean": {"fad": 1.0, "kad": 0.1}}
    assert gate_problems({"mean": {"fad": 1.0, "kad": 0.1}}, accepted, 0.25, export_problems=0) == []
    problems = gate_problems({"mean": {"fad": 2.0, "kad": 0.1}}, accepted, 0.25, export_problems=3)
    assert len(problems) == 2 and "3 format problem" in problems[0] and "fad" in problems[1]


def test_promote_refuses_a_nan_or_worse_model_and_nothing_moves(tmp_path):
    from foley_core.registry import PromotionRefused, latest_pipeline_dir
    from foley_core.registry import promote_base as promote

    profile = _profile(tmp_path)
    good = promote(FakePipeline(), profile, _metrics("v1"), export_problems=0)
    root = profile.artifact_dir("pipelines")
    before = (root / "accepted_metrics.json").read_text()
    for metrics, export_problems in ((_metrics("v2", mean={"fad": math.nan, "kad": 0.1}), 0),
                                     (_metrics("v3", mean={"fad": 9.0, "kad": 0.1}), 0),
                                     (_metrics("v4"), 2)):
        with pytest.raises(PromotionRefused, match=metrics["model_version"]):
            promote(FakePipeline(), profile, metrics, export_problems=export_problems)
        assert latest_pipeline_dir(profile) == good.resolve()
        assert (root / "accepted_metrics.json").read_text() == before
        assert not (root / metrics["model_version"]).exists()


def test_a_rejected_model_is_never_promoted_by_a_later_run_or_by_promotion_alone(smoke_run, tmp_path, monkeypatch):
    import shutil

    from orchestration.definitions import build_definitions
    from orchestration.runner import run_pipeline

    # A copy of the shared smoke run's artifacts (its data read only): the first run finds it all fresh
    shutil.copytree(smoke_run["root"] / "artifacts", tmp_path / "artifacts", symlinks=True)
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    overrides = smoke_overrides(smoke_run["root"])
    overrides["paths"] = {**overrides["paths"], "artifacts_dir": str(tmp_path / "artifacts"),
                          "outputs_dir": str(tmp_path / "outputs")}
    run_pipeline("smoke", overrides, echo=lambda line: None)
    profile = load_profile("smoke", overrides)
    root = profile.artifact_dir("pipelines")
    accepted_version = (root / "latest").resolve().name

    # An accepted model that nothing can beat, and a retrained adapter (a new model version).
    accepted = json.loads((root / "accepted_metrics.json").read_text())
    accepted["mean"] = {"fad": 1e-9, "kad": 1e-9}
    (root / "accepted_metrics.json").write_text(json.dumps(accepted))
    retrain = _deep_merge(overrides, {"finetune": {"steps": 6}})

    failing = run_pipeline("smoke", retrain, echo=lambda line: None)
    assert any("no_quality_regression" in c for c in failing.failed_checks), failing
    evaluated = json.loads(profile.artifact_dir("evaluation", "metrics.json").read_text())["model_version"]
    assert evaluated != accepted_version
    assert (root / "latest").resolve().name == accepted_version

    # The next run: promotion is stale (its parent has a new version), evaluation may or may not
    # run again (Dagster's partition staleness is over-eager here); either way nothing moves.
    lines: list[str] = []
    later = run_pipeline("smoke", retrain, echo=lines.append)
    assert any("promoted_pipeline" in label for label in later.materialised), later.materialised
    assert (root / "latest").resolve().name == accepted_version
    assert any("NOT promoted" in line for line in lines), lines

    # Promotion materialised on its own, as a click in the UI does.
    defs = build_definitions("smoke", retrain)
    result = materialize([*defs.assets], resources=dict(defs.resources), selection=[AssetKey(["smoke", "promoted_pipeline"])],
                         instance=None, raise_on_error=False)
    assert result.success
    assert (root / "latest").resolve().name == accepted_version
    assert json.loads((root / "accepted_metrics.json").read_text())["mean"] == {"fad": 1e-9, "kad": 1e-9}
    assert not (root / evaluated).exists()
