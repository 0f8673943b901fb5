"""Tiny random LAION-CLAP checkpoints in the released layout (``630k-audioset-best.pt``), built offline.

``make_tiny_laion(root)`` writes a random HTSAT-tiny + 1-layer RoBERTa laion ``CLAP`` as the released
files are: DDP ``module.`` keys, the old ``position_ids`` buffer, and bookkeeping entries saved as
numpy scalars (``released_layout``), plus a byte-level BPE RoBERTa tokenizer folder (``vocab.json`` +
``merges.txt``) whose vocabulary matches the checkpoint's word embeddings.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from audioldm_fixtures import byte_level_alphabet

from foley_core.clap.laion import build_laion_clap

TINY_LAION_POSITIONS = 80  # RoBERTa position embeddings: 77 tokens + padding offset


def released_layout(state: dict) -> dict:
    """A checkpoint dict shaped like the released ones: DDP ``module.`` keys, with the bookkeeping
    entries as numpy scalars (numpy.int64 epoch, numpy.float64 / float32 metrics and hyper-parameters)."""
    return {
        "epoch": np.int64(45), "name": "tiny", "state_dict": state,
        "optimizer": {"state": {}, "param_groups": [{"lr": np.float64(1e-4), "betas": (0.9, 0.99), "eps": 1e-8,
                                                     "weight_decay": np.float32(0.0), "params": [0, 1]}]},
        "metrics": {"val_mAP": np.float64(0.41), "best_epoch": np.int32(44), "improved": np.bool_(True)},
    }  # fmt: skip


def make_laion_tokenizer(folder: Path) -> dict[str, int]:
    """A byte-level BPE RoBERTa vocabulary (``vocab.json`` + ``merges.txt``) in ``folder``; returns the vocab."""
    folder.mkdir(parents=True, exist_ok=True)
    vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3}
    for char in byte_level_alphabet():
        vocab[char] = len(vocab)
    merges = ["Ġ d", "Ġ r", "o g", "a i", "Ġd og", "r ai"]
    for merge in merges:
        vocab["".join(merge.split())] = len(vocab)
    vocab["<mask>"] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    return vocab


def make_tiny_laion(root: Path, seed: int = 0) -> tuple[Path, Path, torch.nn.Module]:
    """(checkpoint ``root/630k-audioset-best.pt``, tokenizer folder ``root/tokenizer``, the model saved):
    a random HTSAT-tiny audio tower + 1-layer RoBERTa (hidden 768) laion CLAP in the released layout."""
    from transformers import RobertaConfig

    root = Path(root)
    tokenizer_dir = root / "tokenizer"
    vocab = make_laion_tokenizer(tokenizer_dir)
    torch.manual_seed(seed)
    config = RobertaConfig(vocab_size=len(vocab), hidden_size=768, num_hidden_layers=1, num_attention_heads=12,
                           intermediate_size=128, max_position_embeddings=TINY_LAION_POSITIONS, type_vocab_size=1,
                           pad_token_id=1, bos_token_id=0, eos_token_id=2, layer_norm_eps=1e-5)  # fmt: skip
    model = build_laion_clap("HTSAT-tiny", config).eval()
    state = {f"module.{k}": v for k, v in model.state_dict().items()}
    # as old transformers saved it (the released files have it; transformers >= 4.31 does not)
    state["module.text_branch.embeddings.position_ids"] = torch.arange(TINY_LAION_POSITIONS).unsqueeze(0)
    checkpoint = root / "630k-audioset-best.pt"
    torch.save(released_layout(state), checkpoint)
    return checkpoint, tokenizer_dir, model
