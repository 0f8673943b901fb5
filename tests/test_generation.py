"""Generation, selection and export on the smoke pipeline's own trained models."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
import torch
from click.testing import CliRunner

from foley_core.cli import main
from foley_core.export import validate_dcase
from foley_core.generation.adapter import EmbeddingAdapter
from foley_core.generation.pipeline import FoleyPipeline, assemble_pipeline, candidate_seed
from foley_core.registry import latest_pipeline_dir


def test_whole_graph_ran_and_wrote_a_report(smoke_run):
    outcome, root = smoke_run["outcome"], smoke_run["root"]
    assert not outcome.failed_checks
    report = (outcome.output_dir / "report.html").read_text()
    assert report.count("<audio") == 7 * 2  # 7 classes x 2 clips (smoke)
    assert "Ablation" in report and "raw_foley_data" in report and "pretrained_ldm" in report
    assert (root / "outputs/latest").resolve() == outcome.output_dir.resolve()
    assert validate_dcase(outcome.output_dir / "dcase", clips_per_class=2) == []
    metrics = json.loads((outcome.output_dir / "metrics.json").read_text())
    assert {(r["adapter"], r["selection"]) for r in metrics["ablation"]} == {(a, s) for a in (True, False) for s in (True, False)}


def test_adapter_file_holds_d_squared_plus_d_parameters(smoke_run):
    profile = smoke_run["profile"]
    adapter = EmbeddingAdapter.load(profile.artifact_dir("finetune", "adapter"))
    d = profile.clap.embed_dim
    assert adapter.num_parameters() == d * d + d
    identity = EmbeddingAdapter.load(profile.artifact_dir("finetune", "identity"))
    assert torch.equal(identity.linear.weight, torch.eye(d))  # the ablation stays at identity
    assert not torch.equal(adapter.linear.weight, torch.eye(d))  # fine-tuning moved it


def test_same_seed_same_model_gives_identical_audio_and_candidates_are_batched(smoke_run):
    pipeline = assemble_pipeline(smoke_run["profile"], "adapter")
    a = pipeline(["a dog barking", "rain"], n_candidates=3, seeds=[5, 6], guidance_scale=2.0)
    b = pipeline(["a dog barking", "rain"], n_candidates=3, seeds=[5, 6], guidance_scale=2.0)
    assert a.candidates.shape == (2, 3, smoke_run["profile"].audio.clip_samples)
    assert np.array_equal(a.candidates, b.candidates) and np.array_equal(a.scores, b.scores)
    assert not np.array_equal(a.candidates[0, 0], a.candidates[0, 1])  # own generator per candidate
    assert np.array_equal(a.waveforms[0], a.candidates[0, a.best[0]])
    assert a.best[0] == int(np.argmax(a.scores[0]))
    # one clip regenerated alone: same seed -> same audio as inside the batch
    alone = pipeline(["a dog barking"], n_candidates=3, seeds=[5], guidance_scale=2.0)
    assert np.allclose(alone.candidates[0], a.candidates[0], atol=1e-4)
    assert candidate_seed(5, 0, 1) != candidate_seed(5, 1, 0)


def test_pipeline_round_trips_through_save_and_from_pretrained(smoke_run, tmp_path):
    folder = latest_pipeline_dir(smoke_run["profile"])
    loaded = FoleyPipeline.from_pretrained(folder)
    original = assemble_pipeline(smoke_run["profile"], "adapter")
    x, y = loaded(["gun shot"], n_candidates=2, seeds=[1]), original(["gun shot"], n_candidates=2, seeds=[1])
    assert np.array_equal(x.candidates, y.candidates)


def test_own_model_guides_against_zero_and_an_empty_prompt_mode_survives_save(smoke_run, tmp_path):
    """Models trained here condition through the profile's CLAP and guide against a zero vector (what
    condition dropout trained); guiding against the CLAP embedding of "" stays available and is saved.
    (An imported AudioLDM conditions through its own text encoder: tests/test_audioldm_conditioning.py.)"""
    profile = smoke_run["profile"]
    ours = assemble_pipeline(profile, "adapter")
    assert ours.conditioner.kind == "clap" and ours.convention == "foley"
    assert ours.unconditional == "zero" and torch.equal(ours.unconditional_embedding(), torch.zeros(ours.ldm.condition_dim))
    empty_prompt = FoleyPipeline(ours.clap, ours.adapter, ours.ldm, unconditional="empty_prompt")
    assert empty_prompt.unconditional == "empty_prompt"
    empty = empty_prompt.unconditional_embedding()
    assert empty.shape == (ours.ldm.condition_dim,) and torch.isclose(empty.norm(), torch.tensor(1.0), atol=1e-4)
    assert not torch.allclose(empty, ours.clap.encode_text(["rain"])[0])
    a = ours(["rain"], n_candidates=1, seeds=[3], guidance_scale=3.0)
    b = empty_prompt(["rain"], n_candidates=1, seeds=[3], guidance_scale=3.0)
    assert not np.allclose(a.waveforms, b.waveforms)  # the unconditional branch really changed
    empty_prompt.save_pretrained(tmp_path / "p", clap_folder=profile.artifact_dir("clap"))
    assert FoleyPipeline.from_pretrained(tmp_path / "p").unconditional == "empty_prompt"
    with pytest.raises(ValueError, match="unconditional"):
        FoleyPipeline(ours.clap, ours.adapter, ours.ldm, unconditional="none")


def test_own_model_samples_in_half_precision_from_the_profile(smoke_run):
    """generation.precision reaches the assembled pipeline: the same code path, bf16 UNet, finite audio."""
    profile = smoke_run["profile"]
    half = profile.model_copy(update={"generation": profile.generation.model_copy(update={"precision": "bf16"})})
    pipeline = assemble_pipeline(half, "adapter")
    assert pipeline.ldm.unet.dtype == torch.bfloat16 and pipeline.device == torch.device("cpu")
    out = pipeline(["rain", "gun shot"], n_candidates=2, seeds=[1, 2], guidance_scale=2.0)
    assert out.candidates.shape == (2, 2, profile.audio.clip_samples) and np.isfinite(out.candidates).all()
    assert np.isfinite(out.scores).all()


def test_cli_generate_is_bit_identical_for_the_same_seed(smoke_run, tmp_path):
    model = str(latest_pipeline_dir(smoke_run["profile"]))
    runner = CliRunner()
    for name in ("a.wav", "b.wav"):
        result = runner.invoke(main, ["generate", "a dog barking on a wet street", "-n", "3", "--seed", "1",
                                      "-o", str(tmp_path / name), "--profile", "smoke", "--model", model])
        assert result.exit_code == 0, result.output
        assert "CLAP score" in result.output
    assert (tmp_path / "a.wav").read_bytes() == (tmp_path / "b.wav").read_bytes()
    info = sf.info(tmp_path / "a.wav")
    assert (info.samplerate, info.channels, info.subtype, info.frames) == (22050, 1, "PCM_16", 22050)


def test_cli_generate_bad_input_exits_2_without_leaving_a_file(smoke_run, tmp_path):
    model = str(latest_pipeline_dir(smoke_run["profile"]))
    runner = CliRunner()
    for args, message in [
        (["", "--model", model], "prompt is empty"),
        (["x", "-n", "99", "--model", model], "--n-candidates"),
        (["x", "--seconds", "7", "--model", model], "--seconds"),
        (["--class", "Cat", "--model", model], "unknown class"),
        (["x", "--model", str(tmp_path / "none")], "no pipeline"),
    ]:
        result = runner.invoke(main, ["generate", *args, "--profile", "smoke", "-o", str(tmp_path / "out.wav")])
        assert result.exit_code == 2 and message in result.output, (args, result.output)
    assert not (tmp_path / "out.wav").exists()


def test_cli_export_dcase_writes_a_valid_submission(smoke_run, tmp_path):
    model = str(latest_pipeline_dir(smoke_run["profile"]))
    result = CliRunner().invoke(main, ["export-dcase", str(tmp_path / "sub"), "--clips-per-class", "2",
                                       "--profile", "smoke", "--model", model])
    assert result.exit_code == 0, result.output
    check = CliRunner().invoke(main, ["validate-dcase", str(tmp_path / "sub"), "--clips-per-class", "2"])
    assert check.exit_code == 0, check.output
    sf.write(tmp_path / "sub/Rain/001.wav", np.zeros((88200, 2), dtype=np.float32), 22050, subtype="PCM_16")
    check = CliRunner().invoke(main, ["validate-dcase", str(tmp_path / "sub"), "--clips-per-class", "2"])
    assert check.exit_code == 2 and "Rain/001.wav" in check.output
