"""One interface for both CLAP sources: ``encode_text`` / ``encode_audio`` -> L2-normalised (n, d).

Inputs are validated item by item and a bad item is named in the error; nothing is
silently fixed (a wrong sample rate is an error, not a resample).
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from foley_core.clap.towers import SmallClap, TowerConfig, minilm_fingerprint
from foley_core.core.fsutil import atomic_file
from foley_core.core.hashing import new_digest

WEIGHTS = "model.safetensors"
CONFIG = "config.json"


def validate_texts(texts: Sequence[str]) -> list[str]:
    if isinstance(texts, str):
        raise TypeError("encode_text takes a list of strings, not a single string")
    texts = list(texts)
    for index, text in enumerate(texts):
        if not isinstance(text, str):
            raise ValueError(f"text {index} is {type(text).__name__}, not a string")
        if not text.strip():
            raise ValueError(f"text {index} is empty or blank: {text!r}")
    return texts


def validate_waveforms(waveforms, sample_rate: int, expected_rate: int) -> list[np.ndarray]:
    """(n, samples) array/tensor or a list of 1-D arrays -> list of float32 1-D arrays."""
    if int(sample_rate) != expected_rate:
        raise ValueError(f"audio sample rate is {sample_rate} Hz, this CLAP encoder takes {expected_rate} Hz: resample first")
    if isinstance(waveforms, (np.ndarray, torch.Tensor)):
        if waveforms.ndim != 2:
            raise ValueError(f"waveforms must be (n, samples) or a list of 1-D arrays, got shape {tuple(waveforms.shape)}")
        waveforms = list(waveforms)
    items = []
    for index, wave in enumerate(waveforms):
        wave = wave.detach().cpu().numpy() if isinstance(wave, torch.Tensor) else np.asarray(wave)
        if wave.ndim != 1:
            raise ValueError(f"audio item {index} must be 1-D (mono samples), got shape {wave.shape}")
        if wave.shape[0] == 0:
            raise ValueError(f"audio item {index} has zero length")
        if not np.isfinite(wave).all():
            raise ValueError(f"audio item {index} contains NaN or infinite samples")
        items.append(wave.astype(np.float32, copy=False))
    return items


def length_groups(items: list[np.ndarray], batch_size: int) -> list[list[int]]:
    """Batches of indices whose items share a length (no padding that would change pooled embeddings)."""
    by_length: dict[int, list[int]] = {}
    for index, item in enumerate(items):
        by_length.setdefault(item.shape[0], []).append(index)
    return [ids[s : s + batch_size] for ids in by_length.values() for s in range(0, len(ids), batch_size)]


class ClapEncoder(ABC):
    """Base: validation, batching, device handling. Subclasses embed one valid batch."""

    embed_dim: int
    version: str
    sample_rate: int
    batch_size: int = 32

    def __init__(self, model: torch.nn.Module):
        self.model = model.eval()
        self.device = torch.device("cpu")

    def to(self, device) -> "ClapEncoder":
        self.device = torch.device(device)
        self.model.to(self.device)
        return self

    @torch.no_grad()
    def encode_text(self, texts: list[str]) -> torch.Tensor:
        texts = validate_texts(texts)
        if not texts:
            return torch.zeros(0, self.embed_dim)
        out = [self._text_batch(texts[s : s + self.batch_size]) for s in range(0, len(texts), self.batch_size)]
        return torch.cat(out).float().cpu()

    @torch.no_grad()
    def encode_empty_text(self) -> torch.Tensor:
        """The embedding of the empty prompt ``""`` (d,): what AudioLDM guides against.
        ``encode_text`` refuses blank prompts because from a user they are a mistake."""
        return self._text_batch([""]).float().cpu()[0]

    @torch.no_grad()
    def encode_audio(self, waveforms, sample_rate: int) -> torch.Tensor:
        items = validate_waveforms(waveforms, sample_rate, self.sample_rate)
        out = torch.zeros(len(items), self.embed_dim)
        for ids in length_groups(items, self.batch_size):
            out[ids] = self._audio_batch(np.stack([items[i] for i in ids])).float().cpu()
        return out

    @abstractmethod
    def _text_batch(self, texts: list[str]) -> torch.Tensor:
        """Embed one batch of validated texts."""

    @abstractmethod
    def _audio_batch(self, waveforms: np.ndarray) -> torch.Tensor:
        """Embed one batch of validated, equal-length waveforms."""


class TrainedClapEncoder(ClapEncoder):
    """The CLAP trained in the pipeline (``cpu``/``smoke`` profiles): a folder of safetensors + config.json."""

    def __init__(self, model: SmallClap, version: str):
        super().__init__(model)
        self.embed_dim = model.cfg.embed_dim
        self.sample_rate = model.cfg.sample_rate
        self.version = version

    def _text_batch(self, texts):
        return self.model.embed_text_features(self.model.text_features(texts))

    def _audio_batch(self, waveforms):
        return self.model.embed_audio(torch.from_numpy(waveforms).to(self.device))

    @classmethod
    def load(cls, folder: Path) -> "TrainedClapEncoder":
        weights, config = folder / WEIGHTS, folder / CONFIG
        if not (weights.is_file() and config.is_file()):
            raise FileNotFoundError(f"no trained CLAP in {folder} (expected {WEIGHTS} + {CONFIG}): train the clap_model asset first")
        cfg = TowerConfig.from_json(json.loads(config.read_text())["model"])
        model = SmallClap(cfg)
        model.load_state_dict(load_file(weights), strict=True)
        return cls(model, model_version(folder))


def model_version(folder: Path) -> str:
    """Content hash of the saved weights and config (and of the frozen MiniLM when used)."""
    digest = new_digest((folder / CONFIG).read_bytes())
    digest.update((folder / WEIGHTS).read_bytes())
    if json.loads((folder / CONFIG).read_text())["model"]["text_tower"] == "minilm":
        digest.update(minilm_fingerprint().encode())
    return digest.hexdigest()[:16]


def save_trained(model: SmallClap, folder: Path) -> str:
    """Write model.safetensors + config.json atomically (temp names, then rename); returns the version."""
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    config = json.dumps({"kind": "foley_core.clap.SmallClap", "model": model.cfg.to_json()}, indent=2, sort_keys=True)
    with atomic_file(folder / WEIGHTS) as tmp_weights, atomic_file(folder / CONFIG) as tmp_config:
        save_file(state, str(tmp_weights))
        tmp_config.write_text(config)
    return model_version(folder)
