"""DVC round trip: track data/, push to a local remote, pull into a fresh clone."""

from __future__ import annotations

import os
import subprocess

import pytest

from foley_core.data.versioning import DvcError, dvc_executable, read_dvc_hash, run_dvc, track

GIT_ENV = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@localhost", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@localhost"}


def git(*args, cwd):
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, env={**os.environ, **GIT_ENV})


@pytest.fixture
def dvc_repo(tmp_path):
    try:
        dvc_executable()
    except DvcError as exc:
        pytest.fail(f"DVC must be installed for the data tests (make install): {exc}")
    repo = tmp_path / "origin"
    repo.mkdir()
    git("init", "-q", cwd=repo)
    run_dvc("init", "-q", cwd=repo)
    run_dvc("remote", "add", "-d", "local", str(tmp_path / "remote"), cwd=repo)
    (repo / "data/Rain").mkdir(parents=True)
    (repo / "data/Rain/a.wav").write_bytes(b"RIFF-fake-audio-1")
    (repo / "data/captions.csv").write_text("path,caption,class\nRain/a.wav,rain,Rain\n")
    return repo


def test_track_push_and_pull_into_a_fresh_clone(dvc_repo, tmp_path):
    version = track(dvc_repo / "data")
    assert version == read_dvc_hash(dvc_repo / "data.dvc") and version.endswith(".dir")
    assert track(dvc_repo / "data") == version  # unchanged data: same version
    git("add", "-A", cwd=dvc_repo)
    git("commit", "-qm", "data", cwd=dvc_repo)

    clone = tmp_path / "clone"
    git("clone", "-q", str(dvc_repo), str(clone), cwd=tmp_path)
    assert not (clone / "data").exists()
    run_dvc("pull", cwd=clone)
    assert (clone / "data/Rain/a.wav").read_bytes() == b"RIFF-fake-audio-1"
    assert "up to date" in run_dvc("status", cwd=clone)

    (dvc_repo / "data/Rain/b.wav").write_bytes(b"RIFF-fake-audio-2")
    assert track(dvc_repo / "data") != version


def test_missing_dvc_file_and_bad_command_are_clear_errors(dvc_repo):
    assert read_dvc_hash(dvc_repo / "nothing.dvc") is None
    with pytest.raises(DvcError, match="dvc pull"):
        run_dvc("pull", "no-such-target", cwd=dvc_repo)
