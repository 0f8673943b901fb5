"""Would fewer training steps do? Train one network of the LDM with other settings and compare it,
on the validation clips, with the one the profile's `foley run` trained.

    .venv/bin/python benchmarks/bench_training_variants.py --model unet --set steps=1100 --set lr_schedule=cosine
    .venv/bin/python benchmarks/bench_training_variants.py --model vocoder --set steps=2000 --set lr_schedule=cosine

Needs a finished `foley run --profile P` (its dataset, CLAP embeddings, VAE and the trained network).
The variant trains into a scratch folder (``--out``), never into the profile's artifacts.

- ``vocoder``: multi-resolution STFT distance and log-mel L1 of the validation clips rebuilt from their
  true log-mels (lower is better).
- ``unet``: validation denoising loss (v-prediction MSE) of the validation clips' latents, conditioned
  on their CLAP audio embeddings, over 8 fixed noise and timestep draws: both UNets see the same draws.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F


def _value(text: str):
    try:
        return json.loads(text)
    except ValueError:
        return text


@torch.no_grad()
def vocoder_distance(vocoder, rows, profile) -> dict:
    from foley_core.ldm.data import load_waveforms
    from foley_core.ldm.mel import MelFrontEnd
    from foley_core.ldm.metrics import mel_l1, multi_resolution_stft

    front_end = MelFrontEnd(profile.audio)
    waves = load_waveforms(rows, profile.audio)
    mels = front_end(waves)
    rebuilt = torch.cat([vocoder(mels[i : i + 32, 0]) for i in range(0, len(mels), 32)])[:, : waves.shape[-1]]
    return {"mrstft": float(multi_resolution_stft(rebuilt, waves)), "mel_l1": float(mel_l1(front_end, rebuilt, mels))}


@torch.no_grad()
def unet_validation_loss(unet, scheduler, means, conditions, draws: int = 8) -> float:
    from foley_core.ldm.models import unet_input

    generator, losses = torch.Generator().manual_seed(0), []
    for _ in range(draws):
        noise = torch.randn(means.shape, generator=generator)
        steps = torch.randint(0, scheduler.config.num_train_timesteps, (len(means),), generator=generator)
        noisy = scheduler.add_noise(means, noise, steps)
        target = scheduler.get_velocity(means, noise, steps) if scheduler.config.prediction_type == "v_prediction" else noise
        predicted = torch.cat([unet(unet_input(unet, noisy[i : i + 64]), steps[i : i + 64], encoder_hidden_states=None,
                                    class_labels=conditions[i : i + 64]).sample for i in range(0, len(means), 64)])  # fmt: skip
        losses.append(F.mse_loss(predicted, target).item())
    return float(np.mean(losses))


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="cpu")
    parser.add_argument("--override", default=None, help="JSON deep-merged over the profile, as load_profile's overrides")
    parser.add_argument("--model", choices=["vocoder", "unet"], required=True)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a setting of ldm.<model> for the variant, e.g. steps=1100, lr_schedule=cosine")
    parser.add_argument("--out", type=Path, default=Path("artifacts/bench_variants"))
    args = parser.parse_args(argv)

    from diffusers import DDPMScheduler, UNet2DConditionModel

    from foley_core.clap import load_clap
    from foley_core.clap.cache import cached_audio_embeddings
    from foley_core.core.config import _deep_merge, load_profile
    from foley_core.core.layout import layout
    from foley_core.data.ingest import load_manifest
    from foley_core.ldm.data import compute_log_mels, conditioning_matrix, load_waveforms, split_rows
    from foley_core.ldm.mel import MelFrontEnd, pad_frames
    from foley_core.ldm.models import unet_downsampling, vae_downsampling
    from foley_core.ldm.training import _encode_posteriors, _load_vocoder, load_vae, train_unet, train_vocoder

    base = json.loads(args.override) if args.override else {}
    profile = load_profile(args.profile, base)
    where = layout(profile)
    settings = dict(item.split("=", 1) for item in args.set)
    variant = load_profile(args.profile, _deep_merge(base, {
        "paths": {"artifacts_dir": str(args.out.resolve())}, "wandb": {"mode": "disabled"},
        "ldm": {args.model: {k: _value(v) for k, v in settings.items()}}}))  # fmt: skip
    manifest = load_manifest(where.dataset)
    val = split_rows(manifest, "val")
    out = args.out.resolve() / f"{args.model}-{'-'.join(f'{k}={v}' for k, v in sorted(settings.items())) or 'default'}"
    started = time.perf_counter()
    if args.model == "vocoder":
        trained = train_vocoder(variant, manifest, out)
        report = {"profile's": vocoder_distance(_load_vocoder(where.ldm / "vocoder"), val, profile),
                  "variant": vocoder_distance(_load_vocoder(out), val, profile)}  # fmt: skip
    else:
        clap_version = load_clap(profile).version
        conditioning = cached_audio_embeddings(profile, clap_version, manifest)
        trained = train_unet(variant, manifest, conditioning, where.ldm / "vae", out)
        vae, norm = load_vae(where.ldm / "vae")
        scheduler = DDPMScheduler.from_pretrained(where.ldm / "unet" / "scheduler")
        report = {}
        for name, folder in (("profile's", where.ldm / "unet"), ("variant", out)):
            unet = UNet2DConditionModel.from_pretrained(folder, use_safetensors=True).eval()
            multiple = vae_downsampling(vae) * unet_downsampling(unet)
            images = norm.normalise(pad_frames(compute_log_mels(load_waveforms(val, profile.audio), MelFrontEnd(profile.audio)), multiple))
            means, _ = _encode_posteriors(vae, images, vae.config.scaling_factor)
            conditions = conditioning_matrix(conditioning, list(val["content_hash"]))
            report[name] = {"val_loss": unet_validation_loss(unet, scheduler, means, conditions)}
    report = {"model": args.model, "settings": settings, "validation_clips": len(val),
              "train_seconds": trained.get("seconds"), "total_seconds": round(time.perf_counter() - started, 1), **report}
    print(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
