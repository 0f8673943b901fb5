"""Tiny random VGGish weights in the torchvggish layout (``vggish-10086976.pth``: a plain state dict)."""

from __future__ import annotations

from pathlib import Path

import torch

from foley_core.metrics.vggish import VGGish


def make_tiny_vggish_weights(path: Path, seed: int = 0) -> Path:
    """A narrow random VGGish (the standard layer names; widths are read back from the file) saved to ``path``."""
    torch.manual_seed(seed)
    model = VGGish(channels=(4, 8, 8, 16), fc_width=32)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), path)
    return path
