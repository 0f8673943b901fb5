"""Ingestion never loses the user's files and never decodes without bound.

Output folders that overlap the source or hold someone else's files are refused; an
interrupted ingest leaves nothing the loader reads as data and loses no class; source
files stay inside their source root; class names are plain folder names; a long or
lying recording is decoded only as far as its kept windows, and a file that still
cannot be handled is quarantined instead of stopping the run.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import shutil
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import soxr
from click.testing import CliRunner

from foley_core.core.audio import normalise_peak, pcm16
from foley_core.core.config import PROJECT_ROOT, ConfigError, load_profile
from foley_core.data import ingest as ingest_module
from foley_core.data.ingest import MANIFEST, ingest, ingest_class, load_manifest
from foley_core.data.sources import discover_source, source_from_path


def tone(seconds: float, rate: int, freq: float) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _noise(seconds: float, rate: int, seed: int, channels: int = 1) -> np.ndarray:
    audio = np.random.default_rng(seed).normal(0, 0.1, (int(seconds * rate), channels)).astype(np.float32)
    return audio[:, 0] if channels == 1 else audio


def _source(root: Path, files: dict[str, float] | None = None) -> Path:
    """A small DCASE-layout folder: ``{"Class/name.wav": seconds}`` of distinct noise at 16 kHz."""
    files = files or {"DogBark/a.wav": 0.5, "DogBark/b.wav": 0.6, "Rain/c.wav": 0.7}
    for i, (name, seconds) in enumerate(sorted(files.items())):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        sf.write(root / name, _noise(seconds, 16000, i), 16000)
    return root


def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _ingest(profile, root: Path, out: Path, **kwargs):
    found = discover_source(source_from_path(root), profile)
    return ingest(found.files, found.rejected, out, profile, **kwargs)


def _cli(*args: str):
    from foley_core.cli import main

    return CliRunner().invoke(main, ["data", "ingest", *args, "--profile", "smoke"])


def _wav_header(rate: int, channels: int, data_bytes: int) -> bytes:
    """A canonical 44-byte 16-bit PCM wav header whose RIFF and data sizes match ``data_bytes``."""
    fmt = struct.pack("<IHHIIHH", 16, 1, channels, rate, rate * channels * 2, channels * 2, 16)
    return b"RIFF" + struct.pack("<I", 36 + data_bytes) + b"WAVEfmt " + fmt + b"data" + struct.pack("<I", data_bytes)


# 1. the output folder never overlaps the source, and never replaces a folder ingest did not write


@pytest.mark.parametrize("where", ["same", "inside", "contains"])
def test_out_overlapping_the_source_is_refused_and_the_originals_are_kept(tmp_path, where):
    src = _source(tmp_path / "work" / "src")
    before = _snapshot(tmp_path / "work")
    out = {"same": src, "inside": src / "ingested", "contains": tmp_path / "work"}[where]
    result = _cli(str(src), "--out", str(out))
    assert result.exit_code == 2, result.output
    assert "error:" in result.output and "source" in result.output
    assert len(result.output.strip().splitlines()) == 1  # one line, no traceback
    assert _snapshot(tmp_path / "work") == before  # nothing written, nothing replaced


def test_out_given_as_another_spelling_of_the_source_is_refused(tmp_path):
    src = _source(tmp_path / "src")
    (tmp_path / "alias").symlink_to(src)
    before = _snapshot(src)
    result = _cli(str(src), "--out", str(tmp_path / "other" / ".." / "alias"))
    assert result.exit_code == 2 and "source" in result.output
    assert _snapshot(src) == before


def test_a_captioned_csv_may_have_its_output_beside_it_but_not_on_it(tmp_path):
    """A CSV reads only the files it lists: an output folder inside the CSV's folder is safe."""
    root = tmp_path / "corpus"
    (root / "audio").mkdir(parents=True)
    sf.write(root / "audio" / "a.wav", _noise(0.5, 16000, 1), 16000)
    pd.DataFrame({"path": ["audio/a.wav"], "caption": ["rain"], "class": ["Rain"]}).to_csv(root / "captions.csv", index=False)
    assert _cli(str(root / "captions.csv"), "--out", str(root / "ingested")).exit_code == 0
    before = _snapshot(root)
    for out in (root, tmp_path):
        result = _cli(str(root / "captions.csv"), "--out", str(out))
        assert result.exit_code == 2 and "source folder" in result.output
    assert _snapshot(root) == before


def test_a_class_folder_ingest_did_not_write_is_never_replaced(tmp_path, monkeypatch):
    src = _source(tmp_path / "src")
    out = tmp_path / "out"
    (out / "Rain").mkdir(parents=True)
    (out / "Rain" / "my-notes.txt").write_text("field recordings, do not delete")
    decoded = []
    monkeypatch.setattr(ingest_module, "clips_from_file", lambda item, profile: decoded.append(item))
    result = _cli(str(src), "--out", str(out))
    assert result.exit_code == 2, result.output
    assert "Rain" in result.output and "my-notes.txt" in result.output
    assert (out / "Rain" / "my-notes.txt").read_text() == "field recordings, do not delete"
    assert decoded == [] and not (out / "DogBark").exists()  # refused before any decoding


def test_a_class_folder_written_by_ingest_is_replaced_on_reingest(smoke_profile, tmp_path):
    src = _source(tmp_path / "src")
    _ingest(smoke_profile(), src, tmp_path / "out")
    (src / "DogBark" / "b.wav").unlink()
    _ingest(smoke_profile(), src, tmp_path / "out")
    assert len(load_manifest(tmp_path / "out", ["DogBark"])) == 1


# 2. an interrupted ingest: nothing left behind is read as data, no class is lost


def test_loader_ignores_staging_and_old_folders(smoke_profile, tmp_path):
    out = tmp_path / "out"
    _ingest(smoke_profile(), _source(tmp_path / "src"), out)
    expected = load_manifest(out)
    shutil.copytree(out / "DogBark", out / ".DogBark.staging-k1ll3d")
    shutil.copytree(out / "Rain", out / ".Rain.old")
    manifest = load_manifest(out)
    assert len(manifest) == len(expected) == 3
    assert not manifest["abs_path"].str.contains("/[.]", regex=True).any()


def test_stale_staging_and_old_folders_are_cleaned_up_at_start(smoke_profile, tmp_path):
    out = tmp_path / "out"
    src = _source(tmp_path / "src")
    _ingest(smoke_profile(), src, out)
    for name in (".DogBark.staging-abc123", ".DogBark.old", ".DogBark.old-0123abcd"):
        shutil.copytree(out / "DogBark", out / name)
    (out / ".Footstep.staging-zzz").mkdir()  # another class's leftovers: its own ingest cleans them
    _ingest(smoke_profile(), src, out, labels=["DogBark"])
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == [".Footstep.staging-zzz", "DogBark", "Rain"]


@pytest.mark.parametrize("old_name", [".DogBark.old", ".DogBark.old-5eed1e55"])
def test_a_kill_between_the_two_renames_loses_no_class(smoke_profile, tmp_path, monkeypatch, old_name):
    """Simulate the state a kill leaves after "final -> old" and before "staging -> final"."""
    out = tmp_path / "out"
    src = _source(tmp_path / "src")
    _ingest(smoke_profile(), src, out)
    previous = (out / "DogBark" / MANIFEST).read_bytes()
    (out / "DogBark").rename(out / old_name)

    def crash(item, profile):
        raise KeyboardInterrupt  # the next run dies too, while decoding

    monkeypatch.setattr(ingest_module, "clips_from_file", crash)
    with pytest.raises(KeyboardInterrupt):
        _ingest(smoke_profile(), src, out, labels=["DogBark"])
    assert (out / "DogBark" / MANIFEST).read_bytes() == previous  # restored at the start of the next run
    assert len(load_manifest(out, ["DogBark"])) == 2
    assert not any(p.name.startswith(".DogBark.") for p in out.iterdir() if p.is_dir())


def _ingest_repeatedly(src: str, out: str, start, errors) -> None:
    import time

    rename = Path.rename
    Path.rename = lambda self, target: (time.sleep(0.02), rename(self, target))[1]  # slow, as on NFS: swaps overlap
    try:
        profile = load_profile("smoke")
        found = discover_source(source_from_path(Path(src)), profile)
        start.wait()
        for _ in range(6):
            files = [f for f in found.files if f.label == "DogBark"]
            ingest_class("DogBark", files, [], Path(out), profile)
    except BaseException as exc:  # noqa: BLE001  (reported to the parent)
        errors.put(f"{type(exc).__name__}: {exc}")


def test_two_processes_ingesting_one_class_do_not_collide(tmp_path):
    src = _source(tmp_path / "src")
    out = tmp_path / "out"
    ctx = multiprocessing.get_context("fork")
    start, errors = ctx.Barrier(2), ctx.Queue()
    workers = [ctx.Process(target=_ingest_repeatedly, args=(str(src), str(out), start, errors)) for _ in range(2)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(120)
    problems = [errors.get() for _ in range(errors.qsize())] if not errors.empty() else []
    assert problems == [] and all(w.exitcode == 0 for w in workers)
    assert len(load_manifest(out, ["DogBark"])) == 2
    assert [p.name for p in out.iterdir() if p.is_dir()] == ["DogBark"]


# 3. source files stay inside their source root; class names are plain names


def _outside_file(tmp_path: Path) -> Path:
    secret = tmp_path / "elsewhere" / "private.wav"
    secret.parent.mkdir(parents=True)
    sf.write(secret, _noise(0.5, 16000, 99), 16000)
    return secret


def test_captioned_csv_paths_outside_the_csv_folder_are_quarantined(smoke_profile, tmp_path):
    secret = _outside_file(tmp_path)
    root = tmp_path / "corpus"
    (root / "sub").mkdir(parents=True)
    sf.write(root / "ok.wav", _noise(0.5, 16000, 1), 16000)
    (root / "sub" / "inside-link.wav").symlink_to(root / "ok.wav")  # a symlink that stays inside: allowed
    (root / "outside-link.wav").symlink_to(secret)
    pd.DataFrame({
        "path": ["ok.wav", "../elsewhere/private.wav", str(secret), "outside-link.wav", "sub/../../elsewhere/private.wav"],
        "caption": ["rain", "x", "y", "z", "w"],
        "class": ["Rain"] * 5,
    }).to_csv(root / "captions.csv", index=False)
    profile = smoke_profile()
    found = discover_source(source_from_path(root / "captions.csv"), profile)
    assert [f.path for f in found.files] == [(root / "ok.wav").resolve()]
    assert [r.reason for r in found.rejected] == ["outside_source_root"] * 4
    result = ingest(found.files, found.rejected, tmp_path / "out", profile)
    assert {c.source_path for c in result.clips} == {str((root / "ok.wav").resolve())}


def test_symlinks_in_a_source_folder_must_resolve_inside_it(smoke_profile, tmp_path):
    secret = _outside_file(tmp_path)
    root = _source(tmp_path / "src")
    (root / "DogBark" / "link-out.wav").symlink_to(secret)
    (root / "DogBark" / "link-in.wav").symlink_to(root / "Rain" / "c.wav")  # inside the root: allowed
    (root / "Rain" / "nested").symlink_to(secret.parent, target_is_directory=True)  # rglob does not follow
    (root / "GunShot").symlink_to(secret.parent, target_is_directory=True)  # a whole class folder elsewhere
    found = discover_source(source_from_path(root), smoke_profile())
    assert sorted(f.path.name for f in found.files) == ["a.wav", "b.wav", "c.wav", "c.wav"]  # link-in -> c
    assert secret.resolve() not in {f.path for f in found.files}
    assert sorted((Path(r.path).name, r.reason) for r in found.rejected) == [
        ("GunShot", "outside_source_root"), ("link-out.wav", "outside_source_root")]


def test_folder_captions_csv_cannot_pull_in_files(smoke_profile, tmp_path):
    _outside_file(tmp_path)
    root = _source(tmp_path / "src")
    pd.DataFrame({"path": ["../elsewhere/private.wav", "DogBark/a.wav"], "caption": ["x", "a good dog"]}).to_csv(
        root / "captions.csv", index=False)
    found = discover_source(source_from_path(root), smoke_profile())
    assert all(str(f.path).startswith(str(root.resolve())) for f in found.files) and len(found.files) == 3


@pytest.mark.parametrize("name", ["../x", "a/b", "a\\b", ".hidden", "..", "", "a\x00b"])
def test_class_names_must_be_plain_folder_names(name):
    classes = [{"name": name, "prompts": ["p"]}]
    with pytest.raises(ConfigError, match=r"classes\.0\.name"):
        load_profile("smoke", {"classes": classes})
    with pytest.raises(ConfigError, match=r"data\.extra_classes"):
        load_profile("smoke", {"data": {"extra_classes": [name]}})


def test_a_csv_class_that_is_not_a_plain_name_is_quarantined(smoke_profile, tmp_path):
    root = tmp_path / "corpus"
    root.mkdir()
    sf.write(root / "a.wav", _noise(0.5, 16000, 1), 16000)
    sf.write(root / "b.wav", _noise(0.5, 16000, 2), 16000)
    pd.DataFrame({"path": ["a.wav", "b.wav"], "caption": ["x", "y"], "class": ["../../escape", "Rain"]}).to_csv(
        root / "captions.csv", index=False)
    out = tmp_path / "deep" / "out"
    result = _ingest(smoke_profile(), root / "captions.csv", out)
    assert [(q.reason, q.label) for q in result.quarantined] == [("bad_class_name", "")]
    assert not (tmp_path / "escape").exists()
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == ["Rain", "quarantine_unassigned.csv"]


# 4. bounded memory: decode only what can become a kept window; quarantine what cannot be handled


def test_a_long_recording_is_decoded_only_as_far_as_its_kept_windows(smoke_profile, tmp_path, monkeypatch):
    profile = smoke_profile()  # 1 s clips, at most 2 windows per file
    root = tmp_path / "src"
    (root / "Rain").mkdir(parents=True)
    audio = _noise(30, 44100, 5, channels=2)
    sf.write(root / "Rain" / "long.wav", audio, 44100)
    decoded = []
    real_read = ingest_module.read_audio

    def spy(*args, **kwargs):
        result = real_read(*args, **kwargs)
        decoded.append(result[0].shape[0])
        return result

    monkeypatch.setattr(ingest_module, "read_audio", spy)
    result = _ingest(profile, root, tmp_path / "out")
    assert decoded and decoded[0] <= math.ceil(3 * 44100)  # 2 windows + the resampler's 1 s look-ahead, not 30 s
    # the kept windows are sample-identical to decoding the whole file (the data version does not change)
    # (what ingest did before: decode the whole file, mono, resample, cut, normalise)
    decoded_whole = sf.read(root / "Rain" / "long.wav", dtype="float32")[0].mean(axis=1)
    whole = soxr.resample(decoded_whole, 44100, 16000, quality="HQ").astype(np.float32)
    manifest = load_manifest(tmp_path / "out")
    assert sorted(manifest["window"]) == [0, 1] and len(result.clips) == 2
    for row in manifest.itertuples():
        expected = pcm16(normalise_peak(whole[row.window * 16000 : (row.window + 1) * 16000], 0.9))
        assert np.array_equal(sf.read(row.abs_path, dtype="int16")[0], expected)
        assert row.duration_s == 1.0


def test_an_implausible_sample_rate_is_quarantined_before_decoding(smoke_profile, tmp_path):
    root = _source(tmp_path / "src")
    samples = np.random.default_rng(3).normal(0, 3000, 20000).astype("<i2").tobytes()
    (root / "Rain" / "one-hertz.wav").write_bytes(_wav_header(1, 1, len(samples)) + samples)
    result = _ingest(smoke_profile(), root, tmp_path / "out")
    assert [(Path(q.path).name, q.reason) for q in result.quarantined] == [("one-hertz.wav", "bad_sample_rate")]
    assert len(result.clips) == 3


def test_too_many_channels_for_the_decode_limit_is_quarantined(smoke_profile, tmp_path):
    profile = smoke_profile(data={"max_decoded_bytes": 2**20})
    root = _source(tmp_path / "src")
    sf.write(root / "Rain" / "ambisonic.wav", _noise(4, 48000, 7, channels=8), 48000)
    result = _ingest(profile, root, tmp_path / "out")
    assert [(Path(q.path).name, q.reason) for q in result.quarantined] == [("ambisonic.wav", "too_large")]
    assert "max_decoded_bytes" in result.quarantined[0].detail
    assert len(result.clips) == 3


def test_memory_and_resampler_errors_quarantine_one_file_not_the_class(smoke_profile, tmp_path, monkeypatch):
    root = _source(tmp_path / "src", {"Rain/a.wav": 0.5, "Rain/b.wav": 0.5, "Rain/c.wav": 0.5})
    real = ingest_module.resample
    failures = {}

    def flaky(audio, rate_in, rate_out):
        failures[len(failures)] = None
        if len(failures) == 1:
            raise MemoryError("Unable to allocate 40.0 GiB")
        if len(failures) == 2:
            raise RuntimeError("soxr error: invalid rate")
        return real(audio, rate_in, rate_out)

    monkeypatch.setattr(ingest_module, "resample", flaky)
    result = _ingest(smoke_profile(), root, tmp_path / "out")
    assert sorted(q.reason for q in result.quarantined) == ["resample_failed", "too_large"]
    assert len(result.clips) == 1
    table = pd.read_csv(tmp_path / "out" / "Rain" / "quarantine.csv")
    assert sorted(table["reason"]) == ["resample_failed", "too_large"]


def test_long_mp3_and_ogg_are_read_in_part_and_windowed(smoke_profile, tmp_path):
    root = tmp_path / "src"
    (root / "Rain").mkdir(parents=True)
    sf.write(root / "Rain/long.mp3", tone(5, 44100, 300) + 0.05, 44100, format="MP3", subtype="MPEG_LAYER_III")
    sf.write(root / "Rain/long.ogg", tone(5, 22050, 500) + 0.05, 22050, format="OGG", subtype="VORBIS")
    result = _ingest(smoke_profile(), root, tmp_path / "out")
    assert result.quarantined == [] and len(result.clips) == 4


ACCEPTANCE = textwrap.dedent("""
    import resource, sys

    limit = 3 * 2**30
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    try:
        bytearray(limit)  # the limit holds: the 2 h file decoded whole (2.8 GB as float32) could not fit
    except MemoryError:
        pass
    else:
        sys.exit("RLIMIT_AS is not enforced here")

    def peak():
        status = open("/proc/self/status").read()
        print("VmPeak", status.split("VmPeak:")[1].split()[0], "kB", file=sys.stderr)

    import atexit
    atexit.register(peak)
    from foley_core.cli import main
    main(["data", "ingest", sys.argv[1], "--out", sys.argv[2], "--profile", sys.argv[3]], prog_name="foley")
""")


def test_acceptance_long_and_lying_files_under_a_3gb_address_space(tmp_path):
    """A 2 h 48 kHz stereo wav (1.4 GB on disk, sparse here) and a 1 Hz wav, ingested under RLIMIT_AS=3 GiB."""
    root = tmp_path / "src"
    (root / "MovingMotorVehicle").mkdir(parents=True)
    (root / "Rain").mkdir()
    data_bytes = 2 * 3600 * 48000 * 2 * 2
    t = np.arange(4 * 48000) / 48000
    engine = (0.5 * np.sin(2 * np.pi * 110 * t) * 32767).astype("<i2")
    with open(root / "MovingMotorVehicle" / "two-hours.wav", "wb") as handle:
        handle.write(_wav_header(48000, 2, data_bytes))
        handle.write(np.stack([engine, engine], axis=1).tobytes())  # 4 s of real sound, then silence
        handle.truncate(44 + data_bytes)  # a sparse zero region: libsndfile trusts the header's data size
    assert sf.info(root / "MovingMotorVehicle" / "two-hours.wav").duration == 7200
    samples = np.random.default_rng(0).normal(0, 3000, 2_000_000).astype("<i2").tobytes()  # 4 MB claiming 1 Hz
    (root / "Rain" / "one-hertz.wav").write_bytes(_wav_header(1, 1, len(samples)) + samples)
    for i in range(3):
        sf.write(root / "Rain" / f"normal-{i}.wav", _noise(0.8, 22050, i), 22050)

    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", ACCEPTANCE, str(root), str(out), str(PROJECT_ROOT / "configs" / "smoke.yaml")],
        capture_output=True, text=True, timeout=300, cwd=PROJECT_ROOT, env=env,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    print(done.stderr.strip().splitlines()[-1])  # VmPeak of the ingest process
    vehicle = load_manifest(out, ["MovingMotorVehicle"])
    assert sorted(vehicle["window"]) == [0, 1]  # windowed: max_windows_per_file (2) clips, not 7,200
    rain = load_manifest(out, ["Rain"])
    assert sorted(Path(p).name for p in rain["source_path"]) == [f"normal-{i}.wav" for i in range(3)]
    quarantine = pd.read_csv(out / "Rain" / "quarantine.csv")
    assert quarantine[["reason"]].to_dict("records") == [{"reason": "bad_sample_rate"}]
    assert quarantine["path"].str.endswith("one-hertz.wav").all()
