"""FAD / KAD maths, the official statistics, the log-mel and CLAP embedders, evaluate_dirs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
import torch
from scipy import linalg

from foley_core.metrics import (
    ClapAudioEmbedder,
    Embedder,
    LogMelStatsEmbedder,
    clap_scores,
    evaluate_dirs,
    fad,
    fad_against_stats,
    frechet_distance,
    gaussian_stats,
    kad,
    make_embedder,
    median_bandwidth,
    official_folder_name,
    official_stats,
)

RATE = 16000


# ---------------------------------------------------------------- sounds


def hum(rng: np.random.Generator, seconds: float = 2.0, rate: int = RATE) -> np.ndarray:
    """An engine-like harmonic hum: 60-90 Hz fundamental with harmonics, slowly wobbling."""
    t = np.arange(int(seconds * rate)) / rate
    f0 = rng.uniform(60, 90) * (1 + 0.02 * np.sin(2 * np.pi * rng.uniform(0.3, 1.0) * t))
    phase = 2 * np.pi * np.cumsum(f0) / rate
    wave = sum(np.sin(k * phase) / k for k in range(1, 8)) + 0.02 * rng.standard_normal(t.size)
    return (0.3 * wave).astype(np.float32)


def patter(rng: np.random.Generator, seconds: float = 2.0, rate: int = RATE) -> np.ndarray:
    """A rain/keyboard-like texture: many short bright clicks over a hiss."""
    n = int(seconds * rate)
    wave = 0.01 * rng.standard_normal(n)
    for start in rng.integers(0, n - 200, size=int(rng.uniform(40, 80) * seconds)):
        wave[start : start + 200] += rng.uniform(0.2, 0.8) * np.diff(rng.standard_normal(201)) * np.exp(-np.arange(200) / 30)
    return np.clip(wave, -1, 1).astype(np.float32)


def write_class_dir(root, clips_by_class, rate=RATE):
    for name, clips in clips_by_class.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i, clip in enumerate(clips):
            sf.write(root / name / f"{i:03d}.wav", clip, rate, subtype="PCM_16")
    return root


# ---------------------------------------------------------------- Fréchet


def test_frechet_of_identical_gaussians_is_zero():
    rng = np.random.default_rng(0)
    emb = rng.standard_normal((300, 16)) @ rng.standard_normal((16, 16))
    mu, sigma = gaussian_stats(emb)
    assert frechet_distance(mu, sigma, mu, sigma) == pytest.approx(0.0, abs=1e-6)
    assert fad(emb, emb) == pytest.approx(0.0, abs=1e-6)


def test_frechet_closed_form_1d_and_diagonal():
    # 1-D: (m1 - m2)^2 + (s1 - s2)^2 with s the standard deviations.
    assert frechet_distance(np.array([1.0]), np.array([[4.0]]), np.array([3.0]), np.array([[9.0]])) == pytest.approx(4.0 + 1.0)
    # Diagonal: the same per dimension, summed.
    mu1, mu2 = np.array([0.0, 1.0, -2.0]), np.array([1.0, 1.0, 0.0])
    var1, var2 = np.array([1.0, 4.0, 0.25]), np.array([4.0, 1.0, 1.0])
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(var1) - np.sqrt(var2)) ** 2)
    assert frechet_distance(mu1, np.diag(var1), mu2, np.diag(var2)) == pytest.approx(expected, rel=1e-12)


def test_frechet_matches_scipy_sqrtm_on_official_stats_and_handles_singular_covariances():
    mu1, s1 = official_stats("DogBark")
    mu2, s2 = official_stats("Rain")
    root = linalg.sqrtm(s1 @ s2).real
    reference = (mu1 - mu2) @ (mu1 - mu2) + np.trace(s1) + np.trace(s2) - 2 * np.trace(root)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(reference, rel=1e-9)
    # Fewer embeddings than dimensions: rank-deficient covariances still give a finite value.
    rng = np.random.default_rng(1)
    value = fad(rng.standard_normal((10, 64)), rng.standard_normal((12, 64)) + 0.5)
    assert np.isfinite(value) and value > 0


def test_frechet_rejects_bad_input():
    with pytest.raises(ValueError, match="same shape"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))
    with pytest.raises(ValueError, match="at least 2"):
        fad(np.zeros((1, 3)), np.zeros((5, 3)))
    with pytest.raises(ValueError, match="NaN"):
        fad(np.full((4, 3), np.nan), np.zeros((5, 3)))


# ---------------------------------------------------------------- KAD


def test_kad_is_unbiased_near_zero_for_one_distribution_and_positive_for_two():
    rng = np.random.default_rng(0)
    same = [kad(rng.standard_normal((40, 8)), rng.standard_normal((60, 8))) for _ in range(30)]
    shifted = kad(rng.standard_normal((40, 8)), rng.standard_normal((60, 8)) + 0.7)
    # Unbiased: individual estimates scatter around 0 (some negative), their mean is ~0.
    assert min(same) < 0 < max(same)
    assert abs(np.mean(same)) < 0.1 * shifted
    assert shifted > 5 * np.std(same)


def test_kad_is_symmetric_and_matches_a_direct_u_statistic():
    rng = np.random.default_rng(2)
    a, b = rng.standard_normal((7, 3)), rng.standard_normal((9, 3)) + 0.3
    assert kad(a, b) == pytest.approx(kad(b, a), rel=1e-12)
    bw = 1.3
    k = lambda x, y: np.exp(-np.sum((x - y) ** 2) / (2 * bw**2))  # noqa: E731
    aa = np.mean([k(a[i], a[j]) for i in range(7) for j in range(7) if i != j])
    bb = np.mean([k(b[i], b[j]) for i in range(9) for j in range(9) if i != j])
    ab = np.mean([k(x, y) for x in a for y in b])
    assert kad(a, b, bandwidth=bw) == pytest.approx(aa + bb - 2 * ab, rel=1e-12)
    assert kad(a, b, kernel="poly") == pytest.approx(kad(b, a, kernel="poly"), rel=1e-12)


def test_median_bandwidth_and_kernel_errors():
    emb = np.array([[0.0], [1.0], [3.0]])
    assert median_bandwidth(emb) == pytest.approx(2.0)  # distances 1, 3, 2
    with pytest.raises(ValueError, match="identical"):
        median_bandwidth(np.zeros((5, 2)))
    with pytest.raises(ValueError, match="unknown kernel"):
        kad(emb, emb, kernel="laplace")


# ---------------------------------------------------------------- official statistics


@pytest.mark.parametrize("name", ["DogBark", "Footstep", "GunShot", "Keyboard", "MovingMotorVehicle", "Rain", "Sneeze_Cough"])
def test_official_stats_load_for_every_class(name):
    mu, sigma = official_stats(name)
    assert mu.shape == (128,) and sigma.shape == (128, 128)
    assert np.allclose(sigma, sigma.T) and np.linalg.eigvalsh(sigma).min() > 0
    assert official_stats(official_folder_name(name))[0] is mu  # dog_bark and DogBark: one cached array


def test_official_stats_unknown_class_names_the_choices():
    with pytest.raises(KeyError, match="DogBark"):
        official_stats("Cat")


# ---------------------------------------------------------------- embedders


def test_logmel_embedder_separates_two_kinds_of_sound():
    rng = np.random.default_rng(0)
    embedder = LogMelStatsEmbedder()
    assert isinstance(embedder, Embedder)
    hums_a = embedder.embed([hum(rng) for _ in range(6)], RATE)
    hums_b = embedder.embed([hum(rng) for _ in range(6)], RATE)
    patters = embedder.embed([patter(rng) for _ in range(6)], RATE)
    assert hums_a.shape == (6 * 3, embedder.dim)  # 2 s -> windows at 0, 0.5, 1.0 s
    assert fad(hums_a, patters) > 10 * fad(hums_a, hums_b)
    bandwidth = median_bandwidth(hums_b)
    assert kad(hums_a, patters, bandwidth=bandwidth) > 10 * abs(kad(hums_a, hums_b, bandwidth=bandwidth))


def test_logmel_embedder_handles_rate_level_and_short_clips():
    rng = np.random.default_rng(3)
    clip = hum(rng)
    embedder = LogMelStatsEmbedder()
    base = embedder.embed([clip], RATE)
    import soxr

    resampled = embedder.embed([soxr.resample(clip, RATE, 44100)], 44100)
    quieter = embedder.embed([0.5 * clip], RATE)
    assert np.allclose(base, quieter, atol=1e-3)  # peak-normalised
    assert np.abs(base - resampled).max() < 1.0  # dB: same sound at another rate
    assert embedder.embed([clip[:800]], RATE).shape == (1, embedder.dim)  # a 50 ms event is one window
    with pytest.raises(ValueError, match="1-D"):
        embedder.embed([np.zeros((2, 3, 4))], RATE)


class FakeClapEncoder:
    """Test double for the CLAP stage's interface: encode_audio(waveforms, sample_rate) -> (n, d)."""

    def __init__(self):
        self.calls = []

    def encode_audio(self, waveforms: torch.Tensor, sample_rate: int) -> torch.Tensor:
        self.calls.append((tuple(waveforms.shape), sample_rate))
        energy = waveforms.pow(2).mean(dim=1, keepdim=True)
        brightness = (waveforms[:, 1:] - waveforms[:, :-1]).pow(2).mean(dim=1, keepdim=True)
        emb = torch.cat([energy, brightness, torch.ones_like(energy)], dim=1)
        return emb / emb.norm(dim=1, keepdim=True)


def test_clap_embedder_resamples_pads_and_batches():
    encoder = FakeClapEncoder()
    embedder = ClapAudioEmbedder(encoder, sample_rate=8000, clip_seconds=1.0, batch_size=2)
    rng = np.random.default_rng(0)
    emb = embedder.embed([hum(rng, 0.5), patter(rng, 1.5), hum(rng, 1.0)], RATE)
    assert emb.shape == (3, 3)
    assert encoder.calls == [((2, 8000), 8000), ((1, 8000), 8000)]
    scores = clap_scores(emb, emb[0])
    assert scores[0] == pytest.approx(1.0) and scores.shape == (3,)
    with pytest.raises(TypeError, match="encode_audio"):
        ClapAudioEmbedder(object(), 16000)


def test_make_embedder_names():
    assert make_embedder("logmel").name == "logmel32"
    with pytest.raises(ValueError, match="CLAP"):
        make_embedder("clap")
    with pytest.raises(ValueError, match="unknown embedder"):
        make_embedder("openl3")


# ---------------------------------------------------------------- evaluate_dirs


def test_evaluate_dirs_scores_each_class_and_is_json(tmp_path):
    rng = np.random.default_rng(0)
    def clips(make, n):
        return [make(rng) for _ in range(n)]

    reference = write_class_dir(tmp_path / "ref", {"MovingMotorVehicle": clips(hum, 5), "Rain": clips(patter, 5)})
    good = write_class_dir(tmp_path / "good", {"MovingMotorVehicle": clips(hum, 4), "rain": clips(patter, 4)})
    swapped = write_class_dir(tmp_path / "swapped", {"MovingMotorVehicle": clips(patter, 4), "Rain": clips(hum, 4)})
    encoder = FakeClapEncoder()
    text = {"MovingMotorVehicle": np.array([1.0, 0.0, 1.0]), "Rain": np.array([0.0, 1.0, 1.0])}
    clap = ClapAudioEmbedder(encoder, RATE)
    result = evaluate_dirs(good, reference, LogMelStatsEmbedder(), clap_embedder=clap, text_embeddings=text)
    bad = evaluate_dirs(swapped, reference, LogMelStatsEmbedder())
    json.dumps(result)
    assert list(result["classes"]) == ["MovingMotorVehicle", "Rain"]  # challenge order; "rain" folder read as Rain
    row = result["classes"]["Rain"]
    assert row["n_generated_clips"] == 4 and row["n_reference_clips"] == 5 and row["n_generated_embeddings"] == 12
    assert -1 <= row["clap_score"] <= 1 and "clap_score" in result["mean"]
    for name in ("MovingMotorVehicle", "Rain"):
        assert bad["classes"][name]["fad"] > 5 * result["classes"][name]["fad"]
        assert bad["classes"][name]["kad"] > result["classes"][name]["kad"]
    assert result["mean"]["fad"] == pytest.approx(np.mean([r["fad"] for r in result["classes"].values()]))


def test_evaluate_dirs_errors(tmp_path):
    rng = np.random.default_rng(0)
    gen = write_class_dir(tmp_path / "gen", {"Rain": [patter(rng) for _ in range(2)]})
    with pytest.raises(FileNotFoundError, match="Rain"):
        evaluate_dirs(gen, tmp_path / "nothing", LogMelStatsEmbedder())
    with pytest.raises(ValueError, match="VGGish"):
        evaluate_dirs(gen, "official", LogMelStatsEmbedder())


def test_fad_against_stats_equals_fad_of_the_same_stats():
    rng = np.random.default_rng(5)
    a, b = rng.standard_normal((50, 4)), rng.standard_normal((70, 4)) * 2
    mu, sigma = gaussian_stats(b)
    assert fad_against_stats(a, mu, sigma) == pytest.approx(fad(a, b), rel=1e-12)
