"""Tests for the procedural Foley synthesiser (numpy/scipy/soundfile only, fast)."""

from __future__ import annotations

import csv
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from scipy import signal

from foley_core.data.synth import (
    DCASE_SOUND_TYPES,
    EXTRA_SOUND_TYPES,
    SOUND_TYPES,
    SynthClip,
    clip_seed,
    synthesize_clip,
    write_synthetic_corpus,
)

SR = 16000
DUR = 3.0


@lru_cache(maxsize=None)
def _clip(sound_type: str, index: int, seed: int = 0) -> SynthClip:
    return synthesize_clip(sound_type, index, sample_rate=SR, duration_s=DUR, seed=seed)


# --------------------------------------------------------------------------- API basics


def test_sound_type_tuples() -> None:
    assert DCASE_SOUND_TYPES == (
        "DogBark", "Footstep", "GunShot", "Keyboard", "MovingMotorVehicle", "Rain", "Sneeze_Cough",
    )
    assert {"Bell", "Water", "Wind", "Bird", "DoorKnock", "Siren"} <= set(EXTRA_SOUND_TYPES)
    assert SOUND_TYPES == DCASE_SOUND_TYPES + EXTRA_SOUND_TYPES
    assert len(set(SOUND_TYPES)) == len(SOUND_TYPES)


def test_clip_seed_is_stable_and_distinct() -> None:
    # A fixed value guards against accidental use of salted hash() or a changed recipe.
    assert clip_seed(0, "DogBark", 0) == clip_seed(0, "DogBark", 0)
    assert clip_seed(0, "DogBark", 0) == 11137670176246170054
    seeds = {clip_seed(s, t, i) for s in (0, 1) for t in SOUND_TYPES for i in range(5)}
    assert len(seeds) == 2 * len(SOUND_TYPES) * 5


@pytest.mark.parametrize("sound_type", SOUND_TYPES)
def test_clip_shape_dtype_level(sound_type: str) -> None:
    for index in range(3):
        clip = _clip(sound_type, index)
        assert clip.sound_type == sound_type and clip.index == index
        assert clip.audio.dtype == np.float32
        assert clip.audio.shape == (round(DUR * SR),)
        assert np.isfinite(clip.audio).all()
        peak = float(np.max(np.abs(clip.audio)))
        assert 0.3 - 1e-6 <= peak <= 0.99
        rms = float(np.sqrt(np.mean(clip.audio.astype(np.float64) ** 2)))
        assert rms > 1e-3 * peak * 10  # far above the -60 dB noise floor: there is a real event
        assert isinstance(clip.caption, str) and len(clip.caption.split()) >= 2
        assert "{" not in clip.caption and "  " not in clip.caption


@pytest.mark.parametrize("duration_s,sample_rate", [(1.0, 16000), (0.37, 22050), (2.0, 44100), (0.5, 8000)])
def test_other_durations_and_rates(duration_s: float, sample_rate: int) -> None:
    for sound_type in SOUND_TYPES:
        clip = synthesize_clip(sound_type, 1, sample_rate=sample_rate, duration_s=duration_s)
        assert clip.audio.shape == (round(duration_s * sample_rate),)
        assert np.isfinite(clip.audio).all()
        assert 0.3 - 1e-6 <= np.max(np.abs(clip.audio)) <= 0.99


def test_determinism_and_independence() -> None:
    a = synthesize_clip("Rain", 3, duration_s=1.0, seed=7)
    b = synthesize_clip("Rain", 3, duration_s=1.0, seed=7)
    assert np.array_equal(a.audio, b.audio) and a.caption == b.caption
    # Clip 3 must not depend on which clips were made before it (or on the order).
    for index in (5, 0, 2):
        synthesize_clip("Rain", index, duration_s=1.0, seed=7)
    c = synthesize_clip("Rain", 3, duration_s=1.0, seed=7)
    assert np.array_equal(a.audio, c.audio)
    assert not np.array_equal(a.audio, synthesize_clip("Rain", 3, duration_s=1.0, seed=8).audio)
    assert not np.array_equal(a.audio, synthesize_clip("Rain", 4, duration_s=1.0, seed=7).audio)


def test_clips_vary_within_class() -> None:
    for sound_type in SOUND_TYPES:
        clips = [_clip(sound_type, i) for i in range(6)]
        assert len({c.audio.tobytes() for c in clips}) == 6
    captions = {_clip(t, i).caption for t in DCASE_SOUND_TYPES for i in range(12)}
    assert len(captions) >= 0.6 * 12 * len(DCASE_SOUND_TYPES)


def test_unknown_type_raises() -> None:
    with pytest.raises(ValueError, match="Helicopter") as info:
        synthesize_clip("Helicopter", 0)
    assert "DogBark" in str(info.value)
    with pytest.raises(ValueError, match="Helicopter"):
        write_synthetic_corpus(Path("/nonexistent-never-created"), ["DogBark", "Helicopter"], 1)


def test_invalid_arguments_raise() -> None:
    with pytest.raises(ValueError):
        synthesize_clip("Rain", 0, duration_s=0.0)
    with pytest.raises(ValueError):
        synthesize_clip("Rain", -1)
    with pytest.raises(ValueError):
        synthesize_clip("Rain", 0, sample_rate=1000)


def test_captions_reflect_variant() -> None:
    counts = ("once", "twice", "one", "two", "three", "four", "single")
    for index in range(20):
        caption = _clip("DogBark", index).caption
        assert any(w in caption for w in ("bark", "yaps", "woofs"))
        assert any(w in caption for w in counts)
        foot = _clip("Footstep", index).caption
        assert any(w in foot for w in ("snow", "gravel", "stones", "concrete", "pavement", "wood", "floorboards"))
        assert any(w in _clip("GunShot", index).caption for w in ("gun", "shot"))
        assert "keyboard" in _clip("Keyboard", index).caption
        assert any(w in _clip("Rain", index).caption for w in ("rain", "drizzle", "downpour"))
        assert any(w in _clip("Sneeze_Cough", index).caption for w in ("cough", "sneeze"))


# --------------------------------------------------------------------------- corpus writer


def test_write_synthetic_corpus(tmp_path: Path) -> None:
    types = ["Rain", "DogBark", "Bell"]
    csv_path = write_synthetic_corpus(tmp_path / "corpus", types, 3, duration_s=0.5, seed=3)
    root = tmp_path / "corpus"
    assert csv_path == root / "captions.csv"
    with open(csv_path, newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == ["path", "caption", "class"]
    body = rows[1:]
    assert [r[0] for r in body] == sorted(r[0] for r in body)
    assert {r[0] for r in body} == {f"{t}/{t}_{i:04d}.wav" for t in types for i in range(3)}
    for rel, caption, cls in body:
        assert rel.startswith(f"{cls}/") and caption
        info = sf.info(str(root / rel))
        assert (info.samplerate, info.channels, info.frames, info.subtype) == (16000, 1, 8000, "PCM_16")
        audio, _ = sf.read(str(root / rel), dtype="float32")
        clip = synthesize_clip(cls, int(rel[-8:-4]), duration_s=0.5, seed=3)
        assert np.max(np.abs(audio - clip.audio)) < 1e-4  # 16-bit quantisation only
        assert caption == clip.caption
    assert not list(root.rglob("*.tmp"))

    before = {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}
    write_synthetic_corpus(root, types, 3, duration_s=0.5, seed=3)
    after = {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}
    assert before == after


def test_corpus_clip_independent_of_count(tmp_path: Path) -> None:
    write_synthetic_corpus(tmp_path / "a", ["Keyboard"], 1, duration_s=0.5)
    write_synthetic_corpus(tmp_path / "b", ["Keyboard"], 2, duration_s=0.5)
    rel = "Keyboard/Keyboard_0000.wav"
    assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes()


# --------------------------------------------------------------------------- acoustic checks


def _features(audio: np.ndarray) -> np.ndarray:
    """Level-independent log band-energy shape plus temporal-envelope statistics."""
    x = audio.astype(np.float64)
    freqs, _, spec = signal.stft(x, fs=SR, nperseg=512, noverlap=256)
    power = np.abs(spec) ** 2 + 1e-12
    edges = np.geomspace(60, SR / 2, 11)
    bands = np.stack([power[(freqs >= lo) & (freqs < hi)].sum(axis=0) for lo, hi in zip(edges[:-1], edges[1:])])
    frame_db = 10 * np.log10(bands.sum(axis=0))
    env = frame_db - frame_db.max()
    active = env > -25
    shape = 10 * np.log10(bands[:, active]) - frame_db[active]
    onsets = np.sum(np.diff(env) > 6) / DUR
    # Rhythm: how strongly the loudness envelope repeats at a walking/running step period.
    lin = 10 ** (env / 20)
    lin = lin - lin.mean()
    ac = np.correlate(lin, lin, mode="full")[lin.size - 1 :]
    ac /= ac[0] + 1e-12
    hop_s = 256 / SR
    rhythm = ac[int(0.25 / hop_s) : int(0.8 / hop_s)].max()
    # Modulation spectrum of the envelope: event rate (steps ~2 Hz, typing ~8 Hz, rain flat).
    mod_power = np.abs(np.fft.rfft(lin * np.hanning(lin.size))) ** 2
    mod_freqs = np.fft.rfftfreq(lin.size, hop_s)
    mod_edges = (0.3, 1.0, 2.0, 4.0, 8.0, 16.0, 31.0)
    mod = np.array([mod_power[(mod_freqs >= lo) & (mod_freqs < hi)].sum() for lo, hi in zip(mod_edges[:-1], mod_edges[1:])])
    mod_db = 10 * np.log10(mod / (mod.sum() + 1e-12) + 1e-6)
    return np.concatenate(
        [
            shape.mean(axis=1),
            shape.std(axis=1),
            [env.std(), *np.percentile(env, [10, 50, 90]), active.mean(), onsets, np.abs(np.diff(env)).mean()],
            [rhythm],
            mod_db,
        ]
    )


def test_nearest_centroid_separates_dcase_classes() -> None:
    train = {t: np.stack([_features(_clip(t, i).audio) for i in range(8)]) for t in DCASE_SOUND_TYPES}
    all_train = np.concatenate(list(train.values()))
    mean, std = all_train.mean(axis=0), all_train.std(axis=0) + 1e-9
    centroids = np.stack([((f - mean) / std).mean(axis=0) for f in train.values()])
    correct = total = 0
    for label, sound_type in enumerate(DCASE_SOUND_TYPES):
        for index in range(100, 104):  # clips never seen in training
            z = (_features(_clip(sound_type, index).audio) - mean) / std
            correct += int(np.argmin(np.linalg.norm(centroids - z, axis=1)) == label)
            total += 1
    accuracy = correct / total
    print(f"nearest-centroid accuracy on held-out DCASE clips: {accuracy:.3f}")
    assert accuracy >= 0.85


def _pitch_strength(audio: np.ndarray) -> float:
    """Median normalised autocorrelation peak (past the first zero crossing) over loud frames."""
    x = audio.astype(np.float64)
    frame, hop = 1024, 256
    starts = range(0, x.size - frame, hop)
    energy = np.array([np.sum(x[s : s + frame] ** 2) for s in starts])
    loud = [s for s, e in zip(starts, energy) if e >= energy.max() * 0.1]
    window = np.hanning(frame)
    strengths = []
    for s in loud:
        seg = x[s : s + frame] * window
        spec = np.fft.rfft(seg, 2 * frame)
        ac = np.fft.irfft(np.abs(spec) ** 2)[:frame]
        ac /= ac[0] + 1e-12
        max_lag = SR // 60
        negative = np.nonzero(ac[:max_lag] < 0)[0]
        strengths.append(float(ac[negative[0] : max_lag].max()) if negative.size else 0.0)
    return float(np.median(strengths))


def test_dog_bark_is_harmonic() -> None:
    dog = np.mean([_pitch_strength(_clip("DogBark", i).audio) for i in range(6)])
    rain = np.mean([_pitch_strength(_clip("Rain", i).audio) for i in range(6)])
    gun = np.mean([_pitch_strength(_clip("GunShot", i).audio) for i in range(6)])
    print(f"pitch strength: dog {dog:.2f} rain {rain:.2f} gunshot {gun:.2f}")
    assert dog > 0.5
    assert dog > rain + 0.25 and dog > gun + 0.25
