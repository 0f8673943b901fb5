"""The one Lightning ``Trainer`` builder: every network this project trains (CLAP, its audio
tower adapted to own recordings, VAE, vocoder, UNet, adapter, transfer steps) trains through it,
so the profile's ``trainer`` section means the same thing everywhere.

Fixed for all of them, and why:
- step-based (``max_steps``, ``max_epochs=-1``): runs are sized in optimizer steps and resume to
  the same step whatever the dataset size;
- no progress bar or model summary: ``TerminalProgress`` prints one line per stage instead;
- ``use_distributed_sampler=False``: ``foley_core.core.resume.SeededBatches`` shards batches by rank
  itself, so the batch order is a pure function of (seed, step) however many ranks there are.

Several processes (``trainer: {strategy: ddp, devices: N}``, docs/scaling.md): ``fit_on_ranks``
starts the N ranks itself, each a fresh ``python`` with the environment Lightning reads when the
processes are created outside it (``LOCAL_RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``/``PORT``, as
torchrun sets them). Lightning's own launchers do not fit a library called from Dagster: ``ddp``
re-runs the command line (a second ``foley run``, which the run lock refuses), ``ddp_spawn``
brings back only the weights (not the EMA, the loss history, the RNG or the step). The ranks
only train and checkpoint; the calling process then restores the final checkpoint and goes on
alone, so whatever follows a fit (the model, its record, the caches) is written once, by it.
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Sequence

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback

from foley_core.core.config import Profile
from foley_core.core.fsutil import write_text_atomic
from foley_core.core.resume import RankSeeds

log = logging.getLogger(__name__)

PARENT_ENV = "FOLEY_DDP_PARENT"  # the pid a rank must die with
CALL = "call.pt"  # what each rank runs: written by the caller, read by the ranks
PREPARE = "prepare.pt"  # what each rank calls before it can read CALL
RESULT = "result.json"  # what rank 0 reports back: its fit's seconds and last logged metrics


def build_trainer(profile: Profile, *, steps: int, callbacks: Sequence[Callback], logger, work_dir: Path | None = None,
                  precision: str | None = None, single_device: bool = False, **settings) -> pl.Trainer:
    """A Trainer for ``steps`` optimizer steps with the profile's accelerator, devices, strategy and
    nodes (``single_device``: one device, no strategy, as for a short fine-tune inside a step).
    ``precision``: the network's own setting; None = ``trainer.precision``. ``settings``: any
    further Trainer argument (checkpointing, logging cadence, validation)."""
    t = profile.trainer
    placement = {"devices": 1} if single_device else {"devices": t.devices, "strategy": t.strategy,
                                                        "num_nodes": t.num_nodes}
    return pl.Trainer(
        max_steps=steps, max_epochs=-1, accelerator=t.accelerator, **placement, precision=precision or t.precision,
        callbacks=list(callbacks), logger=logger, default_root_dir=str(work_dir) if work_dir is not None else None,
        enable_progress_bar=False, enable_model_summary=False, use_distributed_sampler=False, **settings,
    )  # fmt: skip


def world_size(profile: Profile) -> int:
    """How many processes the profile's ``trainer`` section trains with: ``devices`` x ``num_nodes``,
    as Lightning counts them when ``devices`` is not a plain count (``auto``, ``-1``, ``"0,1"``)."""
    t = profile.trainer
    if isinstance(t.devices, int) and t.devices > 0:
        return t.devices * t.num_nodes
    probe = pl.Trainer(accelerator=t.accelerator, devices=t.devices, strategy=t.strategy, num_nodes=t.num_nodes,
                       logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    return probe.world_size


def fit_on_ranks(profile: Profile, module: pl.LightningModule, data: pl.LightningDataModule, *, resume: Path | None,
                 last: Path, run_dir: Path, prepare: Sequence[Callable[[], object]] = (),
                 **settings) -> tuple[pl.Trainer, dict]:
    """``trainer.fit`` on ``world_size(profile)`` processes of this host, then the trained state in this one.

    ``settings`` are ``build_trainer``'s (callbacks and logger included: they are pickled to the ranks,
    so they must be importable classes). Each rank resumes from ``resume`` and ends by saving ``last``;
    this process then resumes from ``last`` with one device (already at ``max_steps``: nothing trains),
    which restores the module, the EMA, the callbacks' states and rank 0's RNG exactly as a killed and
    resumed single-process run would. ``run_dir`` holds the call and each rank's output
    (``rank-<n>.log``). ``prepare``: functions (importable by name) each rank calls before unpickling
    the call, for objects of a module loaded under a private name. Returns that trainer and
    ``{"world_size", "start_step", "seconds"}``."""
    if profile.trainer.num_nodes > 1:
        raise ValueError(f"trainer.num_nodes={profile.trainer.num_nodes}: the ranks are started on this host only; "
                         "several hosts train through the graph's workers (docs/scaling.md)")
    ranks, start = world_size(profile), _checkpoint_step(resume)
    seconds = 0.0
    if start < settings["steps"]:  # a checkpoint at max_steps (killed after training) needs no ranks
        seconds, metrics = _launch(ranks, run_dir, prepare, {"profile": profile, "settings": settings, "module": module,
                                                             "data": data, "resume": resume, "last": last})  # fmt: skip
    else:
        last, metrics = resume, {}
    trainer = build_trainer(profile, **{**settings, "logger": False}, single_device=True)
    trainer.fit(module, datamodule=data, ckpt_path=str(last), weights_only=True)
    # what a single-process fit leaves there, as Lightning's ddp_spawn brings it back too
    trainer.callback_metrics.update({name: torch.tensor(value) for name, value in metrics.items()})
    return trainer, {"world_size": ranks, "start_step": start, "seconds": seconds}


def _checkpoint_step(path: Path | None) -> int:
    if path is None:
        return 0
    return int(torch.load(path, map_location="cpu", weights_only=True, mmap=True)["global_step"])


def _launch(ranks: int, run_dir: Path, prepare: Sequence[Callable[[], object]], call: dict) -> tuple[float, dict]:
    """Start the ranks, wait for all of them (the one barrier the caller needs), return rank 0's report."""
    if run_dir.exists():  # a killed launch's leftovers
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True)
    torch.save(list(prepare), run_dir / PREPARE)
    torch.save(call, run_dir / CALL)
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port()), "WORLD_SIZE": str(ranks),
           "NODE_RANK": "0", PARENT_ENV: str(os.getpid()),
           # the pickled callbacks and modules resolve in the ranks as they do here
           "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}  # fmt: skip
    log.info("training on %d processes; their output: %s", ranks, run_dir)
    processes = []
    try:
        for rank in range(ranks):
            with open(run_dir / f"rank-{rank}.log", "w") as output:
                processes.append(subprocess.Popen(
                    [sys.executable, "-c", "from foley_core.core.training import run_rank; run_rank()", str(run_dir)],
                    env={**env, "LOCAL_RANK": str(rank)}, stdout=output, stderr=subprocess.STDOUT))  # fmt: skip
        _wait_for_all(processes, run_dir)
    finally:
        for process in processes:  # an exception here (or in one rank) must not leave the others training
            if process.poll() is None:
                process.kill()
                process.wait()
        for name in (PREPARE, CALL):
            (run_dir / name).unlink(missing_ok=True)
    report = json.loads((run_dir / RESULT).read_text())
    return report["seconds"], report["callback_metrics"]


def _wait_for_all(processes: list[subprocess.Popen], run_dir: Path) -> None:
    """Until every rank has exited 0; the first that fails ends the others (they would wait for it
    in a collective until the process group's timeout) and raises with the end of its output."""
    while True:
        codes = [p.poll() for p in processes]
        failed = [(rank, code) for rank, code in enumerate(codes) if code not in (None, 0)]
        if failed:
            rank, code = failed[0]
            tail = "\n".join((run_dir / f"rank-{rank}.log").read_text(errors="replace").splitlines()[-30:])
            raise RuntimeError(f"training rank {rank} of {len(processes)} failed (exit code {code}); "
                               f"the end of {run_dir / f'rank-{rank}.log'}:\n{tail}")
        if all(code == 0 for code in codes):
            return
        time.sleep(0.2)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_rank() -> None:
    """One rank (``python -c "...run_rank()" RUN_DIR``): fit, save the final checkpoint, and on
    rank 0 report the fit's seconds and last logged metrics. Lightning reads the rank from the
    environment ``_launch`` set, so its ``ddp`` strategy joins the others instead of launching."""
    _die_with_parent()
    run_dir = Path(sys.argv[1])
    for prepare in torch.load(run_dir / PREPARE, weights_only=False):
        prepare()
    call = torch.load(run_dir / CALL, map_location="cpu", weights_only=False)  # written by this run's caller
    settings = call["settings"]
    trainer = build_trainer(call["profile"], **{**settings, "callbacks": [*settings["callbacks"],
                                                                           RankSeeds(call["profile"].seed)]})
    started = time.perf_counter()
    resume = call["resume"]
    trainer.fit(call["module"], datamodule=call["data"], ckpt_path=str(resume) if resume else None, weights_only=True)
    seconds = round(time.perf_counter() - started, 2)
    trainer.save_checkpoint(call["last"], weights_only=False)  # every rank calls it (a collective); rank 0 writes
    if trainer.is_global_zero:
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if torch.is_tensor(v) and v.numel() == 1}
        write_text_atomic(run_dir / RESULT, json.dumps({"seconds": seconds, "callback_metrics": metrics}))


def _die_with_parent() -> None:
    """A rank is killed with the process that started it (Linux): a ``kill -9`` of ``foley run``
    must not leave ranks training and checkpointing beside the run that resumes."""
    if sys.platform == "linux":
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG
    if os.getppid() != int(os.environ[PARENT_ENV]):  # it died before prctl took effect
        os._exit(1)
