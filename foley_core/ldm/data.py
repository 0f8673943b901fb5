"""Training data for the LDM stage: clips of the ingested manifest, held in memory as tensors.

The cpu corpus (~1,100 clips of 4 s) is ~290 MB as float32 waveforms and ~110 MB as
log-mel, so everything is decoded once and batches are random crops of in-memory tensors.
Items are ``Draw``s, ``(index, key)``: a crop is drawn from the key's own RNG, so a resumed run
crops exactly as an uninterrupted one (see ``foley_core.core.resume``).
"""

from __future__ import annotations

from typing import Callable, Mapping

import numpy as np
import pandas as pd
import soundfile as sf
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from foley_core.core.config import AudioConfig
from foley_core.core.resume import Draw, SeededDataModule, sample_rng
from foley_core.ldm.mel import MelFrontEnd

Conditioning = Callable[[list[str]], np.ndarray] | Mapping[str, np.ndarray]
InMemoryDataModule = SeededDataModule  # shuffled, seeded, resumable at any step (foley_core.core.resume)


def split_rows(manifest: pd.DataFrame, split: str) -> pd.DataFrame:
    rows = manifest[manifest["split"] == split].reset_index(drop=True)
    if rows.empty:
        raise ValueError(f"the manifest has no {split!r} clips")
    return rows


def load_waveforms(manifest: pd.DataFrame, audio: AudioConfig) -> torch.Tensor:
    """All clips as ``(n, clip_samples)`` float32; every clip must already be at the profile's rate and length."""
    waves = np.zeros((len(manifest), audio.clip_samples), dtype=np.float32)
    for i, path in enumerate(manifest["abs_path"]):
        wave, rate = sf.read(path, dtype="float32", always_2d=False)
        if rate != audio.sample_rate or wave.ndim != 1:
            raise ValueError(f"{path}: expected mono {audio.sample_rate} Hz, got {rate} Hz, shape {wave.shape}")
        waves[i, : min(len(wave), audio.clip_samples)] = wave[: audio.clip_samples]
    return torch.from_numpy(waves)


@torch.no_grad()
def compute_log_mels(waves: torch.Tensor, front_end: MelFrontEnd, batch: int = 64) -> torch.Tensor:
    return torch.cat([front_end(waves[i : i + batch]) for i in range(0, len(waves), batch)])


def conditioning_matrix(conditioning: Conditioning, content_hashes: list[str]) -> torch.Tensor:
    """Per-clip conditioning vectors ``(n, d)`` in manifest order, from a callable or a hash -> vector map."""
    if callable(conditioning):
        matrix = np.asarray(conditioning(content_hashes), dtype=np.float32)
    else:
        missing = [h for h in content_hashes if h not in conditioning]
        if missing:
            raise KeyError(f"no conditioning embedding for {len(missing)} clips, e.g. content_hash {missing[0]}")
        matrix = np.stack([np.asarray(conditioning[h], dtype=np.float32) for h in content_hashes])
    if matrix.ndim != 2 or matrix.shape[0] != len(content_hashes):
        raise ValueError(f"conditioning must be (n_clips={len(content_hashes)}, dim), got shape {matrix.shape}")
    if not np.isfinite(matrix).all():
        raise ValueError("conditioning contains NaN or infinite values")
    return torch.from_numpy(matrix)


def event_anchors(log_mels: torch.Tensor, frames: int) -> torch.Tensor:
    """Where to centre each clip's training crops: a distribution over ``frames`` time steps per clip,
    half uniform and half proportional to the step's mel power, as cumulative sums ``(n, frames)``.

    A Foley clip is often one short event (a bark, a shot) in 4 s of near silence. Uniform crops
    shorter than the clip then mostly hold silence, and a model trained on them learns the gap
    instead of the event (docs/benchmarks.md: 1.3 s uniform crops ruined DogBark, GunShot and
    Sneeze_Cough). Anchoring half of the crops on the power keeps the events in view; the uniform
    half keeps silence and quiet texture in the training data. ``log_mels``: natural-log mel
    magnitudes ``(n, 1, T, n_mels)`` (``MelFrontEnd``), pooled here to ``frames`` steps."""
    power = torch.exp(2 * log_mels[:, 0].float()).sum(-1)  # (n, T): mel power per frame
    power = F.adaptive_avg_pool1d(power.unsqueeze(1), frames).squeeze(1)
    share = power / power.sum(-1, keepdim=True).clamp_min(1e-12)
    cdf = torch.cumsum(0.5 / frames + 0.5 * share, dim=-1)
    cdf[:, -1] = 1.0  # exact, whatever the rounding of the sums
    return cdf.double().numpy()


def crop_start(rng: np.random.Generator, length: int, crop: int, anchors: np.ndarray | None) -> int:
    """The first frame of a ``crop``-frame window of a ``length``-frame item: uniform without
    ``anchors``; with them (a cumulative distribution of one item, ``event_anchors``), a window drawn
    uniformly among those holding an anchor frame drawn from that distribution."""
    if crop >= length:
        return 0
    if anchors is None:
        return int(rng.integers(0, length - crop + 1))
    anchor = min(int(np.searchsorted(anchors, rng.random(), side="right")), length - 1)
    return int(rng.integers(max(0, anchor - crop + 1), min(anchor, length - crop) + 1))


class MelCrops(Dataset):
    """Event-anchored time crops of normalised log-mel images ``(1, crop, n_mels)`` (whole clips when crop is 0).

    ``anchors``: ``event_anchors`` of the images' raw log-mels; without them crops are uniform."""

    def __init__(self, images: torch.Tensor, crop_frames: int, anchors: np.ndarray | None = None):
        self.images, self.anchors = images, anchors
        self.crop = crop_frames if 0 < crop_frames < images.shape[-2] else images.shape[-2]

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, item: Draw) -> torch.Tensor:
        index, rng = sample_rng(item)
        anchors = None if self.anchors is None else self.anchors[index]
        start = crop_start(rng, self.images.shape[-2], self.crop, anchors)
        return self.images[index, :, start : start + self.crop]


class VocoderSegments(Dataset):
    """Aligned event-anchored segments: log-mel ``(frames, n_mels)`` and the waveform ``(frames * hop,)`` it came from."""

    def __init__(self, log_mels: torch.Tensor, waves: torch.Tensor, segment_frames: int, hop: int):
        self.log_mels, self.waves, self.hop = log_mels, waves, hop
        self.frames = min(segment_frames, log_mels.shape[-2])
        self.anchors = event_anchors(log_mels, log_mels.shape[-2])

    def __len__(self) -> int:
        return len(self.log_mels)

    def __getitem__(self, item: Draw) -> tuple[torch.Tensor, torch.Tensor]:
        index, rng = sample_rng(item)
        start = crop_start(rng, self.log_mels.shape[-2], self.frames, self.anchors[index])
        mel = self.log_mels[index, 0, start : start + self.frames]
        wave = self.waves[index, start * self.hop : (start + self.frames) * self.hop]
        return mel, wave


class LatentConditions(Dataset):
    """VAE posterior (mean, std) of each clip with its conditioning vector; the latent is sampled per step.

    ``crop_frames`` > 0: a time crop of that many latent frames per item, drawn from the item's own RNG
    (so a resumed run crops as an uninterrupted one) and anchored on its events when ``anchors``
    (``event_anchors`` at latent resolution) are given. The UNet is convolutional in time, so it
    learns the same denoiser from crops at a fraction of the arithmetic, and samples whole clips."""

    def __init__(self, means: torch.Tensor, stds: torch.Tensor, conditions: torch.Tensor, crop_frames: int = 0,
                 anchors: np.ndarray | None = None):  # fmt: skip
        if not len(means) == len(stds) == len(conditions):
            raise ValueError("latents and conditions must have one row per clip")
        if anchors is not None and anchors.shape != (len(means), means.shape[-2]):
            raise ValueError(f"anchors must be (clips, latent frames) = {(len(means), means.shape[-2])}, got {anchors.shape}")
        self.means, self.stds, self.conditions, self.anchors = means, stds, conditions, anchors
        self.crop = crop_frames if 0 < crop_frames < means.shape[-2] else 0

    def __len__(self) -> int:
        return len(self.means)

    def __getitem__(self, item: Draw) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if not self.crop:
            index = item[0] if isinstance(item, tuple) else item
            return self.means[index], self.stds[index], self.conditions[index]
        index, rng = sample_rng(item)
        anchors = None if self.anchors is None else self.anchors[index]
        start = crop_start(rng, self.means.shape[-2], self.crop, anchors)
        window = slice(start, start + self.crop)
        return self.means[index, :, window], self.stds[index, :, window], self.conditions[index]
