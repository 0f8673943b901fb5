"""Shared fixtures: a smoke profile pointed at a tmp dir, and messy audio files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import yaml

from foley_core.core.config import load_profile


def tone(seconds: float, rate: int, freq: float = 440.0, channels: int = 1, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    mono = (amp * np.sin(2 * np.pi * freq * t) * np.exp(-t)).astype(np.float32)
    return np.stack([mono] * channels, axis=1) if channels > 1 else mono


@pytest.fixture
def smoke_profile(tmp_path):
    def make(sources: list[dict] | None = None, **overrides):
        base = {"paths": {"data_dir": str(tmp_path / "data"), "artifacts_dir": str(tmp_path / "artifacts")}}
        if sources is not None:
            base["data"] = {"sources": sources}
        for key, value in overrides.items():
            base.setdefault(key, {}).update(value)
        return load_profile("smoke", base)

    return make


@pytest.fixture
def bare_profile(tmp_path) -> Path:
    """A profile file: the smoke profile pointed at an empty artifacts folder (no CLAP, no model)."""
    profile = load_profile("smoke").model_dump(mode="json")
    profile["paths"] = {"data_dir": str(tmp_path / "data"), "artifacts_dir": str(tmp_path / "artifacts"),
                        "outputs_dir": str(tmp_path / "outputs")}
    path = tmp_path / "bare.yaml"
    path.write_text(yaml.safe_dump(profile))
    return path


@pytest.fixture
def messy_source(tmp_path) -> Path:
    """A DCASE-layout folder with every kind of file ingestion must handle."""
    root = tmp_path / "messy"
    (root / "DogBark").mkdir(parents=True)
    (root / "GunShot").mkdir()
    (root / "Keyboard").mkdir()
    (root / "Cat").mkdir()
    sf.write(root / "DogBark/mono16k.wav", tone(0.8, 16000), 16000)
    sf.write(root / "DogBark/stereo44k.wav", tone(0.9, 44100, 300, channels=2), 44100)
    sf.write(root / "DogBark/vorbis.ogg", tone(0.7, 22050, 500), 22050, format="OGG", subtype="VORBIS")
    sf.write(root / "Keyboard/lame.mp3", tone(0.9, 44100, 2000), 44100, format="MP3", subtype="MPEG_LAYER_III")
    sf.write(root / "GunShot/short.wav", tone(0.05, 22050, 100), 22050)  # a very short event: padded
    sf.write(root / "GunShot/long.wav", tone(3.5, 16000, 150) + 0.05, 16000)  # 3.5 clips long: cut into windows
    (root / "GunShot/corrupt.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk" + bytes(200))
    sf.write(root / "GunShot/empty.wav", np.zeros(0, dtype=np.float32), 16000)
    sf.write(root / "GunShot/silent.wav", np.zeros(16000, dtype=np.float32), 16000)
    nan = tone(0.5, 16000)
    nan[100] = np.nan
    sf.write(root / "Keyboard/nan.wav", nan, 16000, subtype="FLOAT")
    (root / "Keyboard/not-really.mp3").write_text("this is a text file with an audio extension")
    sf.write(root / "Cat/meow.wav", tone(0.5, 16000, 700), 16000)  # not a configured class
    (root / "Keyboard/LICENSE.txt").write_text("MIT")  # non-audio: ignored, not counted
    return root


def smoke_overrides(root: Path) -> dict:
    """The smoke profile with every path under ``root`` and a small synthetic corpus."""
    return {
        "paths": {"data_dir": str(root / "data"), "artifacts_dir": str(root / "artifacts"), "outputs_dir": str(root / "outputs")},
        "data": {"sources": [{"kind": "synthetic", "path": str(root / "data/synthetic"), "clips_per_class": 4,
                              "extra_types": ["Bell"], "clips_per_extra_type": 2}], "extra_classes": ["Bell"]},
    }


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory):
    """The whole pipeline materialised once on the smoke profile (shared by the generation tests)."""
    import os

    from orchestration.runner import run_pipeline

    root = tmp_path_factory.mktemp("smoke_run")
    previous = os.environ.get("DAGSTER_HOME")
    os.environ["DAGSTER_HOME"] = str(root / "dagster_home")
    try:
        lines: list[str] = []
        outcome = run_pipeline("smoke", smoke_overrides(root), echo=lines.append)
    finally:
        if previous is None:
            os.environ.pop("DAGSTER_HOME", None)
        else:
            os.environ["DAGSTER_HOME"] = previous
    return {"root": root, "outcome": outcome, "lines": lines,
            "profile": load_profile("smoke", smoke_overrides(root))}
