"""Fault-tolerant, exact resume of the Lightning trainings (LDM networks, fine-tuning, CLAP).

A resumed run must reach the same weights as an uninterrupted one on the same hardware. Lightning
restores the model, optimizer, schedulers, loop counters and callback states; three things it
does not restore are handled here:

* the data order: ``SeededBatches`` makes every batch a pure function of (seed, step), and the
  loader starts at the restored step (Lightning itself would replay the interrupted epoch from
  its first batch, with a generator re-seeded from scratch);
* per-sample randomness (random crops): keyed by (seed, step, slot) instead of drawn from the
  global RNG, which Lightning's one-batch prefetch would advance at a different moment on resume;
* the global torch RNG (noise, timesteps, dropout in ``training_step``): ``RngState`` keeps it in
  the checkpoint. Under DDP a checkpoint holds rank 0's state only, so there ``RankSeeds`` re-seeds
  each rank at each step from (seed, step, rank) instead.

And since Lightning writes checkpoints in place, not atomically, a run killed mid-write leaves a
truncated file: ``resume_checkpoint`` moves such a file aside and picks the newest readable one.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Iterator

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.utilities import rank_zero_only
from torch.utils.data import DataLoader, Dataset, Sampler

from foley_core.core.hashing import stable_seed

log = logging.getLogger(__name__)

Draw = tuple[int, tuple[int, int, int]]  # (dataset index, key of this draw's randomness: (seed, step, slot))


def resume_checkpoint(folder: Path) -> Path | None:
    """The checkpoint to resume from: ``last.ckpt`` if it loads, else the newest other one that does, else None.

    An unreadable checkpoint is renamed ``<name>.corrupt-<n>`` (kept for inspection, out of the way of
    every later run) with a warning naming it and why."""
    folder = Path(folder)
    others = sorted((p for p in folder.glob("*.ckpt") if p.name != "last.ckpt"), key=lambda p: p.stat().st_mtime, reverse=True)
    for path in [folder / "last.ckpt", *others]:
        if not path.is_file():
            continue
        if (problem := _unreadable(path)) is None:
            return path
        # Under DDP every rank looks; only rank 0 moves files. The choice is the same on every rank, since
        # moving an unreadable file aside does not change which is the first readable one.
        if rank_zero_only.rank == 0:
            n = 1
            while (aside := path.with_name(f"{path.name}.corrupt-{n}")).exists():
                n += 1
            path.rename(aside)
            log.warning("checkpoint %s cannot be resumed (%s); moved aside to %s", path, problem, aside.name)
    return None


def _unreadable(path: Path) -> str | None:
    """Why the checkpoint cannot be resumed, or None if it can: it must load as Lightning will load it."""
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # truncated zip, bad pickle, unreadable file: all mean "not resumable"
        message = str(error).strip().splitlines()
        return f"{type(error).__name__}: {message[0]}" if message else type(error).__name__
    if not isinstance(checkpoint, dict) or not {"global_step", "state_dict"} <= checkpoint.keys():
        return "not a Lightning checkpoint: no global_step/state_dict"
    return None


class RngState(Callback):
    """Keeps the global torch RNG (CPU and current CUDA device) in checkpoints and restores it on resume.

    Saved with each checkpoint (in a callback's ``on_train_batch_end``); from there to the next
    ``training_step`` nothing draws from the global RNG: crops are keyed (``SeededBatches``) and the loader
    has its own generator. Restored at ``on_fit_start``, which also runs when the checkpoint is already at
    ``max_steps`` (nothing trains, but the code after training may draw, e.g. the VAE's latent scale);
    ``on_train_start`` is the fallback for strategies that restore checkpoints after ``on_fit_start``.
    Python's and numpy's global RNGs are not used in training, so not kept."""

    def __init__(self) -> None:
        self._restore: dict | None = None

    def state_dict(self) -> dict:
        state = {"torch": torch.get_rng_state()}  # uint8 tensors: loadable with weights_only=True
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            state["cuda"] = torch.cuda.get_rng_state()
        return state

    def load_state_dict(self, state_dict: dict) -> None:
        self._restore = state_dict

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._apply()

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._apply()

    def _apply(self) -> None:
        if self._restore is None:
            return
        torch.set_rng_state(self._restore["torch"])
        if "cuda" in self._restore and torch.cuda.is_available():
            torch.cuda.set_rng_state(self._restore["cuda"])
        self._restore = None


class RankSeeds(Callback):
    """Under DDP, the global torch RNG of each rank re-seeded before each step from (seed, step, rank).

    Lightning checkpoints are written by rank 0 alone, so ``RngState`` restores rank 0's RNG on every
    rank: a resumed rank 1 would draw rank 0's noise. Keyed by step, the draws need no checkpoint.
    Keyed by rank, the ranks draw different noise for their different clips (seeded alike, rank 1
    would repeat rank 0's draws). A no-op on one process, whose RNG stream stays what it always was.
    Stateless; one optimizer step per batch (no gradient accumulation here)."""

    def __init__(self, seed: int):
        self.seed = seed

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module, batch, batch_idx: int) -> None:
        if trainer.world_size > 1:
            torch.manual_seed(stable_seed("rank-rng", self.seed, trainer.global_step, trainer.global_rank, bits=63))


class SeededBatches(Sampler[list[Draw]]):
    """Endless batches of ``(index, key)`` whose order is a pure function of (seed, step).

    Epoch ``e`` is ``randperm(size)`` under seed ``seed + e`` (as DistributedSampler does), cut into whole
    batches; step ``s`` is batch ``s % per_epoch`` of epoch ``s // per_epoch``. Started at ``start_step`` it
    yields exactly what an uninterrupted run yields from that step on. ``key`` seeds the sample's own
    randomness (``sample_rng``). Under DDP each rank takes its slice of every global batch. Endless (no
    ``__len__``): Lightning runs one epoch that ``max_steps`` ends, so it never restarts an epoch."""

    def __init__(self, size: int, batch_size: int, seed: int, start_step: int = 0, rank: int = 0, world_size: int = 1):
        if size < world_size:
            raise ValueError(f"{size} samples cannot fill a batch on each of {world_size} devices")
        self.size, self.seed, self.start_step, self.rank = size, seed, start_step, rank
        self.batch_size = min(batch_size, size // world_size)
        self.global_batch = self.batch_size * world_size
        self.per_epoch = size // self.global_batch  # drop_last: every batch is full

    def __iter__(self) -> Iterator[list[Draw]]:
        step, epoch, order = self.start_step, None, []
        while True:
            if step // self.per_epoch != epoch:
                epoch = step // self.per_epoch
                order = torch.randperm(self.size, generator=torch.Generator().manual_seed(self.seed + epoch)).tolist()
            first = (step % self.per_epoch) * self.global_batch + self.rank * self.batch_size
            slots = range(self.rank * self.batch_size, (self.rank + 1) * self.batch_size)
            yield [(order[first + i], (self.seed, step, slot)) for i, slot in enumerate(slots)]
            step += 1


def sample_rng(item: Draw | int) -> tuple[int, np.random.Generator]:
    """A dataset item's index and its own RNG (a plain int index gets a fixed one)."""
    index, key = item if isinstance(item, tuple) else (item, (item,))
    return int(index), np.random.default_rng(key)


class SeededDataModule(pl.LightningDataModule):
    """One in-memory map-style dataset, batched by ``SeededBatches`` from the trainer's restored step.

    Lightning calls ``train_dataloader()`` after restoring the checkpoint, so ``trainer.global_step`` is
    where the resumed run starts. The datasets' ``__getitem__`` take ``Draw`` items.

    ``batch_size`` is the global batch: under DDP each of the N ranks takes its N-th of every batch
    the single process would draw (same clips, same crops), so N only changes where a clip is computed."""

    def __init__(self, dataset: Dataset, batch_size: int, num_workers: int, seed: int):
        super().__init__()
        self.dataset, self.batch_size, self.num_workers, self.seed = dataset, batch_size, num_workers, seed

    def train_dataloader(self) -> DataLoader:
        trainer = self.trainer
        if self.batch_size % trainer.world_size:
            raise ValueError(f"a batch of {self.batch_size} cannot be split evenly over {trainer.world_size} processes: "
                             "make the batch size a multiple of trainer.devices")
        batches = SeededBatches(len(self.dataset), self.batch_size // trainer.world_size, self.seed,
                                start_step=trainer.global_step * trainer.accumulate_grad_batches,
                                rank=trainer.global_rank, world_size=trainer.world_size)  # fmt: skip
        # The generator only seeds worker processes; without it the loader would draw from the global RNG.
        return DataLoader(self.dataset, batch_sampler=batches, num_workers=self.num_workers,
                          generator=torch.Generator().manual_seed(self.seed),
                          persistent_workers=self.num_workers > 0)  # fmt: skip
