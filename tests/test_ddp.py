"""DDP on 2 CPU processes (gloo): a training killed with SIGKILL resumes to the weights of an
uninterrupted 2-process run, the ranks write nothing but rank 0's checkpoints and logs (the model
and its record are the caller's), and the record says it took 2 processes (docs/scaling.md)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import ClassVar

import numpy as np
import pandas as pd
import psutil
import pytest
import soundfile as sf
import torch
from pytorch_lightning.callbacks import Callback
from safetensors.torch import load_file

from foley_core.core.audio import content_hash
from foley_core.core.config import load_profile
from foley_core.ldm import train_vae

STEPS = 6  # 9 training clips, a global batch of 4 (2 per rank): 2 steps an epoch, so resumes land mid-epoch
WEIGHTS = "vae/diffusion_pytorch_model.safetensors"


def _overrides(root: Path) -> dict:
    return {
        "paths": {"data_dir": str(root / "data"), "artifacts_dir": str(root / "artifacts")},
        "wandb": {"mode": "disabled"},
        "trainer": {"devices": 2, "strategy": "ddp", "checkpoint_every_n_steps": 1},
        "ldm": {"vae": {"steps": STEPS, "batch_size": 4}},
    }


@pytest.fixture(scope="module")
def manifest(tmp_path_factory) -> pd.DataFrame:
    """10 one-second clips (9 train, 1 val); written as manifest.csv for the killed process too."""
    root = tmp_path_factory.mktemp("ddp-data")
    audio = load_profile("smoke").audio
    rng = np.random.default_rng(0)
    t = np.arange(audio.clip_samples) / audio.sample_rate
    rows = []
    for i in range(10):
        wave = 0.5 * np.sin(2 * np.pi * (200 + 60 * i) * t) * np.exp(-3 * t) + 0.05 * rng.normal(size=t.size)
        path = root / f"clip{i}.wav"
        sf.write(path, wave.astype(np.float32), audio.sample_rate, subtype="PCM_16")
        rows.append({"id": path.stem, "class": "Tone", "split": "val" if i == 0 else "train",
                     "content_hash": content_hash(sf.read(path, dtype="float32")[0]), "abs_path": str(path)})
    table = pd.DataFrame(rows)
    table.to_csv(root / "manifest.csv", index=False)
    return table


class Slow(Callback):
    """Widens the window in which the test kills the run (runs in the ranks; touches no RNG)."""

    def on_train_batch_end(self, trainer, *args) -> None:
        time.sleep(0.5)


class WriteAudit(Callback):
    """In a rank, records every file or folder that process creates, writes, moves or deletes under
    ``root`` (Python's audit hooks), to ``<log_dir>/rank-<n>.txt``. Armed when a rank unpickles it,
    before Lightning does anything; inert in the calling process."""

    EVENTS: ClassVar = {"os.rename": 1, "os.replace": 1, "os.mkdir": 0, "os.remove": 0, "os.rmdir": 0, "shutil.rmtree": 0}

    def __init__(self, root: Path, log_dir: Path):
        self.root, self.log_dir = str(root), str(log_dir)

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        if "LOCAL_RANK" in os.environ:
            self._arm(os.open(Path(self.log_dir) / f"rank-{os.environ['LOCAL_RANK']}.txt", os.O_WRONLY | os.O_CREAT))

    def _arm(self, out: int) -> None:
        def hook(event: str, args: tuple) -> None:
            if event == "open":
                path, mode, flags = args
                writes = any(c in mode for c in "wax+") if isinstance(mode, str) else bool(flags & (os.O_WRONLY | os.O_RDWR))
            elif event in self.EVENTS:
                path, writes = args[self.EVENTS[event]], True
            else:
                return
            if writes and isinstance(path, (str, Path)) and os.path.abspath(path).startswith(self.root):
                os.write(out, f"{event} {os.path.relpath(path, self.root)}\n".encode())

        sys.addaudithook(hook)


def _assert_same_weights(a: Path, b: Path) -> None:
    first, second = load_file(a), load_file(b)
    assert first.keys() == second.keys()
    different = [k for k in first if not torch.equal(first[k], second[k])]
    assert not different, f"{len(different)} of {len(first)} tensors differ, e.g. {different[0]}"


_KILLED_RUN = """
import json, sys
import pandas as pd
from foley_core.core.config import load_profile
from foley_core.ldm import train_vae
from test_ddp import Slow

root, manifest, overrides = sys.argv[1], pd.read_csv(sys.argv[2]), json.loads(sys.argv[3])
train_vae(load_profile("smoke", overrides), manifest, root + "/vae", callbacks=[Slow()])
"""


def _kill_mid_training(root: Path, manifest_csv: Path) -> list[psutil.Process]:
    """A process that trains on 2 ranks, SIGKILLed once it has a checkpoint; returns its ranks."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")])}
    process = subprocess.Popen([sys.executable, "-c", _KILLED_RUN, str(root), str(manifest_csv), json.dumps(_overrides(root))],
                               env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 240
        while not list(root.glob("training/vae/*/checkpoints/last.ckpt")):
            assert process.poll() is None, f"training died on its own: {process.stderr.read()[-3000:]}"
            assert time.monotonic() < deadline, "no checkpoint within 240 s"
            time.sleep(0.05)
        ranks = psutil.Process(process.pid).children()
        os.kill(process.pid, signal.SIGKILL)
    finally:  # a failed assertion must not leave the process training
        process.kill()
        process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL
    return ranks


def _gone(process: psutil.Process) -> bool:
    try:
        return process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_a_killed_2_process_training_resumes_to_the_uninterrupted_weights(manifest, tmp_path):
    audit = tmp_path / "audit"
    audit.mkdir()
    whole = tmp_path / "whole"
    metrics = train_vae(load_profile("smoke", _overrides(whole)), manifest, whole / "vae",
                        callbacks=[WriteAudit(whole, audit)])  # fmt: skip
    assert metrics["world_size"] == 2 and metrics["steps"] == STEPS and metrics["resumed_from_step"] == 0
    assert json.loads((whole / "vae" / "metrics.json").read_text())["world_size"] == 2

    # rank 1 wrote nothing; rank 0 only Lightning's checkpoints and logs and its report; the model is the caller's
    assert (audit / "rank-1.txt").read_text() == ""
    written = {Path(line.split(" ", 1)[1]).parts for line in (audit / "rank-0.txt").read_text().splitlines()}
    assert any(parts[-1] == "last.ckpt" for parts in written)
    # training/vae/<fingerprint>/<what>/...
    assert all(parts[:2] == ("training", "vae") and parts[3] in ("checkpoints", "logs", "ranks") for parts in written), written

    resumed = tmp_path / "resumed"
    ranks = _kill_mid_training(resumed, Path(manifest["abs_path"][0]).parent / "manifest.csv")
    assert len(ranks) == 2
    deadline = time.monotonic() + 30
    while not all(_gone(r) for r in ranks):  # they die with the process that started them
        assert time.monotonic() < deadline, "a rank outlived the killed run"
        time.sleep(0.1)
    assert not (resumed / "vae" / "metrics.json").exists()

    metrics = train_vae(load_profile("smoke", _overrides(resumed)), manifest, resumed / "vae")
    assert 0 < metrics["resumed_from_step"] < STEPS and metrics["world_size"] == 2
    _assert_same_weights(resumed / WEIGHTS, whole / WEIGHTS)
    # the latent scale draws from the RNG restored after training: rank 0's, the same in both runs
    assert metrics["latent_scale"] == json.loads((whole / "vae" / "metrics.json").read_text())["latent_scale"]
