"""Builders for the three networks and the training noise schedule, from a profile's config.

All are stock diffusers/transformers classes, so they save/load with ``save_pretrained``
(safetensors + JSON) and an AudioLDM folder loads into the same classes.
"""

from __future__ import annotations

import math

import torch
from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
from transformers import SpeechT5HifiGan, SpeechT5HifiGanConfig

from foley_core.core.config import AudioConfig, UnetConfig, VaeConfig, VocoderConfig


def build_vae(cfg: VaeConfig) -> AutoencoderKL:
    """AutoencoderKL over the 1-channel log-mel image; downsampling 2 ** (len(blocks) - 1)."""
    blocks = len(cfg.block_out_channels)
    return AutoencoderKL(
        in_channels=1, out_channels=1, latent_channels=cfg.latent_channels,
        down_block_types=("DownEncoderBlock2D",) * blocks, up_block_types=("UpDecoderBlock2D",) * blocks,
        block_out_channels=tuple(cfg.block_out_channels), layers_per_block=cfg.layers_per_block,
        norm_num_groups=_groups(cfg.block_out_channels), scaling_factor=1.0,
        mid_block_add_attention=False,
    )  # fmt: skip


def build_unet(cfg: UnetConfig, latent_channels: int, condition_dim: int) -> UNet2DConditionModel:
    """AudioLDM-style conditioning: the CLAP embedding through ``simple_projection``, concatenated
    to the time embedding. Without attention the blocks are plain ResNet blocks."""
    blocks = len(cfg.block_out_channels)
    if cfg.attention:
        down, up, mid = ("CrossAttnDownBlock2D",) * blocks, ("CrossAttnUpBlock2D",) * blocks, "UNetMidBlock2DCrossAttn"
        attention = {"cross_attention_dim": tuple(cfg.block_out_channels), "attention_head_dim": cfg.attention_head_dim}
    else:
        down, up, mid = ("DownBlock2D",) * blocks, ("UpBlock2D",) * blocks, "UNetMidBlock2D"
        attention = {}
    return UNet2DConditionModel(
        in_channels=latent_channels + int(cfg.frequency_channel), out_channels=latent_channels,
        down_block_types=down, up_block_types=up, mid_block_type=mid,
        block_out_channels=tuple(cfg.block_out_channels), layers_per_block=cfg.layers_per_block,
        norm_num_groups=_groups(cfg.block_out_channels),
        class_embed_type="simple_projection", projection_class_embeddings_input_dim=condition_dim,
        class_embeddings_concat=True, **attention,
    )  # fmt: skip


def build_vocoder(cfg: VocoderConfig, audio: AudioConfig) -> SpeechT5HifiGan:
    """HiFi-GAN generator taking the raw log-mel ``(n, frames, n_mels)``; one frame -> ``hop`` samples."""
    if math.prod(cfg.upsample_rates) != audio.hop_length:
        raise ValueError(f"vocoder upsample_rates {cfg.upsample_rates} multiply to {math.prod(cfg.upsample_rates)}, "
                         f"but hop_length is {audio.hop_length}")  # fmt: skip
    for rate, kernel in zip(cfg.upsample_rates, cfg.upsample_kernel_sizes):
        if kernel < rate or (kernel - rate) % 2:
            raise ValueError(f"upsample kernel {kernel} must be >= rate {rate} with an even difference")
    config = SpeechT5HifiGanConfig(
        model_in_dim=audio.n_mels, sampling_rate=audio.sample_rate,
        upsample_initial_channel=cfg.upsample_initial_channel, upsample_rates=list(cfg.upsample_rates),
        upsample_kernel_sizes=list(cfg.upsample_kernel_sizes), resblock_kernel_sizes=list(cfg.resblock_kernel_sizes),
        resblock_dilation_sizes=[list(d) for d in cfg.resblock_dilation_sizes], normalize_before=False,
    )  # fmt: skip
    return SpeechT5HifiGan(config)


def build_train_scheduler(cfg: UnetConfig) -> DDPMScheduler:
    # "trailing" spacing lets few-step DDIM/DPM-Solver start from pure noise with the cosine schedule.
    return DDPMScheduler(
        num_train_timesteps=cfg.train_timesteps, beta_schedule=cfg.beta_schedule,
        prediction_type=cfg.prediction_type, timestep_spacing="trailing", clip_sample=False,
    )  # fmt: skip


def vae_downsampling(vae: AutoencoderKL) -> int:
    return 2 ** (len(vae.config.block_out_channels) - 1)


def unet_downsampling(unet: UNet2DConditionModel) -> int:
    return 2 ** (len(unet.config.block_out_channels) - 1)


def uses_frequency_channel(unet: UNet2DConditionModel) -> bool:
    return unet.config.in_channels == unet.config.out_channels + 1


def with_frequency_channel(latents: torch.Tensor) -> torch.Tensor:
    """Append a channel holding each column's frequency position in [-1, 1] (latent width = mel axis)."""
    n, _, height, width = latents.shape
    position = torch.linspace(-1.0, 1.0, width, device=latents.device, dtype=latents.dtype)
    return torch.cat([latents, position.expand(n, 1, height, width)], dim=1)


def unet_input(unet: UNet2DConditionModel, latents: torch.Tensor) -> torch.Tensor:
    return with_frequency_channel(latents) if uses_frequency_channel(unet) else latents


def parameter_count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _groups(channels: list[int]) -> int:
    """Largest GroupNorm group count (<= 32) dividing every block width."""
    return max(g for g in range(1, 33) if all(c % g == 0 for c in channels))
