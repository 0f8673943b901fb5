"""Lightning modules: one per network. Each exposes ``compute_loss(batch)`` so the benchmark can
drive the same model and batch from a plain PyTorch loop."""

from __future__ import annotations

import math

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
from diffusers.training_utils import EMAModel
from transformers import SpeechT5HifiGan

from foley_core.core.config import UnetConfig, VaeConfig, VocoderConfig
from foley_core.ldm.mel import MelFrontEnd
from foley_core.ldm.metrics import mel_l1, multi_resolution_stft
from foley_core.ldm.models import unet_input


def with_schedule(optimizer: torch.optim.Optimizer, schedule: str, steps: int):
    """What ``configure_optimizers`` returns: the optimizer alone (constant rate) or with a per-step
    cosine decay to 0 at ``steps``; Lightning checkpoints the scheduler, so a resumed run continues it."""
    if schedule == "constant":
        return optimizer
    if schedule != "cosine":
        raise ValueError(f"unknown lr_schedule {schedule!r}")
    decay = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * min(step, steps) / max(1, steps))))
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": decay, "interval": "step"}}


class VaeModule(pl.LightningModule):
    """Reconstruction (L1 on the normalised log-mel) + ``kl_weight`` x KL.

    No adversarial/perceptual term: on the cpu budget it would halve the steps (docs/ldm.md)."""

    def __init__(self, vae: AutoencoderKL, cfg: VaeConfig):
        super().__init__()
        self.vae, self.cfg = vae, cfg

    def compute_loss(self, images: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        posterior = self.vae.encode(images).latent_dist
        reconstruction = self.vae.decode(posterior.sample()).sample
        l1 = F.l1_loss(reconstruction, images)
        kl = posterior.kl().mean()
        return l1 + self.cfg.kl_weight * kl, {"l1": l1, "kl": kl}

    def training_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
        loss, parts = self.compute_loss(batch)
        self.log_dict({"vae/loss": loss, "vae/l1": parts["l1"], "vae/kl": parts["kl"]})
        return loss

    def configure_optimizers(self):
        return with_schedule(torch.optim.AdamW(self.vae.parameters(), lr=self.cfg.learning_rate), self.cfg.lr_schedule, self.cfg.steps)


class VocoderModule(pl.LightningModule):
    """The documented lighter HiFi-GAN objective: multi-resolution STFT + mel L1 on the generator,
    no discriminators (they triple the step time, which the cpu budget cannot pay)."""

    def __init__(self, vocoder: SpeechT5HifiGan, front_end: MelFrontEnd, cfg: VocoderConfig):
        super().__init__()
        self.vocoder, self.front_end, self.cfg = vocoder, front_end, cfg

    def compute_loss(self, batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        log_mel, wave = batch
        predicted = self.vocoder(log_mel)
        stft = multi_resolution_stft(predicted, wave)
        mel = mel_l1(self.front_end, predicted, log_mel.unsqueeze(1))
        return stft + mel, {"mrstft": stft, "mel_l1": mel}

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        loss, parts = self.compute_loss(batch)
        self.log_dict({"vocoder/loss": loss, "vocoder/mrstft": parts["mrstft"], "vocoder/mel_l1": parts["mel_l1"]})
        return loss

    def configure_optimizers(self):
        optimizer = torch.optim.AdamW(self.vocoder.parameters(), lr=self.cfg.learning_rate, betas=(0.8, 0.99))
        return with_schedule(optimizer, self.cfg.lr_schedule, self.cfg.steps)


class UnetModule(pl.LightningModule):
    """Denoising loss on scaled VAE latents with condition dropout and an EMA.

    A dropped condition becomes ``unconditional``: the vector the sampler guides against (a zero
    vector for models trained here, an imported AudioLDM's embedding of "" for those), so the
    "no condition" the UNet learns is the one guidance uses."""

    def __init__(self, unet: UNet2DConditionModel, scheduler: DDPMScheduler, cfg: UnetConfig, *,
                 condition_dropout: float | None = None, unconditional: torch.Tensor | None = None):
        super().__init__()
        self.unet, self.scheduler, self.cfg = unet, scheduler, cfg
        self.condition_dropout = cfg.condition_dropout if condition_dropout is None else condition_dropout
        self.register_buffer("unconditional", None if unconditional is None else unconditional.detach().float().reshape(-1),
                             persistent=False)
        self.ema = EMAModel(unet.parameters(), decay=cfg.ema_decay)

    def compute_loss(self, batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        means, stds, conditions = batch
        latents = means + stds * torch.randn_like(means)
        noise = torch.randn_like(latents)
        steps = torch.randint(0, self.scheduler.config.num_train_timesteps, (len(latents),), device=latents.device)
        noisy = self.scheduler.add_noise(latents, noise, steps)
        if self.scheduler.config.prediction_type == "v_prediction":
            target = self.scheduler.get_velocity(latents, noise, steps)
        else:
            target = noise
        dropped = torch.rand(len(conditions), 1, device=conditions.device) < self.condition_dropout
        empty = torch.zeros_like(conditions) if self.unconditional is None else self.unconditional.expand_as(conditions)
        conditions = torch.where(dropped, empty.to(conditions.dtype), conditions)
        predicted = self.unet(unet_input(self.unet, noisy), steps, encoder_hidden_states=None, class_labels=conditions).sample
        loss = F.mse_loss(predicted.float(), target.float())
        return loss, {}

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        loss, _ = self.compute_loss(batch)
        self.log("unet/loss", loss)
        return loss

    def optimizer_step(self, *args, **kwargs) -> None:
        super().optimizer_step(*args, **kwargs)
        # Here, not in on_train_batch_end: Lightning saves step checkpoints in the callbacks'
        # on_train_batch_end, which runs before the module's, so that step's EMA update would be
        # missing from the checkpoint and a resumed run would differ from an uninterrupted one.
        self.update_ema()

    def update_ema(self) -> None:
        self.ema.step(self.unet.parameters())

    def on_fit_start(self) -> None:
        self.ema.to(self.device)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["ema"] = self.ema.state_dict()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.ema.load_state_dict(checkpoint["ema"])

    def configure_optimizers(self):
        return with_schedule(torch.optim.AdamW(self.unet.parameters(), lr=self.cfg.learning_rate), self.cfg.lr_schedule, self.cfg.steps)

    def ema_unet(self) -> UNet2DConditionModel:
        """A copy of the UNet holding the EMA weights (what sampling uses)."""
        unet = UNet2DConditionModel.from_config(self.unet.config)
        unet.load_state_dict(self.unet.state_dict())
        self.ema.copy_to(unet.parameters())
        return unet.eval()
