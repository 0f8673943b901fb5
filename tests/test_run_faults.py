"""Process faults of the main job, with real processes: `kill -9` during training, and two
`foley run` on one artifacts folder."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import smoke_overrides

from foley_core.core.config import CONFIG_DIR, _deep_merge

FOLEY = [sys.executable, "-m", "orchestration.cli"]


def _profile_file(root: Path, unet_steps: int) -> Path:
    """The smoke profile with every path under ``root``, as a file the CLI can take."""
    raw = yaml.safe_load((CONFIG_DIR / "smoke.yaml").read_text())
    raw = _deep_merge(raw, smoke_overrides(root))
    raw = _deep_merge(raw, {"ldm": {"unet": {"steps": unet_steps}}, "trainer": {"checkpoint_every_n_steps": 2}})
    path = root / "profile.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _env(root: Path) -> dict:
    return {**os.environ, "DAGSTER_HOME": str(root / "dagster_home"), "PYTHONUNBUFFERED": "1"}


def _start_run(root: Path, profile: Path) -> subprocess.Popen:
    """`foley run` in the background, its output in ``root/run.log`` (a pipe could fill and block it)."""
    log = open(root / "run.log", "w")
    return subprocess.Popen([*FOLEY, "run", "--profile", str(profile)], env=_env(root), cwd=root,
                            stdout=log, stderr=subprocess.STDOUT, text=True)


def _wait_for(predicate, process: subprocess.Popen, root: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if process.poll() is not None:
            out = (root / "run.log").read_text()
            pytest.fail(f"foley run ended (rc {process.returncode}) before the awaited moment:\n{out[-3000:]}")
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail("timed out waiting for foley run")
        time.sleep(0.05)


def _unet_checkpoints(root: Path) -> list[Path]:
    return list((root / "artifacts" / "ldm" / "training" / "unet").glob("*/checkpoints/*.ckpt"))


def test_kill_9_during_training_then_rerun_completes_with_the_uninterrupted_model(tmp_path):
    """One trained smoke pipeline serves three faults (issue 21: the tests never train the same thing
    twice): a second `foley run` on the same artifacts while the first trains exits 2 and says why; a
    `kill -9` mid-training leaves no model; the rerun resumes from the checkpoint and makes the same
    model version as an uninterrupted run in another folder."""
    profile = _profile_file(tmp_path, unet_steps=200)
    first = _start_run(tmp_path, profile)
    try:
        _wait_for(lambda: (tmp_path / "artifacts" / "dataset").is_dir(), first, tmp_path, timeout=240)
        second = subprocess.run([*FOLEY, "run", "--profile", str(profile)], env=_env(tmp_path), cwd=tmp_path,
                                capture_output=True, text=True, timeout=120)
        assert second.returncode == 2, second.stdout + second.stderr
        message = second.stderr.strip().splitlines()[-1]
        assert "another foley run" in message and str(first.pid) in message, message

        _wait_for(lambda: _unet_checkpoints(tmp_path), first, tmp_path, timeout=240)
    finally:
        if first.poll() is None:  # mid-UNet-training: a checkpoint exists, the model does not
            os.kill(first.pid, signal.SIGKILL)
        first.wait()
    assert not (tmp_path / "artifacts" / "pipelines" / "latest").exists()

    # a holder killed with -9 releases the run lock (flock), and its "compute" pool slot is freed
    rerun = subprocess.run([*FOLEY, "run", "--profile", str(profile)], env=_env(tmp_path), cwd=tmp_path,
                           capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    # the dead run held the "compute" pool slot: without marking it failed, the rerun waits forever
    assert "was killed before it ended: marked failed" in rerun.stdout, rerun.stdout[-3000:]
    assert (tmp_path / "artifacts" / "pipelines" / "latest").resolve().is_dir()
    assert (tmp_path / "outputs" / "latest" / "report.html").is_file()
    unet_metrics = json.loads((tmp_path / "artifacts" / "ldm" / "unet" / "metrics.json").read_text())
    assert unet_metrics["steps"] == 200
    assert unet_metrics["resumed_from_step"] > 0, unet_metrics  # resumed, not restarted

    # An uninterrupted run in another folder (a teammate's clone) makes the same model version:
    # identical weights, whether or not the run was killed and resumed on the way.
    reference = tmp_path / "uninterrupted"
    reference.mkdir()
    clean = subprocess.run([*FOLEY, "run", "--profile", str(_profile_file(reference, unet_steps=200))],
                           env=_env(reference), cwd=reference, capture_output=True, text=True, timeout=600)
    assert clean.returncode == 0, clean.stdout[-3000:] + clean.stderr[-3000:]
    version = (tmp_path / "artifacts" / "pipelines" / "latest").resolve().name
    assert (reference / "artifacts" / "pipelines" / "latest").resolve().name == version
