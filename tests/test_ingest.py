"""Ingestion on messy inputs: every audio file is ingested or quarantined with a reason."""

from __future__ import annotations

import numpy as np
import pandas as pd
import soundfile as sf
from click.testing import CliRunner

from foley_core.core.audio import split_into_windows
from foley_core.data.ingest import ingest, load_manifest
from foley_core.data.sources import discover_source, source_from_path


def _ingest(profile, root, out):
    found = discover_source(source_from_path(root), profile)
    return found, ingest(found.files, found.rejected, out, profile)


def test_every_audio_file_is_accounted_for(smoke_profile, messy_source, tmp_path):
    profile = smoke_profile()
    found, result = _ingest(profile, messy_source, tmp_path / "out")
    audio_files = [p for p in messy_source.rglob("*") if p.suffix in {".wav", ".ogg", ".mp3"}]
    ingested = {c.source_path for c in result.clips}
    assert len(ingested) + len(result.quarantined) == len(audio_files) == 12
    assert found.ignored == [str(messy_source / "Keyboard/LICENSE.txt")]
    reasons = {q.path.rsplit("/", 1)[-1]: q.reason for q in result.quarantined}
    assert reasons == {
        "corrupt.wav": "unreadable",
        "empty.wav": "empty",
        "silent.wav": "silent",
        "nan.wav": "non_finite",
        "not-really.mp3": "unreadable",
        "meow.wav": "unknown_class",
    }


def test_clips_are_normalised_mono_at_model_rate_and_clip_length(smoke_profile, messy_source, tmp_path):
    profile = smoke_profile()
    _ingest(profile, messy_source, tmp_path / "out")
    manifest = load_manifest(tmp_path / "out")
    assert set(manifest["class"]) == {"DogBark", "GunShot", "Keyboard"}
    for row in manifest.itertuples():
        audio, rate = sf.read(row.abs_path, dtype="float32")
        info = sf.info(row.abs_path)
        assert (rate, info.channels, info.subtype) == (16000, 1, "PCM_16")
        assert audio.shape == (profile.audio.clip_samples,)
        assert abs(np.abs(audio).max() - profile.data.target_peak) < 1e-3
    by_name = {p.rsplit("/", 1)[-1]: g for p, g in manifest.groupby("source_path")}
    assert by_name["stereo44k.wav"].iloc[0][["orig_sample_rate", "orig_channels"]].tolist() == [44100, 2]
    assert by_name["vorbis.ogg"].iloc[0]["orig_sample_rate"] == 22050
    assert by_name["lame.mp3"].iloc[0]["orig_sample_rate"] == 44100
    assert by_name["short.wav"].iloc[0]["duration_s"] < 0.1  # padded, duration records the event
    long = by_name["long.wav"]  # 3.5 s at 1 s clips, at most 2 windows (smoke profile)
    assert sorted(long["window"]) == [0, 1] and len(set(long["split"])) == 1


def test_reingest_is_idempotent(smoke_profile, messy_source, tmp_path):
    profile = smoke_profile()
    _ingest(profile, messy_source, tmp_path / "out")
    first = {p.relative_to(tmp_path / "out"): p.read_bytes() for p in (tmp_path / "out").rglob("*") if p.is_file()}
    _ingest(profile, messy_source, tmp_path / "out")
    second = {p.relative_to(tmp_path / "out"): p.read_bytes() for p in (tmp_path / "out").rglob("*") if p.is_file()}
    assert first == second


def test_removed_source_file_leaves_no_stale_clip(smoke_profile, messy_source, tmp_path):
    profile = smoke_profile()
    _ingest(profile, messy_source, tmp_path / "out")
    (messy_source / "DogBark/vorbis.ogg").unlink()
    _ingest(profile, messy_source, tmp_path / "out")
    manifest = load_manifest(tmp_path / "out", ["DogBark"])
    clips_on_disk = {p.name for p in (tmp_path / "out/DogBark/clips").iterdir()}
    assert clips_on_disk == {p.rsplit("/", 1)[-1] for p in manifest["path"]}
    assert len(manifest) == 2


def test_split_is_deterministic_stratified_and_stable(smoke_profile, tmp_path):
    root = tmp_path / "many"
    rng = np.random.default_rng(0)
    for label in ("Rain", "Footstep"):
        (root / label).mkdir(parents=True)
        for i in range(12):
            sf.write(root / label / f"{i}.wav", rng.normal(0, 0.1, 8000).astype(np.float32), 16000)
    profile = smoke_profile()
    _ingest(profile, root, tmp_path / "out")
    manifest = load_manifest(tmp_path / "out")
    assert all((g["split"] == "val").sum() >= 1 and (g["split"] == "train").sum() >= 1 for _, g in manifest.groupby("class"))
    splits = dict(zip(manifest["source_path"], manifest["split"]))
    sf.write(root / "Rain/new.wav", rng.normal(0, 0.1, 8000).astype(np.float32), 16000)
    _ingest(profile, root, tmp_path / "out")
    again = load_manifest(tmp_path / "out")
    assert {p: s for p, s in zip(again["source_path"], again["split"]) if p in splits} == splits


def test_duplicate_recordings_are_quarantined(smoke_profile, tmp_path):
    root = tmp_path / "dups"
    (root / "Rain").mkdir(parents=True)
    noise = np.random.default_rng(1).normal(0, 0.1, 16000).astype(np.float32)
    sf.write(root / "Rain/a.wav", noise, 16000)
    sf.write(root / "Rain/b.wav", noise, 16000)
    _, result = _ingest(smoke_profile(), root, tmp_path / "out")
    assert [q.reason for q in result.quarantined] == ["duplicate"] and len(result.clips) == 1


def test_captioned_csv_source(smoke_profile, tmp_path):
    root = tmp_path / "corpus"
    root.mkdir()
    sf.write(root / "a.wav", np.random.default_rng(2).normal(0, 0.1, 16000).astype(np.float32), 16000)
    sf.write(root / "b.flac", np.random.default_rng(3).normal(0, 0.1, 16000).astype(np.float32), 16000)
    pd.DataFrame(
        {
            "path": ["a.wav", "b.flac", "missing.wav", "a.wav"],
            "caption": ["rain on a roof", "wind through trees", "x", ""],
            "class": ["Rain", "", "Rain", "Spaceship"],
        }
    ).to_csv(root / "captions.csv", index=False)
    profile = smoke_profile()
    found, result = _ingest(profile, root / "captions.csv", tmp_path / "out")
    assert sorted((c.class_, c.caption) for c in result.clips) == [("Rain", "rain on a roof"), ("_unlabelled", "wind through trees")]
    assert sorted(q.reason for q in result.quarantined) == ["missing_file", "unknown_class"]


def test_split_into_windows_pads_and_cuts():
    audio = np.ones(25, dtype=np.float32)
    windows = split_into_windows(audio, 10, max_windows=5, min_fraction=0.5)
    assert [w.sum() for w in windows] == [10, 10, 5]  # the 5-sample tail is >= half a window: kept, padded
    assert len(split_into_windows(audio, 10, max_windows=2, min_fraction=0.5)) == 2
    assert [w.sum() for w in split_into_windows(audio[:3], 10, 4, 0.5)] == [3]


def test_cli_ingest_prints_summary_and_accounts_for_all(smoke_profile, messy_source, tmp_path):
    from foley_core.cli import main

    result = CliRunner().invoke(main, ["data", "ingest", str(messy_source), "--profile", "smoke", "--out", str(tmp_path / "o")])
    assert result.exit_code == 0, result.output
    assert "total: 12 found = 6 ingested + 6 quarantined" in result.output
    assert "DogBark" in result.output and "files_ingested" in result.output


def test_cli_ingest_bad_source_is_a_one_line_error(tmp_path):
    from foley_core.cli import main

    result = CliRunner().invoke(main, ["data", "ingest", str(tmp_path / "nope.txt"), "--profile", "smoke"])
    assert result.exit_code == 2
    assert "expected a folder" in result.output
