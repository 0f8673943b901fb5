"""precision: auto — bf16 only where the CPU runs it natively, recorded, part of the version."""

import json

import pytest
import torch

from foley_core.core import hardware
from foley_core.core.config import load_profile
from foley_core.ldm.data import LatentConditions, MelCrops, VocoderSegments, event_anchors

AVX2_FLAGS = {"sse4_2", "avx", "avx2", "fma"}  # an AMD EPYC (Zen 2) or older Intel
SPR_FLAGS = AVX2_FLAGS | {"avx512f", "avx512bw", "avx512_bf16", "amx_bf16", "amx_tile"}  # Sapphire Rapids


def test_detection_reads_flags_and_both_caps():
    assert not hardware.detect_cpu_precision(AVX2_FLAGS, "AVX2", "ALL").native_bf16
    assert hardware.detect_cpu_precision(SPR_FLAGS, "AVX512", "ALL").native_bf16
    # AVX-512 without its bf16 extension (Skylake-X, Ice Lake): emulated, fp32
    assert not hardware.detect_cpu_precision(AVX2_FLAGS | {"avx512f", "avx512bw"}, "AVX512", "ALL").native_bf16
    # the emulation of an AVX2 CPU on a native one: either cap turns bf16 off, and the reason names it
    capped = hardware.detect_cpu_precision(SPR_FLAGS, "AVX2", "ALL")
    assert not capped.native_bf16 and "ATEN_CPU_CAPABILITY" in capped.reason
    capped = hardware.detect_cpu_precision(SPR_FLAGS, "AVX512", "AVX2")
    assert not capped.native_bf16 and "ONEDNN_MAX_CPU_ISA" in capped.reason
    assert hardware.detect_cpu_precision(SPR_FLAGS, "AVX512", "AVX512_CORE_BF16").native_bf16


def test_this_machine_is_judged_from_its_real_flags():
    flags = hardware.cpu_flags()
    native = hardware.this_cpu().native_bf16
    if not flags & {"avx512_bf16", "amx_bf16"}:
        assert not native  # this CPU has no bf16 instructions: auto must never pick bf16 here
    if hardware.aten_capability() in {"DEFAULT", "AVX2"}:
        assert not native  # PyTorch runs no AVX-512 kernels here (or ATEN_CPU_CAPABILITY caps them)


@pytest.fixture
def cpu_kind(monkeypatch):
    """Pretend the CPU is AVX2-only or native bf16 (the capability check mocked, no GPU)."""
    def use(native: bool) -> None:
        reason = "native avx512_bf16 (mocked)" if native else "no avx512_bf16 (mocked)"
        monkeypatch.setattr(hardware, "this_cpu", lambda: hardware.CpuPrecision(native, reason))
        monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    return use


def test_auto_gives_fp32_on_avx2_and_bf16_on_native(cpu_kind):
    cpu_kind(False)
    avx2 = load_profile("cpu")
    assert (avx2.clap.precision, avx2.ldm.vae.precision, avx2.ldm.unet.precision, avx2.finetune.precision) == ("32-true",) * 4
    assert avx2.generation.precision == "fp32"
    cpu_kind(True)
    native = load_profile("cpu")
    assert (native.clap.precision, native.ldm.vae.precision, native.ldm.unet.precision) == ("bf16-mixed",) * 3
    assert native.generation.precision == "bf16"
    assert native.ldm.vocoder.precision == "32-true"  # set explicitly: bf16 does not speed the vocoder up
    # two kinds of CPU, two code versions and fingerprints for the models auto decides
    for section in ("clap", "ldm", "finetune", "generation"):
        assert avx2.fingerprint(section) != native.fingerprint(section)
    assert avx2.fingerprint("audio", "classes") == native.fingerprint("audio", "classes")
    assert native.precision_resolved["ldm.unet.precision"] == "bf16-mixed"
    assert "mocked" in native.precision_resolved["reason"]


def test_an_explicit_value_wins(cpu_kind):
    cpu_kind(False)
    profile = load_profile("cpu", {"clap": {"precision": "bf16-mixed"}, "generation": {"precision": "bf16"}})
    assert profile.clap.precision == "bf16-mixed" and profile.generation.precision == "bf16"
    assert profile.ldm.unet.precision == "32-true"  # still auto
    assert "clap.precision" not in profile.precision_resolved
    smoke = load_profile("smoke")  # no auto anywhere: nothing resolved, nothing recorded
    assert smoke.precision_resolved == {}
    with pytest.raises(Exception, match="filled on load"):
        load_profile("smoke", {"precision_resolved": {"clap.precision": "bf16-mixed"}})


def test_auto_on_a_gpu_follows_the_card(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)  # e.g. a V100 or T4
    assert hardware.resolve_training_precision("auto", "gpu") == ("16-mixed", "CUDA card without bf16")
    assert hardware.resolve_sampling_precision("auto", "cuda:1")[0] == "fp16"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert hardware.resolve_training_precision("auto", "auto")[0] == "bf16-mixed"


def test_precision_summary_is_what_the_record_and_report_show(cpu_kind):
    cpu_kind(False)
    summary = load_profile("cpu").precision_summary()
    assert summary["unet"] == "32-true" and summary["sampling"] == "fp32" and summary["vocoder"] == "32-true"
    assert "mocked" in summary["auto"] and summary["cpu"]
    json.dumps(summary)  # it goes into metrics.json and pipeline.json


def test_latent_crops_are_seeded_windows_of_the_clip():
    means = torch.arange(2 * 3 * 100 * 4, dtype=torch.float32).reshape(2, 3, 100, 4)
    data = LatentConditions(means, means + 0.5, torch.zeros(2, 8), crop_frames=48)
    mean, std, condition = data[(1, (7, 1))]
    assert mean.shape == (3, 48, 4) and std.shape == (3, 48, 4) and condition.shape == (8,)
    start = int((mean[0, 0, 0] - means[1, 0, 0, 0]) // 4)
    assert torch.equal(mean, means[1, :, start:start + 48]) and torch.equal(std, mean + 0.5)
    assert torch.equal(data[(1, (7, 1))][0], mean)  # the same draw key crops the same window (exact resume)
    starts = {int(data[(0, (s, 0))][0][0, 0, 0]) // 4 for s in range(20)}
    assert len(starts) > 5  # and different keys different windows
    whole = LatentConditions(means, means, torch.zeros(2, 8))
    assert whole[1][0].shape == (3, 100, 4)


def _one_event_log_mels(frames: int = 400, event: slice = slice(300, 312)) -> torch.Tensor:
    """Two clips of near silence (log-mel -11.5) with one loud event of 12 frames in the first."""
    log_mels = torch.full((2, 1, frames, 8), -11.5)
    log_mels[0, 0, event] = 0.0
    return log_mels


def test_event_anchors_put_half_the_crops_on_the_event_and_keep_silence():
    log_mels = _one_event_log_mels()
    cdf = event_anchors(log_mels, 100)  # pooled to latent resolution: the event is latent frames 75-77
    assert cdf.shape == (2, 100) and (cdf[:, -1] == 1.0).all() and (cdf[:, 1:] >= cdf[:, :-1]).all()
    mass = cdf[0, 77] - cdf[0, 74]
    assert 0.5 < mass < 0.52  # the power half, plus the uniform half's share of 3 frames
    assert abs(cdf[1, 49] - 0.5) < 1e-9  # an eventless clip: uniform
    means = torch.zeros(2, 3, 100, 4)
    means[0, :, 75:78] = 1.0
    data = LatentConditions(means, means, torch.zeros(2, 8), crop_frames=24, anchors=cdf)
    hits = [bool(data[(0, (s, 0))][0].sum() > 0) for s in range(400)]
    uniform = LatentConditions(means, means, torch.zeros(2, 8), crop_frames=24)
    uniform_hits = [bool(uniform[(0, (s, 0))][0].sum() > 0) for s in range(400)]
    # uniform 24-frame crops of 100 hold the event ~34 % of the time; anchored ones >= 50 % + the uniform half's ~17 %
    assert sum(uniform_hits) / 400 < 0.45 < 0.6 < sum(hits) / 400 < 0.8
    assert data[(0, (3, 1))][0].shape == (3, 24, 4) and torch.equal(data[(0, (3, 1))][0], data[(0, (3, 1))][0])
    with pytest.raises(ValueError, match="anchors must be"):
        LatentConditions(means, means, torch.zeros(2, 8), crop_frames=24, anchors=cdf[:, :50])


def test_vae_and_vocoder_crops_are_anchored_on_events():
    log_mels = _one_event_log_mels()
    images = MelCrops(log_mels, 48, event_anchors(log_mels, 400))
    assert sum(bool((images[(0, (s, 0))] > -1).any()) for s in range(300)) / 300 > 0.55  # uniform: ~0.15
    segments = VocoderSegments(log_mels, torch.zeros(2, 400 * 10), 32, 10)
    mel, wave = segments[(0, (5, 2))]
    assert mel.shape == (32, 8) and wave.shape == (320,)
    assert sum(bool((segments[(0, (s, 0))][0] > -1).any()) for s in range(300)) / 300 > 0.5  # uniform: ~0.11
