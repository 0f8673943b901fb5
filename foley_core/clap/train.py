"""Contrastive training of the pipeline's small CLAP with Lightning and laion-clap's ``ClipLoss``.

Seeded; checkpoints every N steps plus ``last.ckpt`` (state dicts and plain values only,
so ``torch.load(weights_only=True)`` reads them); resumes from the last readable checkpoint
to the same weights as an uninterrupted run (``foley_core.core.resume``); logs to wandb offline.
The frozen MiniLM features of every caption are computed once up front, so a training step
runs only the audio tower and the projections.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from functools import cache
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback, ModelCheckpoint
from pytorch_lightning.loggers import WandbLogger
from torch.utils.data import Dataset

from foley_core.clap._laion import clap_module
from foley_core.clap.encoder import TrainedClapEncoder, save_trained
from foley_core.clap.evaluate import evaluate_clap, read_clips
from foley_core.clap.towers import SmallClap, TowerConfig
from foley_core.core.audio import write_text_atomic
from foley_core.core.code_version import source_version
from foley_core.core.config import Profile
from foley_core.core.env import retrain_requested
from foley_core.core.hashing import json_hash
from foley_core.core.progress import TerminalProgress
from foley_core.core.resume import Draw, RngState, SeededDataModule, resume_checkpoint, sample_rng
from foley_core.core.training import build_trainer, fit_on_ranks, world_size

CHECKPOINTS = "checkpoints"
METRICS = "metrics.json"


def tower_config(profile: Profile) -> TowerConfig:
    clap, audio = profile.clap, profile.audio
    return TowerConfig(
        embed_dim=clap.embed_dim, sample_rate=audio.sample_rate, audio_tower=clap.audio_tower,
        audio_channels=tuple(clap.audio_channels), mel_bins=clap.mel_bins, window_size=clap.window_size,
        hop_size=clap.hop_size, fmin=audio.f_min, fmax=audio.f_max, text_tower=clap.text_tower,
        text_width=clap.text_width, text_layers=clap.text_layers, text_heads=clap.text_heads,
        context_length=clap.context_length,
    )


class CaptionedClips(Dataset):
    """Random crops of in-memory clips (int16, to halve memory) paired with their caption's tower input;
    each crop drawn from its ``Draw`` key's own RNG, so a resumed run crops as an uninterrupted one."""

    def __init__(self, clips: list[np.ndarray], text_inputs: torch.Tensor, crop_samples: int):
        self.clips = [np.round(np.clip(c, -1, 1) * 32767).astype(np.int16) for c in clips]
        self.text_inputs = text_inputs
        self.crop = crop_samples

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, item: Draw):
        index, rng = sample_rng(item)
        clip = self.clips[index]
        if clip.shape[0] > self.crop:
            start = int(rng.integers(0, clip.shape[0] - self.crop + 1))
            clip = clip[start : start + self.crop]
        return torch.from_numpy(clip.astype(np.float32) / 32767.0), self.text_inputs[index]


@cache
def contrastive_loss(rank: int, ranks: int):
    """laion's ``ClipLoss``. Under DDP it gathers every rank's embeddings with their gradients, so each
    clip is contrasted with the whole global batch, as on one process (not with its rank's share only).
    A function, not a module attribute: the module is pickled to the ranks, where laion's privately
    loaded package (``_laion.py``) has no importable name."""
    return clap_module().ClipLoss(gather_with_grad=ranks > 1, rank=rank, world_size=ranks)


class ClapTrainingModule(pl.LightningModule):
    def __init__(self, cfg: TowerConfig, learning_rate: float, steps: int):
        super().__init__()
        self.model = SmallClap(cfg)
        self.learning_rate = learning_rate
        self.steps = steps

    def compute_loss(self, batch, rank: int = 0, ranks: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        """The contrastive loss of one batch and the logit scale it used (also what the benchmarks time)."""
        waveform, text_inputs = batch
        audio = self.model.embed_audio(waveform)
        text = self.model.embed_text_features(text_inputs)
        scale = self.model.logit_scale_a.clamp(0, math.log(100)).exp()  # laion clamps at 100
        return contrastive_loss(rank, ranks)(audio, text, scale), scale

    def training_step(self, batch, batch_index):
        loss, scale = self.compute_loss(batch, self.global_rank, self.trainer.world_size)
        self.log("train/loss", loss, on_step=True, prog_bar=False)
        self.log("train/logit_scale", scale, on_step=True)
        return loss

    def configure_optimizers(self):
        params = [p for p in self.model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=self.learning_rate, weight_decay=1e-4)
        warmup = max(1, self.steps // 20)
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer,
            lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(s, self.steps) / max(1, self.steps))),
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}


def _logger(profile: Profile, out_dir: Path):
    if profile.wandb.mode == "disabled":
        return False
    return WandbLogger(project=profile.wandb.project, name=f"clap-{profile.name}", save_dir=str(out_dir),
                       mode=profile.wandb.mode, log_model=False)


def train_clap(profile: Profile, manifest: pd.DataFrame, out_dir: Path, *, paraphrases: pd.DataFrame | None = None,
               callbacks: Sequence[Callback] = ()) -> dict:
    """Train on the manifest's train split, evaluate on its val split, save safetensors + config.json.

    Returns the metrics (also written to ``out_dir/metrics.json``).
    """
    if profile.clap.source != "trained":
        raise ValueError(f"profile {profile.name!r} uses a pretrained {profile.clap.source} CLAP: load it with load_clap()")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    pl.seed_everything(profile.seed, workers=True)
    train = manifest[manifest["split"] == "train"].reset_index(drop=True)
    if len(train) < 2:
        raise ValueError(f"contrastive training needs at least 2 training clips, the manifest has {len(train)}")
    cfg = tower_config(profile)
    module = ClapTrainingModule(cfg, profile.clap.learning_rate, profile.clap.steps)
    with torch.no_grad():
        text_inputs = module.model.text_features(list(train["caption"])).cpu()
    crop = int(round(profile.clap.crop_seconds * cfg.sample_rate))
    dataset = CaptionedClips(read_clips(train["abs_path"], cfg.sample_rate), text_inputs, crop)
    data = SeededDataModule(dataset, profile.clap.batch_size, profile.trainer.num_workers, profile.seed)
    settings = _trainer_settings(profile, out_dir, callbacks)
    last = out_dir / CHECKPOINTS / "last.ckpt"
    _discard_stale_checkpoints(out_dir / CHECKPOINTS, _run_fingerprint(profile, train))
    resume = resume_checkpoint(out_dir / CHECKPOINTS)
    processes = world_size(profile)
    if processes > 1:  # the ranks save `last` too; this process goes on with the trained state
        # their output beside the model folder, not in it: the promoted pipeline copies that folder
        trainer, ranks = fit_on_ranks(profile, module, data, resume=resume, last=last,
                                      run_dir=out_dir.parent / f"{out_dir.name}-ranks", prepare=[clap_module],
                                      **settings)  # fmt: skip
        train_seconds = ranks["seconds"]
    else:
        trainer = build_trainer(profile, **settings)
        started = time.perf_counter()
        trainer.fit(module, datamodule=data, ckpt_path=str(resume) if resume else None, weights_only=True)
        trainer.save_checkpoint(last)  # step-based saving skips the final step; resuming needs it
        train_seconds = time.perf_counter() - started

    version = save_trained(module.model.cpu(), out_dir)
    encoder = TrainedClapEncoder.load(out_dir)
    val = manifest[manifest["split"] == "val"].reset_index(drop=True)
    metrics = evaluate_clap(encoder, val, profile, paraphrases) if len(val) else {}
    loss = trainer.callback_metrics.get("train/loss")
    metrics.update(
        final_loss=float(loss) if loss is not None else float("nan"), steps=int(trainer.global_step),
        train_seconds=round(train_seconds, 2), version=version, train_clips=int(len(train)),
        text_tower=cfg.text_tower, audio_tower=cfg.audio_tower, precision=str(trainer.precision),
        world_size=processes,  # that trained it (the global batch is the same for any number)
    )
    if trainer.logger:
        trainer.logger.log_metrics({f"eval/{k}": v for k, v in metrics.items() if isinstance(v, (int, float))},
                                   step=trainer.global_step)
        trainer.logger.finalize("success")
        trainer.logger.experiment.finish()  # else the next stage's WandbLogger silently reuses this run
    write_text_atomic(out_dir / METRICS, json.dumps(metrics, indent=2, sort_keys=True))
    return metrics


def _training_code_version() -> str:
    """The version of the code training runs (the towers, this loop, its data order)."""
    return source_version(train_clap)


def _run_fingerprint(profile: Profile, train: pd.DataFrame) -> str:
    """What a checkpoint must share to be resumed: data, seed, audio and CLAP settings except the
    step count, and the training code (a checkpoint of older code would be resumed as if new)."""
    settings = profile.model_dump(mode="json", include={"seed", "audio", "clap"})
    settings["clap"].pop("steps")
    settings["train"] = sorted(zip(train["content_hash"], train["caption"]))
    settings["code"] = _training_code_version()
    return json_hash(settings)[:16]


def _discard_stale_checkpoints(folder: Path, fingerprint: str) -> None:
    """Checkpoints of another dataset or config are not resumed but deleted."""
    marker = folder.parent / "checkpoints_run.json"  # beside, not inside: Lightning warns on a non-empty dir
    stale = not marker.is_file() or json.loads(marker.read_text()).get("fingerprint") != fingerprint
    if folder.is_dir() and (stale or retrain_requested()):  # `foley run --force`: train from scratch
        shutil.rmtree(folder)
    write_text_atomic(marker, json.dumps({"fingerprint": fingerprint}))


def _trainer_settings(profile: Profile, out_dir: Path, callbacks: Sequence[Callback] = ()) -> dict:
    """``build_trainer``'s arguments (on one process, or pickled to each rank)."""
    checkpoint = ModelCheckpoint(dirpath=out_dir / CHECKPOINTS, filename="clap-{step}", save_last=True,
                                 save_top_k=1, every_n_train_steps=profile.trainer.checkpoint_every_n_steps,
                                 save_weights_only=False)
    return {
        "steps": profile.clap.steps, "precision": profile.clap.precision, "work_dir": out_dir,
        "callbacks": [RngState(), checkpoint, *callbacks, TerminalProgress("clap")], "logger": _logger(profile, out_dir),
        "log_every_n_steps": 10, "deterministic": False,
    }
