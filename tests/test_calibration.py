"""Selection measured on each class's training clips under the CLAP that selects (issue 25):
whether selection is on, the floor, the copy ceiling; generation uses what was measured, and only
under the CLAP it was measured with."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from foley_core import stages
from foley_core.core.config import load_profile
from foley_core.core.layout import layout
from foley_core.generation import calibration
from foley_core.generation.calibration import auc, calibrate_class, calibrated_selection, copy_ceiling
from foley_core.generation.pipeline import assemble_pipeline
from foley_core.generation.submission import generate_selected


def _unit(rows: np.ndarray) -> np.ndarray:
    return rows / np.linalg.norm(rows, axis=-1, keepdims=True)


def test_auc_counts_own_above_other_with_ties_as_half():
    assert auc(np.array([0.9, 0.8]), np.array([0.1, 0.2])) == 1.0
    assert auc(np.array([0.1]), np.array([0.9])) == 0.0
    assert auc(np.array([0.5, 0.5]), np.array([0.5])) == 0.5
    assert np.isnan(auc(np.array([]), np.array([0.3])))


def test_a_class_the_clap_tells_apart_keeps_selection_with_its_own_floor():
    rng = np.random.default_rng(0)
    text = np.eye(8)[0]
    own = _unit(np.eye(8)[0] + 0.3 * rng.standard_normal((20, 8)))  # near the prompt
    other = _unit(np.eye(8)[1] + 0.3 * rng.standard_normal((40, 8)))  # elsewhere
    result = calibrate_class(text, own, other, multi_target=False, candidates=3)
    own_scores = own @ text
    assert result["calibrated"] and result["selection"] and result["auc"] > 0.95
    assert result["candidates"] == 3 and result["ceiling"] is None
    assert result["floor"] == pytest.approx(np.quantile(own_scores, calibration.FLOOR_QUANTILE), abs=1e-4)
    assert (own_scores >= result["floor"]).mean() >= 0.85  # nine in ten real clips would pass it


def test_a_class_the_clap_cannot_tell_apart_generates_one_candidate_without_a_floor():
    rng = np.random.default_rng(1)
    text = np.eye(8)[0]
    mixed = _unit(rng.standard_normal((60, 8)))  # own and other drawn alike: AUC about 0.5
    result = calibrate_class(text, mixed[:20], mixed[20:], multi_target=False, candidates=3)
    assert result["calibrated"] and not result["selection"] and result["auc"] < calibration.MIN_AUC
    assert result["candidates"] == 1 and result["floor"] is None and "AUC" in result["why"]


def test_a_multi_target_class_keeps_selection_and_gets_the_closest_real_pair_as_its_ceiling():
    own = _unit(np.array([[1.0, 0.0, 0.0], [0.8, 0.6, 0.0], [0.0, 1.0, 0.0]]))
    other = _unit(np.array([[0.0, 0.0, 1.0], [0.1, 0.0, 1.0]]))
    result = calibrate_class(np.array([0.0, 0.0, 1.0]), own, other, multi_target=True, candidates=10)
    assert result["selection"] and result["candidates"] == 10 and result["floor"] is None
    assert result["ceiling"] == pytest.approx(0.8, abs=1e-4) == copy_ceiling(own)


def test_too_few_training_clips_measure_nothing():
    result = calibrate_class(np.ones(4), _unit(np.ones((2, 4))), _unit(np.ones((5, 4))), multi_target=False, candidates=3)
    assert not result["calibrated"] and result["candidates"] == 3 and result["floor"] is None


def test_generation_uses_the_calibration_only_under_the_clap_it_was_measured_with(smoke_run, tmp_path, monkeypatch):
    """The smoke model's artifacts copied; class_prompts measured with calibration on (MIN_AUC above 1 turns
    every text-scored class's selection off); a class then generates one candidate per clip, no floor."""
    source = smoke_run["profile"]
    shutil.copytree(layout(source).root, tmp_path / "artifacts")
    profile = load_profile("smoke", {**source.model_dump(mode="json"), "name": "smoke",
                                     "paths": {**source.model_dump(mode="json")["paths"],
                                               "artifacts_dir": str(tmp_path / "artifacts")},
                                     "generation": {**source.generation.model_dump(mode="json"),
                                                    "calibrate_selection": True}})  # fmt: skip
    monkeypatch.setattr(calibration, "MIN_AUC", 1.01)
    result = stages.choose_prompts(profile)
    record = json.loads(layout(profile).prompts.read_text())
    assert record["calibrated_selection"] and set(record["classes"]) == set(profile.class_names)
    label = next(c.name for c in profile.classes if c.clap_floor is not None and record["classes"][c.name]["selection"]["calibrated"])
    measured = record["classes"][label]["selection"]
    assert measured["candidates"] == 1 and measured["floor"] is None and not measured["selection"]
    assert "selection" in result.markdown

    pipeline = assemble_pipeline(profile, "adapter", profile.model_of(label))
    assert calibrated_selection(profile, label, pipeline.scoring_clap().version)["source"] == "calibrated"
    assert calibrated_selection(profile, label, "another-clap")["source"] == "configured"  # e.g. a fine-tune's CLAP
    generated = generate_selected(pipeline, profile, label, 2)
    assert all(len(s.scores) == 1 and len(s.scores[0]) == 1 for s in generated.selections)  # one candidate, kept
    assert all(s.floor is None and s.accepted for s in generated.selections)

    off = load_profile("smoke", {**profile.model_dump(mode="json"),
                                 "generation": {**profile.generation.model_dump(mode="json"), "calibrate_selection": False}})
    assert calibrated_selection(off, label, pipeline.scoring_clap().version)["candidates"] == off.class_config(label).candidates
