"""Sampling: conditioning vectors -> latents (DDIM / DPM-Solver++ with classifier-free guidance)
-> log-mel (VAE) -> waveform (vocoder, or Griffin-Lim). Inference only; no training state.

Reproducibility: each row's initial noise comes from its own ``torch.Generator`` and both
samplers run deterministically (DDIM with eta=0, DPM-Solver++ multistep), so a row's output
depends only on its generator, its condition and its guidance scale, not on the batch it is in.
"""

from __future__ import annotations

from typing import Literal, Sequence

import torch
from diffusers import DDIMScheduler, DPMSolverMultistepScheduler
from diffusers.schedulers.scheduling_utils import SchedulerMixin

from foley_core.ldm.components import LdmComponents
from foley_core.ldm.mel import griffin_lim, pad_frames
from foley_core.ldm.models import unet_downsampling, unet_input, vae_downsampling

SamplerName = Literal["ddim", "dpmsolver++"]


def make_sampler(scheduler_config: dict, name: SamplerName) -> SchedulerMixin:
    if name == "ddim":
        return DDIMScheduler.from_config(scheduler_config, clip_sample=False, set_alpha_to_one=False)
    if name == "dpmsolver++":
        return DPMSolverMultistepScheduler.from_config(scheduler_config, algorithm_type="dpmsolver++", solver_order=2)
    raise ValueError(f"unknown sampler {name!r}; use 'ddim' or 'dpmsolver++'")


def latent_shape(components: LdmComponents, frames: int) -> tuple[int, int, int]:
    """(channels, height, width) of the latent for a log-mel of ``frames`` frames (padded to fit both nets)."""
    vae_down, unet_down = vae_downsampling(components.vae), unet_downsampling(components.unet)
    padded = frames + (-frames) % (vae_down * unet_down)
    if components.audio.n_mels % (vae_down * unet_down):
        raise ValueError(f"n_mels {components.audio.n_mels} is not divisible by the total downsampling {vae_down * unet_down}")
    return components.vae.config.latent_channels, padded // vae_down, components.audio.n_mels // vae_down


def _per_row(value: float | Sequence[float] | torch.Tensor, rows: int) -> torch.Tensor:
    scales = torch.as_tensor(value, dtype=torch.float32).flatten()
    if scales.numel() == 1:
        scales = scales.expand(rows)
    if scales.numel() != rows:
        raise ValueError(f"guidance_scale has {scales.numel()} values for {rows} rows")
    return scales


def _initial_noise(shape: tuple[int, ...], generators: Sequence[torch.Generator] | torch.Generator | None, rows: int) -> torch.Tensor:
    if generators is None or isinstance(generators, torch.Generator):
        return torch.randn((rows, *shape), generator=generators)
    if len(generators) != rows:
        raise ValueError(f"{len(generators)} generators for {rows} rows")
    return torch.stack([torch.randn(shape, generator=g) for g in generators])


@torch.no_grad()
def sample_latents(
    components: LdmComponents,
    conditions: torch.Tensor,
    unconditional: torch.Tensor,
    *,
    guidance_scale: float | Sequence[float] | torch.Tensor = 1.0,
    generators: Sequence[torch.Generator] | torch.Generator | None = None,
    steps: int = 25,
    sampler: SamplerName = "ddim",
    frames: int | None = None,
) -> torch.Tensor:
    """Scaled latents ``(n, C, H, W)``. ``conditions`` is ``(n, d)``; ``unconditional`` is ``(d,)``.

    Guidance per row: ``eps = eps_uncond + g * (eps_cond - eps_uncond)``; rows with ``g == 1``
    use the conditional prediction only (the unconditional pass is skipped if no row needs it)."""
    conditions = torch.as_tensor(conditions, dtype=torch.float32)
    if conditions.ndim != 2 or conditions.shape[1] != components.condition_dim:
        raise ValueError(f"conditions must be (n, {components.condition_dim}), got {tuple(conditions.shape)}")
    if steps < 1:
        raise ValueError("steps must be >= 1")
    rows, device = len(conditions), components.unet.device
    scales = _per_row(guidance_scale, rows).to(device).view(-1, 1, 1, 1)
    frames = frames or components.audio.clip_samples // components.audio.hop_length
    scheduler = make_sampler(components.scheduler_config, sampler)
    scheduler.set_timesteps(steps, device=device)
    latents = _initial_noise(latent_shape(components, frames), generators, rows).to(device) * scheduler.init_noise_sigma
    conditions = conditions.to(device)
    guided = bool((scales != 1).any())
    labels = conditions
    if guided:
        unconditional = torch.as_tensor(unconditional, dtype=torch.float32, device=device).expand_as(conditions)
        labels = torch.cat([unconditional, conditions])
    for t in scheduler.timesteps:
        model_in = scheduler.scale_model_input(latents, t)
        model_in = torch.cat([model_in, model_in]) if guided else model_in
        prediction = components.unet(unet_input(components.unet, model_in), t, encoder_hidden_states=None, class_labels=labels).sample
        if guided:
            uncond, cond = prediction.chunk(2)
            prediction = uncond + scales * (cond - uncond)
        latents = scheduler.step(prediction, t, latents).prev_sample
    return latents


@torch.no_grad()
def decode_latents(components: LdmComponents, latents: torch.Tensor, frames: int | None = None) -> torch.Tensor:
    """Scaled latents -> raw log-mel ``(n, 1, frames, n_mels)``."""
    frames = frames or components.audio.clip_samples // components.audio.hop_length
    image = components.vae.decode(latents / components.latent_scale).sample
    return components.normalisation.denormalise(image)[..., :frames, :]


@torch.no_grad()
def mel_to_waveform(components: LdmComponents, log_mel: torch.Tensor) -> torch.Tensor:
    """Raw log-mel ``(n, 1, frames, n_mels)`` -> waveform ``(n, frames * hop)`` at the profile rate."""
    if components.vocoder is None:
        return griffin_lim(log_mel, components.audio, components.griffinlim_iters)
    return components.vocoder(log_mel[:, 0].to(components.vocoder.device)).float().cpu()


@torch.no_grad()
def reconstruct(components: LdmComponents, waveforms: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Waveform -> log-mel -> VAE (posterior mode) -> log-mel -> waveform; returns (log_mel, waveform)."""
    front_end = components.front_end
    log_mel = front_end(waveforms.to(front_end.mel_basis.device))
    frames = log_mel.shape[-2]
    image = components.normalisation.normalise(pad_frames(log_mel, vae_downsampling(components.vae)))
    decoded = components.normalisation.denormalise(components.vae.decode(components.vae.encode(image).latent_dist.mode()).sample)
    decoded = decoded[..., :frames, :]
    return decoded, mel_to_waveform(components, decoded)


@torch.no_grad()
def generate_waveforms(
    components: LdmComponents,
    conditions: torch.Tensor,
    unconditional: torch.Tensor,
    *,
    guidance_scale: float | Sequence[float] | torch.Tensor = 1.0,
    generators: Sequence[torch.Generator] | torch.Generator | None = None,
    steps: int = 25,
    sampler: SamplerName = "ddim",
) -> torch.Tensor:
    """Conditioning vectors ``(n, d)`` -> waveforms ``(n, clip_samples)`` at ``audio.sample_rate`` (16 kHz)."""
    latents = sample_latents(components, conditions, unconditional, guidance_scale=guidance_scale,
                             generators=generators, steps=steps, sampler=sampler)  # fmt: skip
    waves = mel_to_waveform(components, decode_latents(components, latents))
    samples = components.audio.clip_samples
    return torch.nn.functional.pad(waves, (0, max(0, samples - waves.shape[-1])))[:, :samples]
