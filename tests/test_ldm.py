"""LDM stage on the smoke profile: front end, training (falling losses, resume), save/load, sampling."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch
from pytorch_lightning.callbacks import Callback

from foley_core.core.audio import content_hash
from foley_core.core.config import load_profile
from foley_core.ldm import (
    LdmComponents,
    MelFrontEnd,
    generate_waveforms,
    griffin_lim,
    sample_latents,
    train_ldm,
    train_unet,
    train_vae,
    train_vocoder,
)  # fmt: skip
from foley_core.ldm.sampling import reconstruct

CLASSES = ["DogBark", "GunShot", "Rain"]
DIM = 32  # smoke clap.embed_dim


def _clip(label: str, index: int, rate: int, samples: int) -> np.ndarray:
    """A distinct, deterministic sound per class: a decaying tone, a click train, or noise."""
    rng = np.random.default_rng(CLASSES.index(label) * 100 + index)
    t = np.arange(samples) / rate
    if label == "DogBark":
        wave = np.sin(2 * np.pi * (300 + 40 * index) * t) * np.exp(-4 * t)
    elif label == "GunShot":
        wave = np.zeros(samples)
        wave[:: rate // 8] = 1.0
        wave = np.convolve(wave, np.exp(-np.arange(200) / 30) * rng.normal(size=200), mode="same")
    else:
        wave = rng.normal(size=samples) * 0.3
    return (0.8 * wave / np.abs(wave).max()).astype(np.float32)


def _profile(root: Path, **ldm_overrides):
    overrides = {
        "paths": {"data_dir": str(root / "data"), "artifacts_dir": str(root / "artifacts")},
        "wandb": {"mode": "disabled"},
    }
    if ldm_overrides:
        overrides["ldm"] = ldm_overrides
    return load_profile("smoke", overrides)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """A tiny manifest (3 classes x 4 clips, 1 val clip each) and per-clip unit conditioning vectors."""
    root = tmp_path_factory.mktemp("ldm-data")
    audio = load_profile("smoke").audio
    rows = []
    for label in CLASSES:
        for index in range(4):
            wave = _clip(label, index, audio.sample_rate, audio.clip_samples)
            path = root / label / f"{label}-{index}.wav"
            path.parent.mkdir(exist_ok=True)
            sf.write(path, wave, audio.sample_rate, subtype="PCM_16")
            rows.append({"id": path.stem, "class": label, "split": "val" if index == 0 else "train",
                         "content_hash": content_hash(wave), "abs_path": str(path)})  # fmt: skip
    manifest = pd.DataFrame(rows)
    rng = np.random.default_rng(0)
    prototypes = {label: rng.normal(size=DIM) for label in CLASSES}
    conditioning = {}
    for row in rows:
        vector = prototypes[row["class"]] + 0.1 * rng.normal(size=DIM)
        conditioning[row["content_hash"]] = (vector / np.linalg.norm(vector)).astype(np.float32)
    return manifest, conditioning


@pytest.fixture(scope="module")
def trained(dataset, tmp_path_factory) -> tuple[Path, dict]:
    """The whole smoke LDM (VAE, vocoder, UNet at the profile's 5 steps each), trained once."""
    manifest, conditioning = dataset
    out = tmp_path_factory.mktemp("ldm") / "pretrained_ldm"
    metrics = train_ldm(_profile(out.parent), manifest, conditioning, out, report_clips=3)
    return out, metrics


def _condition_rows(dataset, count: int) -> torch.Tensor:
    _, conditioning = dataset
    return torch.tensor(np.stack(list(conditioning.values())[:count]))


def test_mel_front_end_matches_the_audioldm_recipe():
    import librosa

    audio = load_profile("smoke").audio
    wave = _clip("DogBark", 1, audio.sample_rate, audio.clip_samples)
    log_mel = MelFrontEnd(audio)(torch.from_numpy(wave)[None])
    assert log_mel.shape == (1, 1, audio.clip_samples // audio.hop_length, audio.n_mels)
    reference = librosa.feature.melspectrogram(
        y=wave, sr=audio.sample_rate, n_fft=audio.n_fft, hop_length=audio.hop_length, win_length=audio.win_length,
        n_mels=audio.n_mels, fmin=audio.f_min, fmax=audio.f_max, power=1.0, center=True, pad_mode="reflect",
    )  # fmt: skip
    expected = np.log(np.maximum(reference, 1e-5)).T[: log_mel.shape[2]]
    np.testing.assert_allclose(log_mel[0, 0].numpy(), expected, atol=2e-3)
    with pytest.raises(ValueError, match="must be \\(n, samples\\)"):
        MelFrontEnd(audio)(torch.zeros(audio.clip_samples))


def test_griffin_lim_fallback_returns_the_clip_length():
    audio = load_profile("smoke").audio
    wave = torch.from_numpy(_clip("DogBark", 0, audio.sample_rate, audio.clip_samples))[None]
    rebuilt = griffin_lim(MelFrontEnd(audio)(wave), audio, iterations=4)
    assert rebuilt.shape == wave.shape and torch.isfinite(rebuilt).all()


def test_smoke_ldm_trains_its_steps_and_saves_safetensors(trained):
    # How fast it trains is the benchmarks' to say (docs/benchmarks.md), not a unit test's: a timed
    # assertion fails on a slower or busier machine and proves nothing about the code.
    out, metrics = trained
    for name in ("vae", "vocoder", "unet"):
        assert metrics[name]["steps"] == 5
        assert np.isfinite([metrics[name]["loss_first"], metrics[name]["loss_final"]]).all()
        assert (out / name / "config.json").is_file()
        assert list((out / name).glob("*.safetensors")), f"{name} was not saved as safetensors"
        assert not [p for p in (out / name).rglob("*") if p.suffix in {".bin", ".pt", ".ckpt", ".pkl"}]
    assert (out / "scheduler" / "scheduler_config.json").is_file()
    recon = metrics["reconstruction"]
    assert recon["clips"] == 3
    assert all(np.isfinite([v["mel_l1"], v["mrstft"]]).all() for k, v in recon.items() if isinstance(v, dict))


@pytest.mark.parametrize("which", ["vae", "vocoder", "unet"])
def test_losses_fall_on_a_tiny_overfit_case(which, dataset, tmp_path):
    manifest, conditioning = dataset
    steps = {"vae": 40, "vocoder": 80, "unet": 60}[which]
    settings = {"steps": steps, "learning_rate": 3e-3}
    profile = _profile(tmp_path, **{which: settings})
    if which == "unet":
        vae_profile = _profile(tmp_path, vae={"steps": 20, "learning_rate": 3e-3})
        train_vae(vae_profile, manifest, tmp_path / "vae")
        metrics = train_unet(profile, manifest, conditioning, tmp_path / "vae", tmp_path / "unet")
    else:
        metrics = (train_vae if which == "vae" else train_vocoder)(profile, manifest, tmp_path / which)
    assert metrics["steps"] == steps
    assert np.isfinite(metrics["loss_final"])
    # The UNet's loss draws a random timestep per clip, so on 60 tiny steps it levels off near
    # 0.8 of the first tenth (0.78-0.90 over seeds 0-3); the VAE and vocoder fall much further.
    limit = 0.9 if which == "unet" else 0.8
    assert metrics["loss_final"] < limit * metrics["loss_first"], metrics


class _Precision(Callback):
    """Records the precision Lightning trained with and whether CPU autocast was on in the step."""

    def __init__(self):
        self.precision, self.autocast = None, []

    def on_train_start(self, trainer, pl_module) -> None:
        self.precision = trainer.precision
        compute_loss = pl_module.compute_loss

        def recording(batch):
            self.autocast.append(torch.is_autocast_enabled("cpu"))
            return compute_loss(batch)

        pl_module.compute_loss = recording


def test_a_models_own_precision_reaches_its_training_and_its_fingerprint(dataset, tmp_path):
    """``ldm.vae.precision: bf16-mixed`` trains the VAE under bf16 autocast (the cpu profile's speed-up,
    docs/benchmarks.md) and still learns; it is part of the fingerprint, so an fp32 VAE is not reused."""
    manifest, _ = dataset
    settings = {"steps": 40, "learning_rate": 3e-3}
    fp32, bf16 = _Precision(), _Precision()
    plain = train_vae(_profile(tmp_path, vae=settings), manifest, tmp_path / "vae", callbacks=[fp32])
    mixed = train_vae(_profile(tmp_path, vae={**settings, "precision": "bf16-mixed"}), manifest, tmp_path / "vae",
                      callbacks=[bf16])  # fmt: skip
    assert (fp32.precision, bf16.precision) == ("32-true", "bf16-mixed")
    assert not any(fp32.autocast) and bf16.autocast and all(bf16.autocast)
    assert mixed["fingerprint"] != plain["fingerprint"] and mixed["resumed_from_step"] == 0
    assert mixed["loss_final"] < 0.8 * mixed["loss_first"], mixed


def test_a_cosine_schedule_falls_to_zero_at_the_last_step_and_constant_stays():
    from foley_core.ldm.modules import with_schedule

    def rates(schedule: str) -> list[float]:
        optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)
        configured = with_schedule(optimizer, schedule, steps=10)
        decay = configured["lr_scheduler"]["scheduler"] if isinstance(configured, dict) else None
        seen = []
        for _ in range(12):
            seen.append(optimizer.param_groups[0]["lr"])
            optimizer.step()
            if decay is not None:
                decay.step()
        return seen

    cosine = rates("cosine")
    assert cosine[0] == pytest.approx(1e-3) and cosine[5] == pytest.approx(5e-4) and cosine[10] == pytest.approx(0, abs=1e-12)
    assert all(a >= b for a, b in zip(cosine, cosine[1:]))
    assert rates("constant") == [1e-3] * 12
    with pytest.raises(ValueError, match="lr_schedule"):
        with_schedule(torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1), "linear", 10)


class _Crash(Callback):
    """Simulates a killed run: dies after ``at_step`` optimizer steps."""

    def __init__(self, at_step: int):
        self.at_step = at_step

    def on_train_batch_end(self, trainer, *args) -> None:
        if trainer.global_step >= self.at_step:
            raise RuntimeError("simulated kill")


def test_a_killed_run_resumes_to_the_same_final_step(dataset, tmp_path):
    manifest, _ = dataset
    profile = _profile(tmp_path, vae={"steps": 7})  # smoke checkpoints every 2 steps
    with pytest.raises(RuntimeError, match="simulated kill"):
        train_vae(profile, manifest, tmp_path / "vae", callbacks=[_Crash(at_step=5)])
    assert not (tmp_path / "vae" / "metrics.json").exists()
    metrics = train_vae(profile, manifest, tmp_path / "vae")
    assert metrics["resumed_from_step"] == 4
    assert metrics["steps"] == 7
    again = train_vae(profile, manifest, tmp_path / "vae")  # finished: not retrained
    assert again == metrics


def test_save_load_round_trip_gives_equal_outputs(trained, dataset, tmp_path):
    out, _ = trained
    first = LdmComponents.load(out)
    first.save(tmp_path / "copy")
    second = LdmComponents.load(tmp_path / "copy")
    conditions = _condition_rows(dataset, 2)

    def run(components):
        generators = [torch.Generator().manual_seed(i) for i in range(2)]
        return generate_waveforms(components, conditions, components.unconditional_embedding(),
                                  guidance_scale=2.0, generators=generators, steps=3)  # fmt: skip

    a, b = run(first), run(second)
    assert a.shape == (2, first.audio.clip_samples)
    assert torch.isfinite(a).all() and a.abs().max() > 0
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert second.normalisation == first.normalisation and second.latent_scale == first.latent_scale


def test_loading_refuses_pickled_weights(trained, tmp_path):
    out, _ = trained
    copy = tmp_path / "pickled"
    components = LdmComponents.load(out)
    components.save(copy)
    vae_file = copy / "vae" / "diffusion_pytorch_model.safetensors"
    torch.save(components.vae.state_dict(), copy / "vae" / "diffusion_pytorch_model.bin")
    vae_file.unlink()
    with pytest.raises(Exception, match="safetensors|diffusion_pytorch_model"):
        LdmComponents.load(copy)


@pytest.mark.parametrize("sampler", ["ddim", "dpmsolver++"])
def test_each_row_depends_only_on_its_generator_condition_and_guidance(trained, dataset, sampler):
    components = LdmComponents.load(trained[0])
    conditions = _condition_rows(dataset, 3)
    uncond = components.unconditional_embedding()

    def latents(rows, scales, seeds):
        return sample_latents(components, conditions[rows], uncond, guidance_scale=scales, steps=3, sampler=sampler,
                              generators=[torch.Generator().manual_seed(s) for s in seeds])  # fmt: skip

    batch = latents([0, 1, 2], [1.0, 3.0, 0.0], [10, 11, 12])
    alone = latents([1], [3.0], [11])
    torch.testing.assert_close(batch[1:2], alone, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(batch[1], latents([1], [1.0], [11])[0])  # guidance changes the sample
    with pytest.raises(ValueError, match="guidance_scale has 2 values for 3 rows"):
        latents([0, 1, 2], [1.0, 2.0], [0, 1, 2])
    with pytest.raises(ValueError, match="conditions must be"):
        sample_latents(components, torch.zeros(2, DIM + 1), uncond)


def test_reconstruction_keeps_shape(trained, dataset):
    components = LdmComponents.load(trained[0])
    manifest, _ = dataset
    from foley_core.ldm.data import load_waveforms

    waves = load_waveforms(manifest.head(2), components.audio)
    log_mel, rebuilt = reconstruct(components, waves)
    assert log_mel.shape == components.front_end(waves).shape
    assert rebuilt.shape == waves.shape


def test_spectrogram_images_per_class_are_png(trained, dataset):
    from foley_core.ldm import spectrogram_images

    manifest, conditioning = dataset
    components = LdmComponents.load(trained[0])
    val = manifest[manifest["split"] == "val"]
    by_class = {label: conditioning[val[val["class"] == label]["content_hash"].iloc[0]] for label in CLASSES}
    images = spectrogram_images(components, val, by_class, steps=2)
    assert sorted(images) == CLASSES
    assert all(png.startswith(b"\x89PNG") for png in images.values())


def test_conditioning_may_be_a_callable_and_must_cover_every_clip(dataset):
    from foley_core.ldm.data import conditioning_matrix

    manifest, conditioning = dataset
    hashes = list(manifest["content_hash"])
    from_map = conditioning_matrix(conditioning, hashes)
    from_callable = conditioning_matrix(lambda keys: np.stack([conditioning[k] for k in keys]), hashes)
    torch.testing.assert_close(from_map, from_callable)
    with pytest.raises(KeyError, match="no conditioning embedding for 1 clips"):
        conditioning_matrix({k: v for k, v in conditioning.items() if k != hashes[0]}, hashes)
