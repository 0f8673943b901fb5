"""The paper's trainable embedding adapter: a d x d linear layer after the frozen CLAP text
encoder, initialised to identity with zero bias (so before fine-tuning it changes nothing)."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from foley_core.core.audio import write_text_atomic

WEIGHTS = "adapter.safetensors"
CONFIG = "adapter_config.json"


class EmbeddingAdapter(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim
        self.linear = nn.Linear(dim, dim)
        self.reset_to_identity()

    def reset_to_identity(self) -> None:
        with torch.no_grad():
            self.linear.weight.copy_(torch.eye(self.dim))
            self.linear.bias.zero_()

    def forward(self, embedding: torch.Tensor) -> torch.Tensor:
        return self.linear(embedding)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def save(self, folder: Path, extra_config: dict | None = None) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".{WEIGHTS}.tmp"
        save_file({k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}, str(tmp))
        tmp.replace(folder / WEIGHTS)
        write_text_atomic(folder / CONFIG, json.dumps({"dim": self.dim, **(extra_config or {})}, indent=2, sort_keys=True))

    @classmethod
    def load(cls, folder: Path) -> "EmbeddingAdapter":
        if not (folder / WEIGHTS).is_file():
            raise FileNotFoundError(f"no adapter in {folder} (expected {WEIGHTS} + {CONFIG})")
        config = json.loads((folder / CONFIG).read_text())
        adapter = cls(int(config["dim"]))
        adapter.load_state_dict(load_file(str(folder / WEIGHTS)))
        return adapter
