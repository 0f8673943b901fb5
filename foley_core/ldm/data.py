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


class MelCrops(Dataset):
    """Random time crops of normalised log-mel images ``(1, crop, n_mels)`` (whole clips when crop is 0)."""

    def __init__(self, images: torch.Tensor, crop_frames: int):
        self.images = images
        self.crop = crop_frames if 0 < crop_frames < images.shape[-2] else images.shape[-2]

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, item: Draw) -> torch.Tensor:
        index, rng = sample_rng(item)
        start = int(rng.integers(0, self.images.shape[-2] - self.crop + 1))
        return self.images[index, :, start : start + self.crop]


class VocoderSegments(Dataset):
    """Aligned random segments: log-mel ``(frames, n_mels)`` and the waveform ``(frames * hop,)`` it came from."""

    def __init__(self, log_mels: torch.Tensor, waves: torch.Tensor, segment_frames: int, hop: int):
        self.log_mels, self.waves, self.hop = log_mels, waves, hop
        self.frames = min(segment_frames, log_mels.shape[-2])

    def __len__(self) -> int:
        return len(self.log_mels)

    def __getitem__(self, item: Draw) -> tuple[torch.Tensor, torch.Tensor]:
        index, rng = sample_rng(item)
        start = int(rng.integers(0, self.log_mels.shape[-2] - self.frames + 1))
        mel = self.log_mels[index, 0, start : start + self.frames]
        wave = self.waves[index, start * self.hop : (start + self.frames) * self.hop]
        return mel, wave


class LatentConditions(Dataset):
    """VAE posterior (mean, std) of each clip with its conditioning vector; the latent is sampled per step.

    ``crop_frames`` > 0: a random time crop of that many latent frames per item, drawn from the item's
    own RNG (so a resumed run crops as an uninterrupted one). The UNet is convolutional in time, so it
    learns the same denoiser from crops at a fraction of the arithmetic, and samples whole clips."""

    def __init__(self, means: torch.Tensor, stds: torch.Tensor, conditions: torch.Tensor, crop_frames: int = 0):
        if not len(means) == len(stds) == len(conditions):
            raise ValueError("latents and conditions must have one row per clip")
        self.means, self.stds, self.conditions = means, stds, conditions
        self.crop = crop_frames if 0 < crop_frames < means.shape[-2] else 0

    def __len__(self) -> int:
        return len(self.means)

    def __getitem__(self, item: Draw) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if not self.crop:
            index = item[0] if isinstance(item, tuple) else item
            return self.means[index], self.stds[index], self.conditions[index]
        index, rng = sample_rng(item)
        start = int(rng.integers(0, self.means.shape[-2] - self.crop + 1))
        window = slice(start, start + self.crop)
        return self.means[index, :, window], self.stds[index, :, window], self.conditions[index]
