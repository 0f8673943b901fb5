"""Tiny random AudioLDM folders in the diffusers layout (``cvssp/audioldm-s-full-v2``), built offline.

diffusers' own AudioLDM tests build their dummy components the same way, but take the tokenizer
from ``hf-internal-testing/tiny-random-roberta`` on the hub; here a byte-level BPE vocabulary is
written to ``vocab.json`` + ``merges.txt`` so no download is needed.

``make_tiny_audioldm_folder(path)`` writes ``unet/ vae/ vocoder/ scheduler/ text_encoder/
tokenizer/ model_index.json`` with ``AudioLDMPipeline.save_pretrained`` and returns the components,
so a test can run diffusers' ``AudioLDMPipeline`` on exactly the weights our code loads.
"""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path

import torch
from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
from transformers import (
    ClapTextConfig,
    ClapTextModelWithProjection,
    RobertaTokenizer,
    SpeechT5HifiGan,
    SpeechT5HifiGanConfig,
)

CONDITION_DIM = 16


def byte_level_alphabet() -> list[str]:
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


def make_tiny_roberta_tokenizer(folder: Path, model_max_length: int = 77) -> RobertaTokenizer:
    """A byte-level BPE RoBERTa tokenizer (the 256 byte symbols plus a few merges), saved to ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3}
    for char in byte_level_alphabet():
        vocab[char] = len(vocab)
    merges = ["Ġ d", "Ġ r", "o g", "a i", "Ġd og", "r ai", "Ġ b", "a r", "Ġb ar"]
    for merge in merges:
        vocab["".join(merge.split())] = len(vocab)
    vocab["<mask>"] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    tokenizer = RobertaTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=model_max_length)
    tokenizer.save_pretrained(str(folder))
    return tokenizer


def make_tiny_audioldm_components(tokenizer_dir: Path, *, n_mels: int = 64, condition_dim: int = CONDITION_DIM,
                                  sample_rate: int = 16000, upsample_rates: tuple[int, ...] = (10, 16),
                                  scheduler: DDIMScheduler | None = None, seed: int = 0) -> dict:
    """Random components shaped like AudioLDM's, as keyword arguments of ``AudioLDMPipeline``.

    VAE: 2 blocks (2x down in time and frequency), 8 latent channels, scaling factor 0.9; UNet: one
    plain and one attention block, the ``simple_projection`` class embedding of the CLAP vector
    concatenated to the time embedding (no cross-attention input, as in AudioLDM); text encoder: a
    2-layer ``ClapTextModelWithProjection`` projecting to ``condition_dim``; vocoder hop =
    prod(upsample_rates)."""
    torch.manual_seed(seed)
    vae = AutoencoderKL(
        in_channels=1, out_channels=1, latent_channels=8, block_out_channels=(8, 16),
        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
        layers_per_block=1, norm_num_groups=8, scaling_factor=0.9,
    )  # fmt: skip
    unet = UNet2DConditionModel(
        sample_size=16, in_channels=8, out_channels=8, block_out_channels=(16, 32), layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=(16, 32), attention_head_dim=4, norm_num_groups=8,
        class_embed_type="simple_projection", projection_class_embeddings_input_dim=condition_dim,
        class_embeddings_concat=True,
    )  # fmt: skip
    kernels = [r * 2 for r in upsample_rates]  # kernel >= rate with an even difference
    vocoder = SpeechT5HifiGan(SpeechT5HifiGanConfig(
        model_in_dim=n_mels, sampling_rate=sample_rate, upsample_initial_channel=16,
        upsample_rates=list(upsample_rates), upsample_kernel_sizes=kernels, resblock_kernel_sizes=[3],
        resblock_dilation_sizes=[[1, 3]], normalize_before=False,
    ))  # fmt: skip
    tokenizer = RobertaTokenizer.from_pretrained(str(tokenizer_dir))
    text_encoder = ClapTextModelWithProjection(ClapTextConfig(
        vocab_size=len(tokenizer), hidden_size=16, intermediate_size=37, num_attention_heads=2, num_hidden_layers=2,
        layer_norm_eps=1e-5, projection_dim=condition_dim, bos_token_id=0, eos_token_id=2, pad_token_id=1,
        max_position_embeddings=max(80, condition_dim + 4, tokenizer.model_max_length + 4),
    )).eval()  # fmt: skip
    # AudioLDM's released scheduler config (cvssp/audioldm-s-full-v2): DDIM on a scaled-linear schedule
    scheduler = scheduler or DDIMScheduler(beta_start=0.0015, beta_end=0.0195, beta_schedule="scaled_linear",
                                           num_train_timesteps=1000, clip_sample=False, set_alpha_to_one=False,
                                           steps_offset=1)  # fmt: skip
    return {"vae": vae, "text_encoder": text_encoder, "tokenizer": tokenizer, "unet": unet,
            "scheduler": scheduler, "vocoder": vocoder}


def make_tiny_audioldm_folder(path: Path, *, n_mels: int = 64, condition_dim: int = CONDITION_DIM,
                              sample_rate: int = 16000, hop_length: int = 160, scheduler=None, seed: int = 0,
                              vocoder_gain: float = 1.0) -> dict:
    """Write a tiny random AudioLDM folder at ``path`` with ``AudioLDMPipeline.save_pretrained``.

    ``hop_length`` is the vocoder's upsampling (mel frame -> samples); ``n_mels`` must be a multiple
    of 2 (the VAE's downsampling). ``vocoder_gain`` scales the vocoder's last convolution: a random
    vocoder is nearly silent (peaks ~3e-5), ~1e4 makes clips audible at 16 bits. Returns the
    pipeline's components (``text_encoder``, ``tokenizer``, ``unet``, ``vae``, ``vocoder``,
    ``scheduler``) as saved."""
    from diffusers import AudioLDMPipeline

    path = Path(path)
    with tempfile.TemporaryDirectory() as scratch:
        make_tiny_roberta_tokenizer(Path(scratch))
        components = make_tiny_audioldm_components(Path(scratch), n_mels=n_mels, condition_dim=condition_dim,
                                                   sample_rate=sample_rate, upsample_rates=_two_rates(hop_length),
                                                   scheduler=scheduler, seed=seed)  # fmt: skip
    if vocoder_gain != 1.0:
        with torch.no_grad():
            components["vocoder"].conv_post.weight.mul_(vocoder_gain)
    AudioLDMPipeline(**components).save_pretrained(str(path), safe_serialization=True)
    return components


def _two_rates(hop: int) -> tuple[int, int]:
    """Two upsampling factors multiplying to ``hop`` (as close to each other as possible)."""
    first = max(d for d in range(1, math.isqrt(hop) + 1) if hop % d == 0)
    return (first, hop // first) if first > 1 else (hop,)  # type: ignore[return-value]
