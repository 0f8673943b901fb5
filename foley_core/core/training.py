"""The one Lightning ``Trainer`` builder: every network this project trains (CLAP, its audio
tower adapted to own recordings, VAE, vocoder, UNet, adapter, transfer steps) trains through it,
so the profile's ``trainer`` section means the same thing everywhere.

Fixed for all of them, and why:
- step-based (``max_steps``, ``max_epochs=-1``): runs are sized in optimizer steps and resume to
  the same step whatever the dataset size;
- no progress bar or model summary: ``TerminalProgress`` prints one line per stage instead;
- ``use_distributed_sampler=False``: ``foley_core.core.resume.SeededBatches`` shards batches by rank
  itself, so the batch order is a pure function of (seed, step) however many ranks there are.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback

from foley_core.core.config import Profile


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
