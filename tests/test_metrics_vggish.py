"""VGGish: the official DCASE pre-processing, the network, loading weights from a file.

Weights are tiny random VGGish variants saved to a tmp file and loaded through the same
entry point as torchvggish's vggish-10086976.pth (widths are read from the file).
"""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch
from vggish_fixtures import make_tiny_vggish_weights

from foley_core.metrics import evaluate_dirs
from foley_core.metrics.vggish import (
    VGGish,
    VGGishEmbedder,
    VGGishWeightsError,
    examples_from_samples,
    log_mel,
    mel_matrix,
    normalise_like_official,
)

DCASE_SAMPLES = 88200


@pytest.fixture
def tiny_weights(tmp_path):
    return make_tiny_vggish_weights(tmp_path / "vggish-tiny.pth")


def clip(seed: int, n: int = DCASE_SAMPLES) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(n) / 22050
    return (0.4 * np.sin(2 * np.pi * rng.uniform(200, 2000) * t) + 0.05 * rng.standard_normal(n)).astype(np.float32)


def test_standard_architecture_matches_torchvggish():
    model = VGGish()
    assert sum(p.numel() for p in model.parameters()) == 72_141_184
    keys = [k for k in model.state_dict() if k.endswith("weight")]
    assert keys == [f"features.{i}.weight" for i in (0, 3, 6, 8, 11, 13)] + [f"embeddings.{i}.weight" for i in (0, 2, 4)]
    torch.manual_seed(0)
    out = model(torch.randn(2, 1, 96, 64))
    assert out.shape == (2, 128)
    assert (out < 0).any()  # linear embedding layer, like the official model (no final ReLU)


def test_log_mel_matches_a_hand_computation():
    rng = np.random.default_rng(0)
    samples = rng.standard_normal(16000)
    frame_index = 7
    frame = samples[frame_index * 160 : frame_index * 160 + 400]
    window = np.hanning(401)[:-1]  # periodic Hann of length 400
    k = np.arange(257)
    n = np.arange(400)
    dft = np.abs(np.exp(-2j * np.pi * np.outer(k, n) / 512) @ (frame * window))  # 512-point DFT, by definition
    # Triangular HTK-mel filters, 64 bands between 125 and 7500 Hz, computed one by one.
    to_mel = lambda f: 1127.0 * np.log(1 + f / 700.0)  # noqa: E731
    edges = np.linspace(to_mel(125.0), to_mel(7500.0), 66)
    bin_mel = to_mel(k * 8000.0 / 256)
    weights = np.zeros((257, 64))
    for band in range(64):
        lo, mid, hi = edges[band : band + 3]
        for b in range(1, 257):  # DC bin carries no weight
            m = bin_mel[b]
            weights[b, band] = max(0.0, min((m - lo) / (mid - lo), (hi - m) / (hi - mid)))
    expected = np.log(dft @ weights + 0.01)
    assert np.allclose(mel_matrix(), weights, atol=1e-12)
    features = log_mel(samples)
    assert features.shape == (98, 64)
    assert np.allclose(features[frame_index], expected, atol=1e-9)


def test_official_examples_are_ten_half_overlapping_windows_without_resampling():
    samples = clip(1).astype(np.float64) * 32767
    samples[100] = -40000.0  # a larger negative peak: the tool divides by the positive max
    examples = examples_from_samples(samples)
    assert examples.shape == (10, 96, 64)
    normalised = samples / samples.max()
    assert np.allclose(normalise_like_official(samples), normalised)
    for index in (0, 4, 9):
        start = index * 8000
        assert np.allclose(examples[index], log_mel(normalised[start : start + 16000])[:96])
    # Near-silence is amplified by at most 20 dB.
    assert normalise_like_official(np.full(10, 0.01)).max() == pytest.approx(0.1)
    assert examples_from_samples(np.ones(5000)).shape == (1, 96, 64)  # short: padded to one window


def test_embedder_shapes_determinism_and_file_equivalence(tiny_weights, tmp_path):
    first = VGGishEmbedder(tiny_weights)
    second = VGGishEmbedder(tiny_weights)
    clips = [clip(1), clip(2)]
    emb = first.embed(clips, 22050)
    assert emb.shape == (20, 128) and emb.dtype == np.float64
    assert np.array_equal(emb, second.embed(clips, 22050))
    assert first.matches_official and first.name == "vggish"
    # The same clip, written as 16-bit PCM and read the official way (scipy), embeds identically.
    from foley_core.export import write_dcase_clip

    paths = [write_dcase_clip(tmp_path / f"{i:03d}.wav", c, 22050) for i, c in enumerate(clips)]
    assert np.array_equal(first.embed_files(paths), emb)
    # The network sees exactly the official examples of the int16-scaled samples.
    ints = np.round(np.clip(clips[0], -1, 1) * 32767)
    with torch.inference_mode():
        direct = first.model(torch.from_numpy(examples_from_samples(ints).astype(np.float32)).unsqueeze(1)).double().numpy()
    assert np.allclose(emb[:10], direct, atol=1e-6)
    # Another rate is first brought to 22,050 Hz (then fed as-is, like the DCASE tool).
    assert first.embed([clip(3, 64000)], 16000).shape == (10, 128)


def test_conventional_16k_mode_and_pca_postprocessing(tiny_weights, tmp_path):
    conventional = VGGishEmbedder(tiny_weights, official_preprocessing=False)
    assert conventional.name == "vggish-16k" and not conventional.matches_official
    assert conventional.embed([clip(1)], 22050).shape == (7, 128)  # 4 s at 16 kHz: 7 windows
    rng = np.random.default_rng(0)
    pca_path = tmp_path / "pca.npz"
    q, _ = np.linalg.qr(rng.standard_normal((128, 128)))
    np.savez(pca_path, pca_eigen_vectors=q, pca_means=rng.standard_normal((128, 1)))
    with_pca = VGGishEmbedder(tiny_weights, pca_params=pca_path)
    emb = with_pca.embed([clip(1)], 22050)
    assert with_pca.name == "vggish-pca" and not with_pca.matches_official
    assert emb.min() >= 0 and emb.max() <= 255 and np.array_equal(emb, np.round(emb))


def test_missing_or_wrong_weights_fail_clearly(tmp_path, monkeypatch):
    monkeypatch.delenv("FOLEY_VGGISH_WEIGHTS", raising=False)
    with pytest.raises(VGGishWeightsError, match="vggish-10086976.pth"):
        VGGishEmbedder(None)
    with pytest.raises(VGGishWeightsError, match="not found"):
        VGGishEmbedder(tmp_path / "absent.pth")
    torch.save({"conv.weight": torch.zeros(3)}, tmp_path / "other.pth")
    with pytest.raises(VGGishWeightsError, match="not a VGGish state dict"):
        VGGishEmbedder(tmp_path / "other.pth")


def test_weights_from_env_and_safetensors(tiny_weights, tmp_path, monkeypatch):
    from safetensors.torch import save_file

    state = torch.load(tiny_weights, weights_only=True)
    save_file(state, tmp_path / "vggish.safetensors")
    monkeypatch.setenv("FOLEY_VGGISH_WEIGHTS", str(tmp_path / "vggish.safetensors"))
    assert np.array_equal(VGGishEmbedder().embed([clip(1)], 22050), VGGishEmbedder(tiny_weights).embed([clip(1)], 22050))


def test_evaluate_against_official_statistics(tiny_weights, tmp_path):
    for name, seed in (("DogBark", 1), ("Rain", 2)):
        (tmp_path / "gen" / name).mkdir(parents=True)
        for i in range(2):
            sf.write(tmp_path / "gen" / name / f"{i:03d}.wav", clip(seed * 10 + i), 22050, subtype="PCM_16")
    result = evaluate_dirs(tmp_path / "gen", "official", VGGishEmbedder(tiny_weights))
    assert result["reference"] == "official"
    for row in result["classes"].values():
        assert row["n_generated_embeddings"] == 20 and row["n_reference_embeddings"] == 1000
        assert np.isfinite(row["fad"]) and row["kad"] is None
    assert result["mean"]["kad"] is None and np.isfinite(result["mean"]["fad"])
