"""Training speed of the LDM stage: steps/s per model, and our Lightning step vs a plain PyTorch loop.

Same model, same fixed batch, same optimizer, same loss code (``module.compute_loss``) in both;
the Lightning run uses the Trainer flags of ``foley_core.ldm.training.fit`` minus checkpointing.

    .venv/bin/python benchmarks/bench_ldm.py --profile cpu --steps 20
"""

from __future__ import annotations

import argparse
import time

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from foley_core.core.config import Profile, load_profile
from foley_core.ldm.mel import MelFrontEnd
from foley_core.ldm.models import build_train_scheduler, build_unet, build_vae, build_vocoder, parameter_count
from foley_core.ldm.modules import UnetModule, VaeModule, VocoderModule


class _SameBatch(Dataset):
    def __init__(self, batch, length: int):
        self.batch, self.length = batch, length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int):
        return self.batch


class _StepTimer(pl.Callback):
    def __init__(self, warmup: int):
        self.warmup, self.started, self.ended = warmup, None, None

    def on_train_batch_start(self, trainer, *args) -> None:
        if trainer.global_step == self.warmup:
            self.started = time.perf_counter()

    def on_train_batch_end(self, trainer, *args) -> None:
        self.ended = time.perf_counter()


def build(profile: Profile, which: str) -> tuple[pl.LightningModule, object]:
    ldm, audio, generator = profile.ldm, profile.audio, torch.Generator().manual_seed(0)
    if which == "vae":
        crop = ldm.vae.crop_frames or audio.clip_samples // audio.hop_length
        return VaeModule(build_vae(ldm.vae), ldm.vae), torch.randn(ldm.vae.batch_size, 1, crop, audio.n_mels, generator=generator)
    if which == "vocoder":
        frames, n = ldm.vocoder.segment_frames, ldm.vocoder.batch_size
        module = VocoderModule(build_vocoder(ldm.vocoder, audio), MelFrontEnd(audio), ldm.vocoder)
        wave = 0.1 * torch.randn(n, frames * audio.hop_length, generator=generator)
        return module, (MelFrontEnd(audio)(wave)[:, 0], wave)
    vae_down = 2 ** (len(ldm.vae.block_out_channels) - 1)
    height = ldm.unet.crop_frames or audio.clip_samples // audio.hop_length // vae_down  # the training crop
    shape = (ldm.unet.batch_size, ldm.vae.latent_channels, height, audio.n_mels // vae_down)
    unet = build_unet(ldm.unet, ldm.vae.latent_channels, profile.clap.embed_dim)
    conditions = torch.nn.functional.normalize(torch.randn(shape[0], profile.clap.embed_dim, generator=generator), dim=1)
    batch = (torch.randn(shape, generator=generator), 0.05 * torch.ones(shape), conditions)
    return UnetModule(unet, build_train_scheduler(ldm.unet), ldm.unet), batch


def plain_loop(module: pl.LightningModule, batch, steps: int, warmup: int) -> float:
    """Seconds per step of a hand-written loop: forward, backward, optimizer step (+ EMA for the UNet)."""
    optimizer = module.configure_optimizers()
    optimizer = optimizer["optimizer"] if isinstance(optimizer, dict) else optimizer  # the rate's schedule is not timed
    module.train()
    for step in range(warmup + steps):
        if step == warmup:
            started = time.perf_counter()
        loss, _ = module.compute_loss(batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if isinstance(module, UnetModule):
            module.ema.step(module.unet.parameters())
    return (time.perf_counter() - started) / steps


def lightning_loop(module: pl.LightningModule, batch, steps: int, warmup: int, profile: Profile) -> float:
    timer = _StepTimer(warmup)
    trainer = pl.Trainer(
        max_steps=warmup + steps, max_epochs=-1, accelerator=profile.trainer.accelerator, devices=1,
        precision=profile.trainer.precision, callbacks=[timer], logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0, num_sanity_val_steps=0,
        log_every_n_steps=min(25, warmup + steps),
    )  # fmt: skip
    loader = DataLoader(_SameBatch(batch, warmup + steps), batch_size=None, shuffle=False)
    trainer.fit(module, train_dataloaders=loader)
    return (timer.ended - timer.started) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="cpu")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--models", nargs="+", default=["vae", "vocoder", "unet"])
    parser.add_argument("--repeats", type=int, default=2, help="alternate plain/Lightning runs; the fastest of each counts")
    parser.add_argument("--precision", help="Lightning precision for the Lightning run, e.g. bf16-mixed "
                        "(default: the profile's trainer.precision)")
    args = parser.parse_args()
    profile = load_profile(args.profile, {"trainer": {"precision": args.precision}} if args.precision else None)
    print(f"profile {args.profile}, torch threads {torch.get_num_threads()}, {args.steps} timed steps after {args.warmup} "
          f"warm-up, Lightning precision {profile.trainer.precision}")
    print(f"{'model':8} {'params':>9} {'batch':>5} {'plain steps/s':>14} {'lightning steps/s':>18} {'lightning/plain time':>21}")
    for which in args.models:
        plain, lightning = float("inf"), float("inf")
        for _ in range(args.repeats):  # alternating, and taking the fastest, damps load from other processes
            torch.manual_seed(0)
            module, batch = build(profile, which)
            plain = min(plain, plain_loop(module, batch, args.steps, args.warmup))
            module, batch = build(profile, which)  # fresh weights and optimizer for the Lightning run
            lightning = min(lightning, lightning_loop(module, batch, args.steps, args.warmup, profile))
        size = batch.shape[0] if torch.is_tensor(batch) else batch[0].shape[0]
        print(f"{which:8} {parameter_count(module):>9,} {size:>5} {1 / plain:>14.2f} {1 / lightning:>18.2f} {lightning / plain:>21.3f}")


if __name__ == "__main__":
    main()
