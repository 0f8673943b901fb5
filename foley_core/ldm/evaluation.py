"""Reconstruction quality and pictures for the ``pretrained_ldm`` asset metadata."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from foley_core.core.plots import spectrogram_png
from foley_core.ldm.components import LdmComponents
from foley_core.ldm.data import load_waveforms
from foley_core.ldm.mel import griffin_lim
from foley_core.ldm.metrics import mel_l1, multi_resolution_stft
from foley_core.ldm.sampling import generate_waveforms, mel_to_waveform, reconstruct


def pick_per_class(rows: pd.DataFrame, clips: int) -> pd.DataFrame:
    """Up to ``clips`` rows spread over the classes (round-robin, deterministic order)."""
    ordered = rows.sort_values(["class", "content_hash"]).groupby("class", sort=True).cumcount()
    return rows.assign(_rank=ordered.values).sort_values(["_rank", "class"]).head(clips).drop(columns="_rank")


@torch.no_grad()
def reconstruction_report(components: LdmComponents, val_rows: pd.DataFrame, clips: int = 8) -> dict:
    """Mel L1 (log-mel, natural-log units) and MR-STFT distance to the true clip, for:
    the vocoder on the true mel, VAE + vocoder, and Griffin-Lim on the true mel (the baseline)."""
    rows = pick_per_class(val_rows, clips)
    waves = load_waveforms(rows, components.audio)
    true_mel = components.front_end(waves)
    candidates = {"griffinlim_true_mel": griffin_lim(true_mel, components.audio, components.griffinlim_iters)}
    if components.vocoder is not None:
        candidates["vocoder_true_mel"] = mel_to_waveform(components, true_mel)
    vae_mel, candidates["vae_vocoder"] = reconstruct(components, waves)
    report = {"clips": len(rows), "vae_mel_l1": float((vae_mel - true_mel).abs().mean())}
    for name, predicted in candidates.items():
        predicted = predicted[:, : waves.shape[-1]]
        report[name] = {
            "mel_l1": float(mel_l1(components.front_end, predicted, true_mel)),
            "mrstft": float(multi_resolution_stft(predicted, waves)),
        }
    return report


@torch.no_grad()
def spectrogram_images(components: LdmComponents, val_rows: pd.DataFrame, class_conditions: dict[str, np.ndarray],
                       *, steps: int = 25, guidance_scale: float = 3.0, seed: int = 0) -> dict[str, bytes]:  # fmt: skip
    """Per class: one PNG with [true clip, VAE+vocoder reconstruction, a sample generated from the class's condition]."""
    images = {}
    unconditional = components.unconditional_embedding()
    rate, hop = components.audio.sample_rate, components.audio.hop_length
    for label, condition in sorted(class_conditions.items()):
        rows = val_rows[val_rows["class"] == label].sort_values("content_hash").head(1)
        if rows.empty:
            continue
        true = load_waveforms(rows, components.audio)
        _, rebuilt = reconstruct(components, true)
        condition = torch.as_tensor(condition, dtype=torch.float32)[None]
        sample = generate_waveforms(components, condition, unconditional, guidance_scale=guidance_scale,
                                    generators=[torch.Generator().manual_seed(seed)], steps=steps)  # fmt: skip
        clips = [true[0].numpy(), rebuilt[0].numpy(), sample[0].numpy()]
        images[label] = spectrogram_png(clips, rate, f"{label}: true | reconstruction | sample", hop_length=hop)
    return images
