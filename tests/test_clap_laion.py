"""LAION-CLAP loader without real weights: a tiny random laion CLAP saved in the official layout."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from foley_core.clap import load_clap
from foley_core.clap.laion import LaionClapEncoder, build_laion_clap, load_tokenizer
from foley_core.config import load_profile


def _byte_level_alphabet() -> list[str]:
    """GPT-2/RoBERTa's byte-to-unicode table: every byte as one printable character."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    chars, extra = [], 0
    for b in range(256):
        if b in keep:
            chars.append(chr(b))
        else:
            chars.append(chr(256 + extra))
            extra += 1
    return chars


@pytest.fixture(scope="module")
def tiny_laion(tmp_path_factory):
    """A random HTSAT-tiny + 1-layer RoBERTa laion CLAP, its byte-level tokenizer, and a profile using them."""
    from transformers import RobertaConfig

    root = tmp_path_factory.mktemp("laion")
    tokenizer_dir = root / "tokenizer"
    tokenizer_dir.mkdir()
    vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3}
    for char in _byte_level_alphabet():
        vocab[char] = len(vocab)
    merges = ["Ġ d", "Ġ r", "o g", "a i", "Ġd og", "r ai"]
    for merge in merges:
        vocab["".join(merge.split())] = len(vocab)
    vocab["<mask>"] = len(vocab)
    (tokenizer_dir / "vocab.json").write_text(json.dumps(vocab))
    (tokenizer_dir / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")

    torch.manual_seed(0)
    config = RobertaConfig(vocab_size=len(vocab), hidden_size=768, num_hidden_layers=1, num_attention_heads=12,
                           intermediate_size=128, max_position_embeddings=80, type_vocab_size=1,
                           pad_token_id=1, bos_token_id=0, eos_token_id=2, layer_norm_eps=1e-5)
    model = build_laion_clap("HTSAT-tiny", config).eval()
    state = {f"module.{k}": v for k, v in model.state_dict().items()}
    state["module.text_branch.embeddings.position_ids"] = torch.arange(80).unsqueeze(0)  # as old transformers saved it
    checkpoint = root / "630k-audioset-best.pt"
    torch.save({"epoch": 45, "name": "tiny", "state_dict": state, "optimizer": {"state": {}, "param_groups": []}}, checkpoint)
    profile = load_profile("paper", {
        "paths": {"artifacts_dir": str(root / "artifacts")},
        "clap": {"checkpoint": str(checkpoint), "tokenizer_path": str(tokenizer_dir)},
    })
    return profile, model, tokenizer_dir


def test_official_layout_round_trip(tiny_laion):
    profile, model, tokenizer_dir = tiny_laion
    encoder = load_clap(profile)
    assert isinstance(encoder, LaionClapEncoder)
    assert (encoder.embed_dim, encoder.sample_rate, encoder.model_rate) == (512, 16000, 48000)
    loaded = encoder.model.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in model.state_dict().items())

    reference = LaionClapEncoder(model, load_tokenizer(tokenizer_dir, len(encoder.tokenizer), False), "ref", 16000)
    texts = ["a dog bark", "rain"]
    text = encoder.encode_text(texts)
    assert text.shape == (2, 512)
    assert torch.allclose(text.norm(dim=1), torch.ones(2), atol=1e-5)
    assert torch.allclose(text, reference.encode_text(texts), atol=1e-6)
    rng = np.random.default_rng(0)
    clips = (0.1 * rng.standard_normal((2, 16000))).astype(np.float32)
    audio = encoder.encode_audio(clips, 16000)
    assert audio.shape == (2, 512)
    assert torch.allclose(audio.norm(dim=1), torch.ones(2), atol=1e-5)
    assert torch.allclose(audio, reference.encode_audio(clips, 16000), atol=1e-5)
    assert not torch.allclose(audio[0], audio[1])
    assert load_clap(profile).version == encoder.version


def test_tokenizer_must_match_the_checkpoint_vocabulary(tiny_laion, tmp_path):
    _, _, tokenizer_dir = tiny_laion
    with pytest.raises(RuntimeError, match="vocabulary of .* tokens, expected 50265"):
        load_tokenizer(tokenizer_dir, 50265, download=False)
    with pytest.raises(FileNotFoundError, match="tokenizer folder"):
        load_tokenizer(tmp_path / "missing", 50265, download=False)


def test_missing_checkpoint_is_a_clear_error(tmp_path):
    profile = load_profile("paper", {"paths": {"artifacts_dir": str(tmp_path)}, "clap": {"checkpoint": str(tmp_path / "nope.pt")}})
    with pytest.raises(FileNotFoundError, match="nope.pt not found"):
        load_clap(profile)


class _NotATensor:
    pass


def test_unsafe_checkpoint_needs_trust(tmp_path):
    path = tmp_path / "odd.pt"
    torch.save({"state_dict": {"module.w": torch.zeros(1)}, "args": _NotATensor()}, path)
    profile = load_profile("paper", {"paths": {"artifacts_dir": str(tmp_path)}, "clap": {"checkpoint": str(path)}})
    with pytest.raises(RuntimeError, match="trust_checkpoint"):
        load_clap(profile)
