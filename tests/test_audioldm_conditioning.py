"""An imported AudioLDM conditions through its own text encoder, and generates what diffusers'
``AudioLDMPipeline`` generates; generation runs on the configured device and precision.

Everything here runs on tiny random components built offline (tests/audioldm_fixtures.py), the way
diffusers' own AudioLDM tests do."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
import torch
from audioldm_fixtures import CONDITION_DIM, make_tiny_audioldm_folder
from click.testing import CliRunner
from diffusers import AudioLDMPipeline, EulerAncestralDiscreteScheduler

from foley_core.cli import main
from foley_core.core.config import GenerationConfig, load_profile
from foley_core.export import write_dcase_clip
from foley_core.generation.adapter import EmbeddingAdapter
from foley_core.generation.conditioning import AudioLdmTextConditioner, ClapConditioner, load_conditioner
from foley_core.generation.pipeline import (
    FoleyPipeline,
    ScoringUnavailable,
    assemble_pipeline,
    generator_seed,
    place,
    resolve_device,
)  # fmt: skip
from foley_core.ldm.components import LdmComponents

CLAP_DIM = 24  # the scoring CLAP's width differs from the UNet's condition width on purpose
N_MELS = 32


@pytest.fixture(scope="module")
def audioldm(tmp_path_factory):
    """A tiny AudioLDM folder (cvssp/audioldm-s-full-v2 layout) and diffusers' pipeline on it."""
    folder = tmp_path_factory.mktemp("audioldm") / "audioldm-tiny"
    make_tiny_audioldm_folder(folder, n_mels=N_MELS)
    reference = AudioLDMPipeline.from_pretrained(str(folder))
    reference.set_progress_bar_config(disable=True)
    return folder, reference


def diffusers_audio(reference, prompt, *, steps, guidance, seconds, seed) -> np.ndarray:
    return reference(prompt, num_inference_steps=steps, guidance_scale=guidance, audio_length_in_s=seconds,
                     generator=torch.Generator().manual_seed(seed)).audios[0]


def small_clap(folder, embed_dim: int = CLAP_DIM):
    """A random CLAP of the kind trained here (frozen MiniLM text tower), saved and loaded as the pipeline does."""
    from foley_core.clap.encoder import TrainedClapEncoder, save_trained
    from foley_core.clap.towers import SmallClap, TowerConfig

    torch.manual_seed(1)
    save_trained(SmallClap(TowerConfig(embed_dim=embed_dim, audio_channels=(8, 16), mel_bins=32)), folder)
    return TrainedClapEncoder.load(folder)


# --- conditioning as trained ----------------------------------------------------------------


def test_the_folders_own_text_encoder_conditions_as_diffusers_encodes_prompts(audioldm):
    folder, reference = audioldm
    pipeline = FoleyPipeline.from_pretrained(folder)  # a plain AudioLDM folder: no pipeline.json
    assert isinstance(pipeline.conditioner, AudioLdmTextConditioner) and pipeline.clap is None
    assert pipeline.convention == "diffusers" and pipeline.sampler == "native"
    prompts = ["a dog barking", "rain on a tin roof"]
    expected = reference._encode_prompt(prompts, torch.device("cpu"), 1, True)  # [negative ""; prompts]
    torch.testing.assert_close(pipeline.conditioner.encode(prompts), expected[2:], rtol=0, atol=0)
    # diffusers embeds "" once per prompt in the batch; ours once: equal up to the batch's rounding
    torch.testing.assert_close(pipeline.unconditional_embedding(), expected[0], rtol=0, atol=1e-6)
    single = reference._encode_prompt(prompts[:1], torch.device("cpu"), 1, True)
    torch.testing.assert_close(pipeline.unconditional_embedding(), single[0], rtol=0, atol=0)
    assert pipeline.unconditional == "empty_prompt"
    raw, adapted = pipeline.conditions(prompts)  # the adapter sits after the encoder (identity until fine-tuned)
    torch.testing.assert_close(adapted, raw, rtol=0, atol=0)
    with torch.no_grad():
        pipeline.adapter.linear.weight.mul_(-1.0)
    torch.testing.assert_close(pipeline.conditions(prompts)[1], -raw)
    with pytest.raises(ValueError, match="empty or blank"):
        pipeline.conditioner.encode(["  "])


@pytest.mark.parametrize(("guidance", "seconds", "steps", "seed"), [
    (2.5, 0.64, 3, 3),  # guided, a whole number of latent rows
    (1.0, 0.5, 2, 7),  # unguided; 50 mel frames: diffusers rounds the height up to 52 and cuts the audio
    (0.5, 0.33, 2, 11),  # diffusers skips guidance at g <= 1
])  # fmt: skip
def test_one_candidate_is_the_waveform_diffusers_makes(audioldm, guidance, seconds, steps, seed):
    folder, reference = audioldm
    expected = diffusers_audio(reference, "a dog barking", steps=steps, guidance=guidance, seconds=seconds, seed=seed)
    out = FoleyPipeline.from_pretrained(folder)(["a dog barking"], n_candidates=1, guidance_scale=guidance,
                                                seeds=[seed], steps=steps, seconds=seconds)  # fmt: skip
    assert out.waveforms.shape == (1, expected.shape[0]) and np.abs(expected).max() > 0
    np.testing.assert_allclose(out.waveforms[0], expected, rtol=1e-5, atol=1e-6 * np.abs(expected).max())
    assert np.isnan(out.scores).all() and not out.scored  # one candidate, no CLAP: nothing to score


def test_the_folders_own_scheduler_samples_even_a_stochastic_one(tmp_path):
    folder = tmp_path / "euler-a"
    scheduler = EulerAncestralDiscreteScheduler(beta_start=0.0015, beta_end=0.0195, beta_schedule="scaled_linear")
    make_tiny_audioldm_folder(folder, n_mels=16, hop_length=64, scheduler=scheduler)
    reference = AudioLDMPipeline.from_pretrained(str(folder))
    reference.set_progress_bar_config(disable=True)
    expected = diffusers_audio(reference, "rain", steps=3, guidance=3.0, seconds=0.4, seed=5)
    pipeline = FoleyPipeline.from_pretrained(folder)
    waves = pipeline(["rain"], guidance_scale=3.0, seeds=[5], steps=3, seconds=0.4).waveforms
    np.testing.assert_allclose(waves[0], expected, rtol=1e-5, atol=1e-6 * np.abs(expected).max())
    pipeline.save_pretrained(tmp_path / "saved")  # the scheduler class survives a save
    again = FoleyPipeline.from_pretrained(tmp_path / "saved")
    assert json.loads((tmp_path / "saved/ldm/scheduler/scheduler_config.json").read_text())["_class_name"] == \
        "EulerAncestralDiscreteScheduler"
    assert np.array_equal(again(["rain"], guidance_scale=3.0, seeds=[5], steps=3, seconds=0.4).waveforms, waves)


def test_candidates_and_scoring_with_an_imported_audioldm(audioldm, tmp_path):
    folder, reference = audioldm
    pipeline = FoleyPipeline.from_pretrained(folder)
    with pytest.raises(ScoringUnavailable, match="no CLAP"):
        pipeline(["a dog barking"], n_candidates=2, seeds=[3], steps=2)
    pipeline.clap = small_clap(tmp_path / "clap")  # a CLAP that only scores: 24-d while the UNet takes 16-d
    out = pipeline(["a dog barking", "rain"], n_candidates=3, guidance_scale=2.5, seeds=[3, 4], steps=2, seconds=0.64)
    assert out.candidates.shape == (2, 3, 10240) and out.scores.shape == (2, 3) and np.isfinite(out.scores).all()
    assert list(out.best) == list(out.scores.argmax(axis=1))
    first = diffusers_audio(reference, "a dog barking", steps=2, guidance=2.5, seconds=0.64, seed=3)
    np.testing.assert_allclose(out.candidates[0, 0], first, rtol=1e-5, atol=1e-6 * np.abs(first).max())
    assert not np.allclose(out.candidates[0, 0], out.candidates[0, 1])  # its own generator per candidate
    assert generator_seed(3, 0, 0, "diffusers") == 3 and generator_seed(3, 0, 0, "foley") != 3
    assert generator_seed(3, 1, 0, "diffusers") == generator_seed(3, 1, 0, "foley")  # regenerations: fresh seeds
    clap_text = pipeline.clap.encode_text(["a dog barking"]).numpy()[0]
    audio = pipeline.clap.encode_audio(out.candidates[0], 16000).numpy()
    np.testing.assert_allclose(out.scores[0], audio @ clap_text, rtol=1e-4, atol=1e-5)  # scored by the CLAP's text


def test_save_pretrained_records_the_conditioner_and_round_trips(audioldm, tmp_path):
    folder, _ = audioldm
    pipeline = FoleyPipeline.from_pretrained(folder)
    with torch.no_grad():  # a "fine-tuned" adapter
        pipeline.adapter.linear.weight.copy_(torch.eye(CONDITION_DIM) + 0.05 * torch.randn(CONDITION_DIM, CONDITION_DIM))
    pipeline.save_pretrained(tmp_path / "p", extra={"model_version": "v1"})
    config = json.loads((tmp_path / "p/pipeline.json").read_text())
    assert config["conditioner"]["kind"] == "audioldm_text" and config["conditioner"]["dim"] == CONDITION_DIM
    assert config["convention"] == "diffusers" and config["clap_source"] == "none" and config["model_version"] == "v1"
    assert (tmp_path / "p/conditioner/text_encoder").is_dir() and (tmp_path / "p/conditioner/tokenizer").is_dir()
    loaded = FoleyPipeline.from_pretrained(tmp_path / "p")
    assert loaded.conditioner.kind == "audioldm_text" and loaded.conditioner.version == config["conditioner"]["version"]
    a = pipeline(["footsteps"], seeds=[1], steps=2, guidance_scale=2.0)
    b = loaded(["footsteps"], seeds=[1], steps=2, guidance_scale=2.0)
    assert np.array_equal(a.waveforms, b.waveforms)


def test_a_folder_without_its_text_encoder_is_refused(audioldm, tmp_path):
    import shutil

    folder, _ = audioldm
    broken = tmp_path / "no-text-encoder"
    shutil.copytree(folder, broken)
    shutil.rmtree(broken / "text_encoder")
    with pytest.raises(FileNotFoundError, match="no pipeline in .* has no text_encoder/"):
        FoleyPipeline.from_pretrained(broken)
    with pytest.raises(FileNotFoundError, match="text_encoder/"):
        AudioLdmTextConditioner.from_pretrained(broken)


def test_a_paper_style_profile_conditions_through_the_audioldm_encoder_and_scores_with_its_clap(audioldm, tmp_path):
    """``ldm.pretrained_path`` set: assemble_pipeline takes the folder's text encoder as conditioner, the
    profile's CLAP only scores; with an identity adapter candidate 0 is diffusers' waveform."""
    folder, reference = audioldm
    profile = load_profile("smoke", {
        "paths": {"data_dir": str(tmp_path / "data"), "artifacts_dir": str(tmp_path / "artifacts")},
        "ldm": {"pretrained_path": str(folder), "mel_normalisation": "none"},
        "generation": {"device": "cpu", "precision": "fp32"},
    })  # fmt: skip
    clap = small_clap(profile.artifact_dir("clap"))
    LdmComponents.from_audioldm(folder, audio=profile.audio).save(profile.artifact_dir("ldm"))
    EmbeddingAdapter(CONDITION_DIM).save(profile.artifact_dir("finetune", "adapter"))
    conditioner = load_conditioner(profile)
    assert isinstance(conditioner, AudioLdmTextConditioner) and conditioner.dim == CONDITION_DIM
    pipeline = assemble_pipeline(profile, "adapter")
    assert pipeline.conditioner.kind == "audioldm_text" and pipeline.convention == "diffusers"
    assert pipeline.clap.version == clap.version and pipeline.clap.embed_dim == CLAP_DIM
    out = pipeline(["a dog bark"], n_candidates=2, guidance_scale=2.5, seeds=[9], steps=2)
    expected = diffusers_audio(reference, "a dog bark", steps=2, guidance=2.5, seconds=profile.audio.clip_seconds, seed=9)
    np.testing.assert_allclose(out.candidates[0, 0], expected, rtol=1e-5, atol=1e-6 * np.abs(expected).max())
    assert np.isfinite(out.scores).all()
    own = load_profile("smoke", {"paths": {"artifacts_dir": str(tmp_path / "artifacts")}})
    assert isinstance(load_conditioner(own), ClapConditioner) and load_conditioner(own).unconditional_mode == "zero"


# --- the CLI --------------------------------------------------------------------------------



def test_cli_generates_from_a_plain_audioldm_folder_with_nothing_else(audioldm, bare_profile, tmp_path):
    folder, reference = audioldm
    out = tmp_path / "out.wav"
    result = CliRunner().invoke(main, ["generate", "--model", str(folder), "-n", "1", "--seed", "4", "--steps", "2",
                                       "--guidance", "2.5", "--seconds", "0.64", "-o", str(out),
                                       "--profile", str(bare_profile), "a dog barking"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "not scored" in result.output and not (tmp_path / "artifacts").exists()
    expected = diffusers_audio(reference, "a dog barking", steps=2, guidance=2.5, seconds=0.64, seed=4)
    write_dcase_clip(tmp_path / "diffusers.wav", expected, 16000, out_rate=22050, seconds=0.64)
    info = sf.info(out)
    assert (info.samplerate, info.channels, info.subtype, info.frames) == (22050, 1, "PCM_16", round(0.64 * 22050))
    ours, theirs = sf.read(out, dtype="int16")[0], sf.read(tmp_path / "diffusers.wav", dtype="int16")[0]
    assert np.array_equal(ours, theirs)  # the same clip, sample for sample


def test_cli_several_candidates_need_a_clap_and_say_so(audioldm, bare_profile, tmp_path):
    folder, _ = audioldm
    result = CliRunner().invoke(main, ["generate", "--model", str(folder), "-n", "2", "--steps", "1",
                                       "-o", str(tmp_path / "out.wav"), "--profile", str(bare_profile), "rain"])
    assert result.exit_code == 2 and "--n-candidates 1" in result.output, result.output
    assert not (tmp_path / "out.wav").exists()


@pytest.mark.parametrize(("args", "message"), [
    (["--device", "gpu"], "--device"),
    (["--precision", "fp8"], "fp8"),
])  # fmt: skip
def test_cli_refuses_a_bad_device_or_precision_before_loading(args, message, bare_profile, tmp_path):
    result = CliRunner().invoke(main, ["generate", "x", *args, "--model", str(tmp_path / "none"),
                                       "--profile", str(bare_profile), "-o", str(tmp_path / "out.wav")])
    assert result.exit_code == 2 and message in result.output, result.output


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_cli_asks_for_cuda_on_a_machine_without_it(bare_profile, tmp_path):
    result = CliRunner().invoke(main, ["generate", "x", "--device", "cuda", "--model", str(tmp_path / "none"),
                                       "--profile", str(bare_profile), "-o", str(tmp_path / "out.wav")])
    assert result.exit_code == 2 and "no CUDA device" in result.output and "--device cpu" in result.output


# --- device and precision -------------------------------------------------------------------


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_half_precision_sampling_runs_the_same_code_path_on_the_cpu(audioldm, precision):
    folder, _ = audioldm
    full = FoleyPipeline.from_pretrained(folder)
    half = place(FoleyPipeline.from_pretrained(folder), GenerationConfig(device="cpu", precision=precision))
    assert half.ldm.unet.dtype == {"bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    assert half.ldm.vae.dtype == half.ldm.vocoder.dtype == half.conditioner.text_encoder.dtype == torch.float32
    kwargs = {"n_candidates": 1, "guidance_scale": 2.5, "seeds": [2], "steps": 3, "seconds": 0.64}
    a, b = full(["a dog barking"], **kwargs).waveforms, half(["a dog barking"], **kwargs).waveforms
    assert b.shape == a.shape == (1, 10240) and b.dtype == np.float32 and np.isfinite(b).all()
    assert np.corrcoef(a[0], b[0])[0, 1] > 0.9  # the same clip, up to the UNet's rounding


def test_the_configured_device_and_precision_reach_every_model(audioldm, tmp_path, monkeypatch):
    folder, _ = audioldm
    pipeline = FoleyPipeline.from_pretrained(folder)
    pipeline.clap = small_clap(tmp_path / "clap")
    moved: list[tuple[str, tuple]] = []
    original = torch.nn.Module.to

    def spy(module, *args, **kwargs):
        moved.append((type(module).__name__, args + tuple(kwargs.values())))
        return original(module, *args, **kwargs)

    monkeypatch.setattr(torch.nn.Module, "to", spy)
    place(pipeline, GenerationConfig(device="cpu", precision="bf16"))
    monkeypatch.undo()
    devices = {name for name, args in moved if torch.device("cpu") in args}
    assert {"UNet2DConditionModel", "AutoencoderKL", "SpeechT5HifiGan", "ClapTextModelWithProjection",
            "EmbeddingAdapter", "SmallClap"} <= devices, moved
    assert ("UNet2DConditionModel", (torch.bfloat16,)) in moved
    assert pipeline.device == torch.device("cpu") and pipeline.precision == "bf16"
    out = pipeline(["rain"], n_candidates=2, seeds=[1], steps=2, seconds=0.64)  # scoring: CLAP on the same device
    assert np.isfinite(out.scores).all()


def test_device_setting_is_validated_and_resolved():
    assert resolve_device("auto") == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("cpu") == torch.device("cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA device"):
            resolve_device("cuda:0")
    for bad in ("gpu", "cuda:x", ""):
        with pytest.raises(ValueError, match="device must be"):
            GenerationConfig(device=bad)
    assert load_profile("paper").generation.device == "cuda" and load_profile("paper").generation.precision == "fp16"
    # cpu samples in bf16 where the CPU runs it natively (auto: faster at equal quality, docs/benchmarks.md),
    # else fp32; smoke stays fp32.
    from foley_core.core.hardware import this_cpu

    for name, precision in (("cpu", "bf16" if this_cpu().native_bf16 else "fp32"), ("smoke", "fp32")):
        assert (load_profile(name).generation.device, load_profile(name).generation.precision) == ("cpu", precision)


def test_a_truncated_weights_file_is_a_one_line_error_naming_it(audioldm, bare_profile, tmp_path):
    """Issue 22: a damaged copy in --model ends in one line that names the file, exit 2, nothing written."""
    import shutil

    folder, _ = audioldm
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    weights = sorted((copy / "unet").glob("*.safetensors"))[0]
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    out = tmp_path / "out.wav"
    result = CliRunner().invoke(main, ["generate", "--model", str(copy), "-n", "1", "--steps", "1", "-o", str(out),
                                       "--profile", str(bare_profile), "a dog barking"])
    assert result.exit_code == 2, result.output
    assert result.output.strip().splitlines()[-1].startswith(f"error: damaged weights file {weights}")
    assert "Traceback" not in result.output and not out.exists()
