"""Teach the pipeline's CLAP a user's recordings: fine-tune its audio tower, text side frozen.

A CLAP trained on the procedural corpus ranks real recordings close to chance (0.50 zero-shot
on ../shared/data/real-foley), so candidate selection on real material would pick at random.
Only the audio tower and its projection train:

* the text embeddings do not move, so the UNet's conditioning (the CLAP text tower, for models
  trained here) and every cached text embedding stay valid;
* the objective is the zero-shot rule itself: each clip's audio embedding should lie nearest
  its class's prompt embedding (mean of the class's prompts, as ``evaluate_clap`` scores),
  a cross-entropy over the target classes with CLAP's logit scale. In-batch contrastive loss
  would treat two clips of one class as negatives of each other, and with a few classes
  nearly every batch is full of such pairs;
* half of each batch replays the profile's own training clips (target classes), so what the
  tower knew of the procedural corpus is kept (checked on its validation clips).
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from foley_core.clap.encoder import TrainedClapEncoder, save_trained
from foley_core.clap.evaluate import read_clips
from foley_core.clap.similarity import cosine_matrix
from foley_core.core.config import Profile
from foley_core.core.progress import TerminalProgress
from foley_core.core.resume import Draw, RngState, SeededDataModule, sample_rng
from foley_core.core.training import build_trainer


def class_prompt_embeddings(encoder: TrainedClapEncoder, profile: Profile, classes: list[str]) -> torch.Tensor:
    """(n_classes, d): the normalised mean of each class's prompt embeddings (``evaluate_clap``'s rule)."""
    rows = []
    for label in classes:
        mean = encoder.encode_text(list(profile.class_config(label).prompts)).mean(0)
        rows.append(mean / mean.norm().clamp_min(1e-12))
    return torch.stack(rows)


def zero_shot_accuracy(encoder: TrainedClapEncoder, paths: list[str], labels: list[str], prompts: torch.Tensor,
                       classes: list[str]) -> dict:
    """Accuracy of nearest-prompt classification over ``classes``, overall and per class."""
    if not paths:
        return {"accuracy": float("nan"), "per_class": {}, "clips": 0}
    audio = encoder.encode_audio(read_clips(paths, encoder.sample_rate), encoder.sample_rate)
    predicted = np.array(classes)[cosine_matrix(audio, prompts).argmax(1).numpy()]
    labels = np.asarray(labels)
    return {"accuracy": float((predicted == labels).mean()), "clips": len(labels),
            "per_class": {c: float((predicted[labels == c] == c).mean()) for c in classes if (labels == c).any()}}


class LabelledCrops(Dataset):
    """Random crops of clips with their class index; each crop drawn from its ``Draw``'s own RNG."""

    def __init__(self, clips: list[np.ndarray], labels: list[int], crop: int, replay: list[np.ndarray],
                 replay_labels: list[int]):
        self.items = list(zip(clips, labels))
        self.replay = list(zip(replay, replay_labels))
        self.crop = crop

    def __len__(self) -> int:
        return len(self.items) * (2 if self.replay else 1)  # every other draw replays the profile's corpus

    def __getitem__(self, item: Draw):
        index, rng = sample_rng(item)
        if index >= len(self.items):
            clip, label = self.replay[int(rng.integers(len(self.replay)))]
        else:
            clip, label = self.items[index]
        if clip.shape[0] > self.crop:
            start = int(rng.integers(0, clip.shape[0] - self.crop + 1))
            clip = clip[start : start + self.crop]
        elif clip.shape[0] < self.crop:
            clip = np.pad(clip, (0, self.crop - clip.shape[0]))
        return torch.from_numpy(np.ascontiguousarray(clip, dtype=np.float32)), label


class AudioTowerModule(pl.LightningModule):
    def __init__(self, encoder: TrainedClapEncoder, prompts: torch.Tensor, learning_rate: float, steps: int):
        super().__init__()
        self.model = encoder.model
        self.model.requires_grad_(False)
        self.model.audio_branch.requires_grad_(True)
        self.model.audio_projection.requires_grad_(True)
        self.register_buffer("prompts", prompts.detach().clone())
        self.learning_rate, self.steps = learning_rate, steps

    def training_step(self, batch, batch_index):
        waveform, labels = batch
        audio = self.model.embed_audio(waveform)
        scale = self.model.logit_scale_a.clamp(0, math.log(100)).exp().detach()
        loss = F.cross_entropy(scale * audio @ self.prompts.T, labels)
        self.log("clap_adapt/loss", loss)
        return loss

    def configure_optimizers(self):
        params = [p for p in self.model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=self.learning_rate, weight_decay=1e-4)
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, self.steps) / max(1, self.steps))))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}


def adapt_audio_tower(profile: Profile, base_folder: Path, train: pd.DataFrame, replay: pd.DataFrame,
                      classes: list[str], out_dir: Path, *, steps: int, learning_rate: float, batch_size: int) -> dict:
    """Fine-tune the CLAP in ``base_folder`` on ``train`` (+ ``replay``) clips of ``classes``; save to ``out_dir``.

    Returns ``{"version", "steps", "seconds", "loss_first", "loss_final"}``."""
    pl.seed_everything(profile.seed, workers=True)
    encoder = TrainedClapEncoder.load(Path(base_folder))
    index = {c: i for i, c in enumerate(classes)}
    prompts = class_prompt_embeddings(encoder, profile, classes)
    crop = profile.audio.clip_samples  # whole clips, as candidates are scored: a short event's crop may miss it
    replay = replay[replay["class"].isin(classes)]
    dataset = LabelledCrops(read_clips(train["abs_path"], encoder.sample_rate), [index[c] for c in train["class"]], crop,
                            read_clips(replay["abs_path"], encoder.sample_rate), [index[c] for c in replay["class"]])
    module = AudioTowerModule(encoder, prompts, learning_rate, steps)
    losses: list[float] = []

    class Losses(pl.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            losses.append(float(outputs["loss"]))

    trainer = build_trainer(profile, steps=steps, single_device=True, logger=False, enable_checkpointing=False,
                            callbacks=[RngState(), Losses(), TerminalProgress("clap audio tower")])
    started = time.perf_counter()
    trainer.fit(module, datamodule=SeededDataModule(dataset, batch_size, profile.trainer.num_workers, profile.seed))
    module.model.eval()
    version = save_trained(module.model.cpu(), Path(out_dir))
    return {"version": version, "steps": int(trainer.global_step), "seconds": round(time.perf_counter() - started, 1),
            "loss_first": losses[0] if losses else None, "loss_final": float(np.mean(losses[-10:])) if losses else None}
