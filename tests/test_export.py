"""DCASE submission export and validation: a valid export passes; every kind of defect is named."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
from scipy.io import wavfile

from foley_core.export import (
    Problem,
    export_dcase,
    export_dcase_dir,
    format_problems,
    to_dcase_clip,
    validate_dcase,
    write_dcase_clip,
)

CLASSES = ("DogBark", "Rain")
N = 3  # clips per class in these tests (the real format asks for 100)


def model_clip(seed: int, seconds: float = 4.0, rate: int = 16000) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    return (0.5 * np.sin(2 * np.pi * rng.uniform(100, 1000) * t)).astype(np.float32)


@pytest.fixture
def submission(tmp_path):
    clips = {name: [model_clip(10 * c + i) for i in range(N)] for c, name in enumerate(CLASSES)}
    export_dcase(clips, 16000, tmp_path / "sub", clips_per_class=N)
    return tmp_path / "sub"


def validate(root):
    return validate_dcase(root, classes=CLASSES, clips_per_class=N)


def test_to_dcase_clip_resamples_to_exact_length_and_range():
    out = to_dcase_clip(model_clip(0, seconds=3.99), 16000)
    assert out.shape == (88200,) and out.dtype == np.float32
    assert to_dcase_clip(model_clip(0, seconds=4.5), 16000).shape == (88200,)
    loud = to_dcase_clip(3.0 * model_clip(1), 16000)
    assert loud.max() <= 1.0 and loud.min() >= -1.0
    # A 440 Hz tone stays at 440 Hz (resampled, not merely relabelled).
    tone = np.sin(2 * np.pi * 440 * np.arange(64000) / 16000).astype(np.float32)
    spectrum = np.abs(np.fft.rfft(to_dcase_clip(tone, 16000)))
    assert np.argmax(spectrum) * 22050 / 88200 == pytest.approx(440, abs=1)
    with pytest.raises(ValueError, match="mono"):
        to_dcase_clip(np.zeros((64000, 2)), 16000)
    with pytest.raises(ValueError, match="NaN"):
        to_dcase_clip(np.full(100, np.nan), 16000)


def test_written_clip_is_16_bit_mono_22050_and_scipy_reads_it(tmp_path):
    path = write_dcase_clip(tmp_path / "000.wav", model_clip(0), 16000)
    info = sf.info(path)
    assert (info.samplerate, info.channels, info.subtype, info.frames) == (22050, 1, "PCM_16", 88200)
    rate, data = wavfile.read(path)  # how the official FAD tool reads it
    assert rate == 22050 and data.dtype == np.int16 and data.shape == (88200,)
    assert not list(tmp_path.glob(".*"))  # no temporary file left behind


def test_valid_export_passes(submission):
    assert validate(submission) == []
    assert sorted(p.name for p in (submission / "Rain").iterdir()) == ["000.wav", "001.wav", "002.wav"]


def test_re_export_with_fewer_clips_removes_stale_numbered_clips(submission):
    export_dcase({"Rain": [model_clip(i) for i in range(2)]}, 16000, submission, clips_per_class=2)
    assert sorted(p.name for p in (submission / "Rain").iterdir()) == ["000.wav", "001.wav"]
    with pytest.raises(ValueError, match="Rain"):
        export_dcase({"Rain": [model_clip(0)]}, 16000, submission, clips_per_class=2)


def _only(problems: list[Problem]) -> Problem:
    assert len(problems) == 1, format_problems(problems)
    return problems[0]


def test_wrong_rate_is_named(submission):
    bad = submission / "DogBark" / "001.wav"
    sf.write(bad, np.zeros(64000, np.float32), 16000, subtype="PCM_16")  # 4 s, but at 16 kHz
    problems = validate(submission)
    assert {(p.path, p.problem) for p in problems} == {(bad, "wrong_rate"), (bad, "wrong_length")}
    assert "16000 Hz" in format_problems(problems)


def test_stereo_is_named(submission):
    bad = submission / "Rain" / "002.wav"
    sf.write(bad, np.zeros((88200, 2), np.float32), 22050, subtype="PCM_16")
    problem = _only(validate(submission))
    assert (problem.path, problem.problem) == (bad, "not_mono")


def test_short_clip_is_named(submission):
    bad = submission / "Rain" / "000.wav"
    sf.write(bad, np.zeros(88199, np.float32), 22050, subtype="PCM_16")
    problem = _only(validate(submission))
    assert (problem.path, problem.problem) == (bad, "wrong_length") and "88199" in problem.detail


def test_24_bit_is_named(submission):
    bad = submission / "DogBark" / "002.wav"
    sf.write(bad, np.zeros(88200, np.float32), 22050, subtype="PCM_24")
    problem = _only(validate(submission))
    assert (problem.path, problem.problem) == (bad, "wrong_bit_depth") and "PCM_24" in problem.detail


def test_missing_clip_and_missing_class_are_named(submission):
    (submission / "DogBark" / "001.wav").unlink()
    problem = _only(validate(submission))
    assert (problem.path, problem.problem) == (submission / "DogBark", "wrong_count") and "2 wav files" in problem.detail
    problems = validate_dcase(submission, classes=(*CLASSES, "GunShot"), clips_per_class=N)
    assert (submission / "GunShot", "missing_class_folder") in {(p.path, p.problem) for p in problems}


def test_unreadable_unexpected_and_badly_named_files_are_named(submission):
    (submission / "Rain" / "001.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    (submission / "Rain" / "notes.txt").write_text("not audio")
    (submission / "Rain" / ".DS_Store").write_bytes(b"ignored, as `ls *` ignores it")
    sf.write(submission / "DogBark" / "take 4.wav", np.zeros(88200, np.float32), 22050, subtype="PCM_16")
    (submission / "Extra").mkdir()
    found = {(p.path.name, p.problem) for p in validate(submission)}
    assert found == {
        ("001.wav", "unreadable"),
        ("notes.txt", "unexpected_file"),
        ("take 4.wav", "unexpected_name"),
        ("DogBark", "wrong_count"),  # 4 wav files now
        ("Extra", "unexpected_folder"),
    }


def test_flac_named_wav_is_named(submission):
    bad = submission / "Rain" / "001.wav"
    sf.write(bad, np.zeros(88200, np.float32), 22050, format="FLAC", subtype="PCM_16")
    problem = _only(validate(submission))
    assert (problem.path, problem.problem) == (bad, "not_wav")


def test_export_dcase_dir_converts_messy_sources(tmp_path):
    source = tmp_path / "selected"
    for name in CLASSES:
        (source / name).mkdir(parents=True)
        for i in range(N):
            sf.write(source / name / f"clip{i}.wav", model_clip(i, seconds=3.0 + i, rate=44100), 44100)
    stereo = np.stack([model_clip(9, rate=48000)] * 2, axis=1)
    sf.write(source / "Rain" / "clip1b.ogg", stereo, 48000, format="OGG", subtype="VORBIS")
    written = export_dcase_dir(source, tmp_path / "out", classes=CLASSES, clips_per_class=N)
    assert [p.name for p in written["Rain"]] == ["000.wav", "001.wav", "002.wav"]
    assert validate(tmp_path / "out") == []
    with pytest.raises(FileNotFoundError, match="GunShot"):
        export_dcase_dir(source, tmp_path / "out2", classes=(*CLASSES, "GunShot"), clips_per_class=N)


def test_missing_submission_folder(tmp_path):
    assert _only(validate(tmp_path / "absent")).problem == "missing_folder"
