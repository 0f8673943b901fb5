"""Resume after faults: a truncated checkpoint is moved aside, and an interrupted training (an
exception, or a real kill -9 of the process) resumes to bitwise the weights of an uninterrupted run."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch
from pytorch_lightning.callbacks import Callback
from safetensors.torch import load_file

from foley_core.clap import train_clap
from foley_core.core.audio import content_hash
from foley_core.core.config import load_profile
from foley_core.core.resume import SeededBatches, resume_checkpoint
from foley_core.ldm import train_unet, train_vae

STEPS = 8  # 9 training clips in batches of 4: 2 steps an epoch, so step 3 is mid-epoch
VAE_WEIGHTS = "vae/diffusion_pytorch_model.safetensors"


def _overrides(root: Path, every: int = 3) -> dict:
    return {
        "paths": {"data_dir": str(root / "data"), "artifacts_dir": str(root / "artifacts")},
        "wandb": {"mode": "disabled"},
        "trainer": {"checkpoint_every_n_steps": every},
        "ldm": {"vae": {"steps": STEPS}, "unet": {"steps": STEPS}},
        "clap": {"steps": STEPS, "batch_size": 4},
    }


def _profile(root: Path, every: int = 3):
    return load_profile("smoke", _overrides(root, every))


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> tuple[Path, pd.DataFrame, dict[str, np.ndarray]]:
    """10 one-second clips (9 train, 1 val) with captions, and a conditioning vector per clip."""
    root = tmp_path_factory.mktemp("resume-data")
    audio = load_profile("smoke").audio
    rng = np.random.default_rng(0)
    t = np.arange(audio.clip_samples) / audio.sample_rate
    rows = []
    for i in range(10):
        wave = (0.5 * np.sin(2 * np.pi * (200 + 60 * i) * t) * np.exp(-3 * t) + 0.05 * rng.normal(size=t.size))
        path = root / f"clip{i}.wav"
        sf.write(path, wave.astype(np.float32), audio.sample_rate, subtype="PCM_16")
        rows.append({"id": path.stem, "class": "Tone", "caption": f"a tone at {200 + 60 * i} hertz",
                     "split": "val" if i == 0 else "train", "content_hash": content_hash(sf.read(path, dtype="float32")[0]),
                     "abs_path": str(path)})  # fmt: skip
    manifest = pd.DataFrame(rows)
    manifest.to_csv(root / "manifest.csv", index=False)
    conditioning = {h: rng.normal(size=32).astype(np.float32) for h in manifest["content_hash"]}
    return root, manifest, conditioning


@pytest.fixture(scope="module")
def reference(data, tmp_path_factory) -> Path:
    """The VAE and UNet trained uninterrupted: what every resumed run must reproduce."""
    _, manifest, conditioning = data
    root = tmp_path_factory.mktemp("reference")
    train_vae(_profile(root), manifest, root / "vae")
    train_unet(_profile(root), manifest, conditioning, root / "vae", root / "unet")
    return root


class _Crash(Callback):
    """Dies at ``at_step`` (checkpoints are saved after the callbacks, so the last one is before it)."""

    def __init__(self, at_step: int):
        self.at_step = at_step

    def on_train_batch_end(self, trainer, *args) -> None:
        if trainer.global_step >= self.at_step:
            raise RuntimeError("simulated crash")


def _assert_same_weights(a: Path, b: Path) -> None:
    first, second = load_file(a), load_file(b)
    assert first.keys() == second.keys()
    different = [k for k in first if not torch.equal(first[k], second[k])]
    assert not different, f"{len(different)} of {len(first)} tensors differ, e.g. {different[0]}"


def test_batches_are_a_pure_function_of_seed_and_step():
    whole = SeededBatches(10, 4, seed=3)
    stream = iter(whole)
    batches = [next(stream) for _ in range(8)]
    resumed = iter(SeededBatches(10, 4, seed=3, start_step=5))
    assert [next(resumed) for _ in range(3)] == batches[5:]
    for epoch in range(4):  # 2 full batches an epoch, drawn without replacement; epochs differ
        indices = [i for batch in batches[2 * epoch : 2 * epoch + 2] for i, _ in batch]
        assert len(set(indices)) == 8
    assert [i for i, _ in batches[0]] != [i for i, _ in batches[2]]
    keys = [key for batch in batches for _, key in batch]
    assert len(set(keys)) == len(keys)  # every draw has its own crop RNG
    # under DDP the ranks split each global batch between them
    ranks = [iter(SeededBatches(10, 2, seed=3, rank=r, world_size=2)) for r in (0, 1)]
    for step in range(2):
        split = [next(r) for r in ranks]
        assert [i for part in split for i, _ in part] == [i for i, _ in batches[step]]


def test_a_truncated_last_checkpoint_is_kept_aside_and_training_resumes_from_the_other(data, reference, tmp_path, caplog):
    _, manifest, _ = data
    with pytest.raises(RuntimeError, match="simulated crash"):
        train_vae(_profile(tmp_path), manifest, tmp_path / "vae", callbacks=[_Crash(at_step=7)])
    folder = next((tmp_path / "training" / "vae").glob("*/checkpoints"))
    last = folder / "last.ckpt"
    assert {p.name for p in folder.iterdir()} == {"last.ckpt", "epoch=0-step=6.ckpt"}
    whole = last.read_bytes()
    last.write_bytes(whole[: len(whole) // 2])  # as a kill during Lightning's (non-atomic) write leaves it

    with caplog.at_level(logging.WARNING, logger="foley_core.core.resume"):
        metrics = train_vae(_profile(tmp_path), manifest, tmp_path / "vae")
    assert any("last.ckpt" in r.getMessage() and "last.ckpt.corrupt-1" in r.getMessage() for r in caplog.records)
    assert (folder / "last.ckpt.corrupt-1").read_bytes() == whole[: len(whole) // 2]  # kept, not deleted
    assert metrics["resumed_from_step"] == 6 and metrics["steps"] == STEPS
    _assert_same_weights(tmp_path / VAE_WEIGHTS, reference / VAE_WEIGHTS)


def test_unreadable_checkpoints_all_go_aside_and_training_starts_afresh(tmp_path, caplog):
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    torch.save({"model": torch.zeros(3)}, folder / "epoch=0-step=4.ckpt")  # loads, but is no Lightning checkpoint
    (folder / "last.ckpt").write_bytes(b"PK\x03\x04 truncated")
    (folder / "last.ckpt.corrupt-1").write_bytes(b"an earlier one")
    with caplog.at_level(logging.WARNING, logger="foley_core.core.resume"):
        assert resume_checkpoint(folder) is None
    assert sorted(p.name for p in folder.iterdir()) == ["epoch=0-step=4.ckpt.corrupt-1", "last.ckpt.corrupt-1",
                                                        "last.ckpt.corrupt-2"]  # fmt: skip
    assert len(caplog.records) == 2 and "no global_step/state_dict" in caplog.text
    assert resume_checkpoint(tmp_path / "missing") is None


def test_an_interrupted_vae_resumes_to_the_uninterrupted_weights(data, reference, tmp_path):
    """Random crops, the posterior's noise and the data order all continue where they stopped."""
    _, manifest, _ = data
    with pytest.raises(RuntimeError, match="simulated crash"):
        train_vae(_profile(tmp_path), manifest, tmp_path / "vae", callbacks=[_Crash(at_step=5)])
    metrics = train_vae(_profile(tmp_path), manifest, tmp_path / "vae")
    assert metrics["resumed_from_step"] == 3  # mid-epoch
    _assert_same_weights(tmp_path / VAE_WEIGHTS, reference / VAE_WEIGHTS)
    expected = json.loads((reference / "vae" / "metrics.json").read_text())
    assert metrics["loss_final"] == expected["loss_final"] and metrics["latent_scale"] == expected["latent_scale"]


class _CrashAfterTraining(Callback):
    def on_train_end(self, trainer, pl_module) -> None:
        raise RuntimeError("simulated crash")


def test_a_run_killed_after_its_last_step_gives_the_uninterrupted_model(data, reference, tmp_path):
    """Resumed at max_steps, nothing trains, yet the code after training draws from the restored RNG."""
    _, manifest, _ = data
    with pytest.raises(RuntimeError, match="simulated crash"):  # checkpoints every 4 steps: one at the last step
        train_vae(_profile(tmp_path, every=4), manifest, tmp_path / "vae", callbacks=[_CrashAfterTraining()])
    metrics = train_vae(_profile(tmp_path, every=4), manifest, tmp_path / "vae")
    assert metrics["resumed_from_step"] == STEPS
    _assert_same_weights(tmp_path / VAE_WEIGHTS, reference / VAE_WEIGHTS)
    assert metrics["latent_scale"] == json.loads((reference / "vae" / "metrics.json").read_text())["latent_scale"]


def test_an_interrupted_unet_resumes_to_the_uninterrupted_ema_weights(data, reference, tmp_path):
    """Noise, timesteps and condition dropout (the global RNG) and the EMA continue where they stopped."""
    _, manifest, conditioning = data
    with pytest.raises(RuntimeError, match="simulated crash"):
        train_unet(_profile(tmp_path), manifest, conditioning, reference / "vae", tmp_path / "unet", callbacks=[_Crash(5)])
    metrics = train_unet(_profile(tmp_path), manifest, conditioning, reference / "vae", tmp_path / "unet")
    assert metrics["resumed_from_step"] == 3
    _assert_same_weights(tmp_path / "unet/diffusion_pytorch_model.safetensors",
                         reference / "unet/diffusion_pytorch_model.safetensors")  # fmt: skip


def test_an_interrupted_clap_resumes_to_the_uninterrupted_weights(data, tmp_path):
    _, manifest, _ = data
    train = manifest[manifest["split"] == "train"]  # no val clips: skips the evaluation
    whole = train_clap(_profile(tmp_path), train, tmp_path / "whole")
    with pytest.raises(RuntimeError, match="simulated crash"):
        train_clap(_profile(tmp_path), train, tmp_path / "resumed", callbacks=[_Crash(at_step=5)])
    resumed = train_clap(_profile(tmp_path), train, tmp_path / "resumed")
    assert resumed["steps"] == STEPS and resumed["version"] == whole["version"]
    _assert_same_weights(tmp_path / "resumed/model.safetensors", tmp_path / "whole/model.safetensors")


_TRAIN_SCRIPT = """
import json, sys, time
import pandas as pd
from pytorch_lightning.callbacks import Callback
from foley_core.core.config import load_profile
from foley_core.ldm import train_vae

class Slow(Callback):  # widens the window in which the test kills the run; does not touch the RNG
    def on_train_batch_end(self, trainer, *args):
        time.sleep(0.3)

root, manifest, overrides, slow = sys.argv[1], pd.read_csv(sys.argv[2]), json.loads(sys.argv[3]), sys.argv[4] == "slow"
train_vae(load_profile("smoke", overrides), manifest, root + "/vae", callbacks=[Slow()] if slow else [])
"""


def _train_in_process(root: Path, data_root: Path, slow: bool) -> subprocess.Popen:
    arguments = [str(root), str(data_root / "manifest.csv"), json.dumps(_overrides(root, every=1)), "slow" if slow else "fast"]
    return subprocess.Popen([sys.executable, "-c", _TRAIN_SCRIPT, *arguments], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip


def test_a_killed_training_process_resumes_to_the_uninterrupted_weights(data, reference, tmp_path):
    """A real fault: SIGKILL of a training process as soon as it has a checkpoint (possibly mid-write)."""
    data_root, _, _ = data
    process = _train_in_process(tmp_path, data_root, slow=True)
    try:
        deadline = time.monotonic() + 120
        while not list(tmp_path.glob("training/vae/*/checkpoints/last.ckpt")):
            assert process.poll() is None, f"training died on its own: {process.stderr.read()[-2000:]}"
            assert time.monotonic() < deadline, "no checkpoint within 120 s"
            time.sleep(0.05)
        os.kill(process.pid, signal.SIGKILL)
    finally:  # a failed assertion must not leave the process training
        process.kill()
        process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL
    assert not (tmp_path / "vae" / "metrics.json").exists()

    again = _train_in_process(tmp_path, data_root, slow=False)
    _, errors = again.communicate(timeout=300)
    assert again.returncode == 0, errors[-2000:]
    metrics = json.loads((tmp_path / "vae" / "metrics.json").read_text())
    assert metrics["steps"] == STEPS and 0 < metrics["resumed_from_step"] < STEPS
    _assert_same_weights(tmp_path / VAE_WEIGHTS, reference / VAE_WEIGHTS)
