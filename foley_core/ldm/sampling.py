"""Sampling: conditioning vectors -> latents (DDIM / DPM-Solver++ / the folder's own scheduler, with
classifier-free guidance) -> log-mel (VAE) -> waveform (vocoder, or Griffin-Lim). Inference only.

Reproducibility: each row's initial noise comes from its own ``torch.Generator`` (drawn on the CPU
in float32, then moved to the UNet's device), and so does any noise a step draws (DDIM with
``eta`` > 0, ``generation.eta``; a stochastic native scheduler): diffusers draws it row by row from
a list of generators. DDIM at eta=0 and DPM-Solver++ multistep draw nothing. So a row's output
depends only on its generator, its condition and its guidance scale, not on the batch it is in.

Two conventions (``Convention``) decide the length and the guidance rule:

- ``"foley"`` (models trained here): the latent is padded to a multiple of the VAE's and UNet's
  downsampling; the model always samples its trained clip length (``audio.clip_seconds``) and the
  waveform is cut to ``seconds`` afterwards; every row with ``g != 1`` is guided
  (``eps_u + g (eps_c - eps_u)``, so ``g = 0`` is unconditional).
- ``"diffusers"`` (imported AudioLDM): exactly ``AudioLDMPipeline``'s recipe, so one row with the
  same generator seed, steps, guidance and length gives diffusers' waveform: the mel height is
  ``int(seconds / (hop / rate))`` rounded up to a multiple of the VAE's downsampling, the whole
  decoded mel goes to the vocoder and the waveform is cut to ``int(seconds * rate)``; only rows
  with ``g > 1`` are guided (diffusers skips guidance at ``g <= 1``).

Precision: the UNet may hold bf16/fp16 weights (``generation.precision``); latents, the scheduler's
arithmetic, the VAE and the vocoder stay float32 (the UNet's inputs are cast to its dtype and its
prediction back to float32).
"""

from __future__ import annotations

import inspect
import math
from typing import Literal, Sequence

import diffusers
import numpy as np
import torch
from diffusers import DDIMScheduler, DPMSolverMultistepScheduler
from diffusers.schedulers.scheduling_utils import SchedulerMixin

from foley_core.ldm.components import LdmComponents
from foley_core.ldm.mel import griffin_lim, pad_frames
from foley_core.ldm.models import unet_downsampling, unet_input, vae_downsampling

SamplerName = Literal["ddim", "dpmsolver++", "native"]
Convention = Literal["foley", "diffusers"]


def make_sampler(scheduler_config: dict, name: SamplerName) -> SchedulerMixin:
    """``ddim`` / ``dpmsolver++`` on the model's noise schedule, or ``native``: the scheduler class the
    config names (``_class_name``, e.g. an AudioLDM folder's ``scheduler/``) with its settings as they are."""
    if name == "ddim":
        return DDIMScheduler.from_config(scheduler_config, clip_sample=False, set_alpha_to_one=False)
    if name == "dpmsolver++":
        return DPMSolverMultistepScheduler.from_config(scheduler_config, algorithm_type="dpmsolver++", solver_order=2)
    if name == "native":
        class_name = scheduler_config.get("_class_name", "DDIMScheduler")
        scheduler_class = getattr(diffusers, str(class_name), None)
        if not (isinstance(scheduler_class, type) and issubclass(scheduler_class, SchedulerMixin)):
            raise ValueError(f"the scheduler config names {class_name!r}, which is not a diffusers scheduler")
        return scheduler_class.from_config(scheduler_config)
    raise ValueError(f"unknown sampler {name!r}; use 'ddim', 'dpmsolver++' or 'native'")


def latent_shape(components: LdmComponents, frames: int, convention: Convention = "foley") -> tuple[int, int, int]:
    """(channels, height, width) of the latent for a log-mel of ``frames`` frames (padded to fit the nets:
    both the VAE and the UNet in the foley convention, the VAE only in diffusers')."""
    vae_down = vae_downsampling(components.vae)
    multiple = vae_down if convention == "diffusers" else vae_down * unet_downsampling(components.unet)
    padded = frames + (-frames) % multiple
    if components.audio.n_mels % multiple:
        raise ValueError(f"n_mels {components.audio.n_mels} is not divisible by the total downsampling {multiple}")
    return components.vae.config.latent_channels, padded // vae_down, components.audio.n_mels // vae_down


def _vocoder_rate_and_hop(components: LdmComponents) -> tuple[int, int]:
    if components.vocoder is not None:
        config = components.vocoder.config
        return int(config.sampling_rate), int(np.prod(config.upsample_rates))
    return components.audio.sample_rate, components.audio.hop_length


def sampling_plan(components: LdmComponents, seconds: float | None, convention: Convention = "foley") -> tuple[int, int]:
    """(mel frames to sample, waveform samples to return) for a clip of ``seconds`` (None: the model's length)."""
    audio = components.audio
    if convention == "foley":
        if seconds is not None and not 0 < seconds <= audio.clip_seconds:
            raise ValueError(f"seconds must be in (0, {audio.clip_seconds}] for this model, got {seconds}")
        samples = audio.clip_samples if seconds is None else int(round(seconds * audio.sample_rate))
        return audio.clip_samples // audio.hop_length, samples
    if convention != "diffusers":
        raise ValueError(f"unknown convention {convention!r}; use 'foley' or 'diffusers'")
    seconds = audio.clip_seconds if seconds is None else seconds
    rate, hop = _vocoder_rate_and_hop(components)
    upsample_factor = np.prod([hop]) / rate  # AudioLDMPipeline.__call__, step 0, the same float arithmetic
    if not (math.isfinite(seconds) and seconds >= upsample_factor * vae_downsampling(components.vae)):
        raise ValueError(f"seconds must be at least {upsample_factor * vae_downsampling(components.vae)}, got {seconds}")
    return int(seconds / upsample_factor), int(seconds * rate)


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


def _step_kwargs(scheduler: SchedulerMixin, generators, eta: float = 0.0) -> dict:
    """What diffusers' pipelines pass to ``scheduler.step`` (``prepare_extra_step_kwargs``): ``eta`` to a
    scheduler whose step takes one (DDIM), the generator(s) to stochastic schedulers (DDIM at eta=0,
    DPM-Solver++ and PNDM draw nothing)."""
    accepted = inspect.signature(scheduler.step).parameters
    kwargs = {}
    if "eta" in accepted:
        kwargs["eta"] = float(eta)
    if "generator" in accepted and generators is not None:
        kwargs["generator"] = generators if isinstance(generators, torch.Generator) or len(generators) != 1 else generators[0]
    return kwargs


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
    convention: Convention = "foley",
    eta: float = 0.0,
) -> torch.Tensor:
    """Scaled latents ``(n, C, H, W)`` in float32. ``conditions`` is ``(n, d)``; ``unconditional`` is ``(d,)``.

    Guidance per row: ``eps = eps_uncond + g * (eps_cond - eps_uncond)``; rows that are not guided
    (``g == 1``; in the diffusers convention ``g <= 1``) use the conditional prediction only, and the
    unconditional pass is skipped if no row needs it. ``eta``: DDIM's (``generation.eta``; 0 = deterministic),
    passed to any scheduler whose step takes one."""
    conditions = torch.as_tensor(conditions, dtype=torch.float32)
    if conditions.ndim != 2 or conditions.shape[1] != components.condition_dim:
        raise ValueError(f"conditions must be (n, {components.condition_dim}), got {tuple(conditions.shape)}")
    if steps < 1:
        raise ValueError("steps must be >= 1")
    unet = components.unet
    rows, device, dtype = len(conditions), unet.device, unet.dtype
    scales = _per_row(guidance_scale, rows).to(device).view(-1, 1, 1, 1)
    frames = frames or sampling_plan(components, None, convention)[0]
    scheduler = make_sampler(components.scheduler_config, sampler)
    scheduler.set_timesteps(steps, device=device)
    shape = latent_shape(components, frames, convention)
    latents = _initial_noise(shape, generators, rows).to(device) * scheduler.init_noise_sigma
    conditions = conditions.to(device)
    guide = scales > 1 if convention == "diffusers" else scales != 1
    guided = bool(guide.any())
    labels = conditions
    if guided:
        unconditional = torch.as_tensor(unconditional, dtype=torch.float32).to(device).expand_as(conditions)
        labels = torch.cat([unconditional, conditions])
    labels = labels.to(dtype)
    extra = _step_kwargs(scheduler, generators, eta)
    for t in scheduler.timesteps:
        model_in = scheduler.scale_model_input(latents, t)
        model_in = torch.cat([model_in, model_in]) if guided else model_in
        prediction = unet(unet_input(unet, model_in.to(dtype)), t, encoder_hidden_states=None, class_labels=labels).sample
        prediction = prediction.float()
        if guided:
            uncond, cond = prediction.chunk(2)
            guided_prediction = uncond + scales * (cond - uncond)
            prediction = torch.where(guide, guided_prediction, cond) if convention == "diffusers" else guided_prediction
        latents = scheduler.step(prediction, t, latents, **extra).prev_sample
    return latents


@torch.no_grad()
def decode_latents(components: LdmComponents, latents: torch.Tensor, frames: int | None = None,
                   convention: Convention = "foley") -> torch.Tensor:
    """Scaled latents -> raw log-mel ``(n, 1, frames, n_mels)`` (``frames=0``: every decoded frame)."""
    frames = components.audio.clip_samples // components.audio.hop_length if frames is None else frames
    vae = components.vae
    # AudioLDMPipeline.decode_latents multiplies by the reciprocal; the rounding differs from a division
    unscaled = (1 / components.latent_scale) * latents if convention == "diffusers" else latents / components.latent_scale
    image = vae.decode(unscaled.to(vae.device, vae.dtype)).sample.float()
    log_mel = components.normalisation.denormalise(image)
    return log_mel[..., :frames, :] if frames else log_mel


@torch.no_grad()
def mel_to_waveform(components: LdmComponents, log_mel: torch.Tensor) -> torch.Tensor:
    """Raw log-mel ``(n, 1, frames, n_mels)`` -> waveform ``(n, frames * hop)`` at the profile rate."""
    if components.vocoder is None:
        return griffin_lim(log_mel, components.audio, components.griffinlim_iters)
    vocoder = components.vocoder
    return vocoder(log_mel[:, 0].to(vocoder.device, vocoder.dtype)).float().cpu()


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
    seconds: float | None = None,
    convention: Convention = "foley",
    eta: float = 0.0,
) -> torch.Tensor:
    """Conditioning vectors ``(n, d)`` -> waveforms ``(n, samples)`` at ``audio.sample_rate`` (16 kHz) on the CPU.

    ``seconds`` (None: the model's clip length): see the module notes for how each convention sizes the clip."""
    frames, samples = sampling_plan(components, seconds, convention)
    latents = sample_latents(components, conditions, unconditional, guidance_scale=guidance_scale,
                             generators=generators, steps=steps, sampler=sampler, frames=frames,
                             convention=convention, eta=eta)  # fmt: skip
    if convention == "diffusers":  # AudioLDMPipeline: the whole decoded mel to the vocoder, then cut
        return mel_to_waveform(components, decode_latents(components, latents, 0, convention))[:, :samples]
    waves = mel_to_waveform(components, decode_latents(components, latents, frames))
    clip = components.audio.clip_samples
    waves = torch.nn.functional.pad(waves, (0, max(0, clip - waves.shape[-1])))[:, :clip]
    return waves[:, :samples]
