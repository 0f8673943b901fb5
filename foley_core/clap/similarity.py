"""Cosine similarity in CLAP space: the one scorer behind selection, zero-shot and retrieval.

CLAP towers return unit vectors, but not every caller's inputs are (stored multi-target
embeddings, averaged prompt embeddings), so both functions normalise first."""

from __future__ import annotations

import numpy as np
import torch


def cosine_scores(audio_embeddings: np.ndarray, target_embeddings: np.ndarray) -> np.ndarray:
    """Cosine between matching rows: (..., d) audio against (..., d) targets, broadcast like
    numpy (a (d,) target scores every row; (p, c, d) candidates against (p, 1, d) prompts)."""
    audio = audio_embeddings / np.linalg.norm(audio_embeddings, axis=-1, keepdims=True).clip(1e-12)
    target = target_embeddings / np.linalg.norm(target_embeddings, axis=-1, keepdims=True).clip(1e-12)
    return np.sum(audio * target, axis=-1)


def cosine_matrix(queries: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """All pairs: (n, d) queries against (m, d) keys -> (n, m) cosines (zero-shot, retrieval)."""
    return torch.nn.functional.normalize(queries, dim=-1) @ torch.nn.functional.normalize(keys, dim=-1).T
