"""Fine-tuning: learn the embedding adapter (and optionally the UNet) on the target classes.

Pre-training conditioned the UNet on CLAP *audio* embeddings; generation conditions it on
CLAP *text* embeddings. The paper bridges that gap with a trainable d x d layer after the
frozen text encoder, trained with the same diffusion loss on the DCASE-class clips, each
paired with the text embedding of its caption or of one of its class's prompts.

The ablation (``train_adapter=False``) runs the same recipe with the adapter frozen at
identity: with ``finetune.train == "adapter"`` nothing trains, which is exactly the
pre-trained model used with raw text embeddings.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler

from foley_core.core.audio import write_text_atomic
from foley_core.core.code_version import source_version
from foley_core.core.config import Profile
from foley_core.core.env import retrain_requested
from foley_core.core.fsutil import staged_dir
from foley_core.core.hashing import json_hash
from foley_core.generation.adapter import EmbeddingAdapter
from foley_core.ldm.components import LdmComponents
from foley_core.ldm.data import InMemoryDataModule, LatentConditions, compute_log_mels, event_anchors, load_waveforms
from foley_core.ldm.mel import pad_frames
from foley_core.ldm.models import unet_downsampling, unet_input, vae_downsampling
from foley_core.ldm.modules import UnetModule
from foley_core.ldm.training import _encode_posteriors, fit, fresh_if_retraining, tensor_digest

TextEmbedder = Callable[[list[str]], np.ndarray]
METRICS = "metrics.json"
VALIDATION_REPEATS = 8  # noise/timestep draws per validation clip: the loss is an expectation


class AdapterModule(UnetModule):
    """The UNet's denoising loss with the condition passed through the adapter first."""

    def __init__(self, components: LdmComponents, adapter: EmbeddingAdapter, profile: Profile, *,
                 train_adapter: bool, train_unet: bool, unconditional: torch.Tensor | None = None):
        super().__init__(components.unet, DDPMScheduler.from_config(components.scheduler_config), profile.ldm.unet,
                         unconditional=unconditional)
        self.adapter = adapter
        self.train_adapter, self.train_unet = train_adapter, train_unet
        self.learning_rate = profile.finetune.learning_rate
        self.unet.requires_grad_(train_unet)
        self.adapter.requires_grad_(train_adapter)

    def compute_loss(self, batch):
        means, stds, text = batch
        return super().compute_loss((means, stds, self.adapter(text)))

    def update_ema(self) -> None:
        if self.train_unet:  # a frozen UNet's EMA would only cost time
            super().update_ema()

    def configure_optimizers(self):
        params = [*(self.adapter.parameters() if self.train_adapter else []), *(self.unet.parameters() if self.train_unet else [])]
        return torch.optim.AdamW(params, lr=self.learning_rate, weight_decay=0.0)


def _clip_texts(rows: pd.DataFrame, profile: Profile) -> tuple[list[int], list[str]]:
    """Each clip paired with its caption and each of its class's prompts (clip index, text)."""
    index, texts = [], []
    for i, row in enumerate(rows.itertuples()):
        for text in dict.fromkeys([row.caption, *profile.class_config(row.class_).prompts]):
            index.append(i)
            texts.append(text)
    return index, texts


def _latents(components: LdmComponents, rows: pd.DataFrame, profile: Profile) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """Scaled VAE posteriors (means, stds) of the clips and their crops' event anchors at latent resolution."""
    multiple = vae_downsampling(components.vae) * unet_downsampling(components.unet)
    log_mels = pad_frames(compute_log_mels(load_waveforms(rows, profile.audio), components.front_end), multiple)
    means, stds = _encode_posteriors(components.vae, components.normalisation.normalise(log_mels), components.latent_scale)
    return means, stds, event_anchors(log_mels, means.shape[-2])


@torch.no_grad()
def validation_loss(components: LdmComponents, adapter: EmbeddingAdapter, means: torch.Tensor, text: torch.Tensor,
                    seed: int) -> float:
    """Expected denoising loss on held-out clips with their class prompt, on fixed noise draws:
    the same draws for every adapter, so two adapters are compared on identical terms."""
    scheduler = DDPMScheduler.from_config(components.scheduler_config)
    generator = torch.Generator().manual_seed(seed)
    conditions = adapter(text)
    losses = []
    for _ in range(VALIDATION_REPEATS):
        noise = torch.randn(means.shape, generator=generator)
        steps = torch.randint(0, scheduler.config.num_train_timesteps, (len(means),), generator=generator)
        noisy = scheduler.add_noise(means, noise, steps)
        target = scheduler.get_velocity(means, noise, steps) if scheduler.config.prediction_type == "v_prediction" else noise
        predicted = components.unet(unet_input(components.unet, noisy), steps, encoder_hidden_states=None,
                                    class_labels=conditions).sample
        losses.append(F.mse_loss(predicted, target).item())
    return float(np.mean(losses))


_identity_losses: dict[str, float] = {}  # one entry: the stage's adapter and identity runs share it


def identity_validation_loss(components: LdmComponents, means: torch.Tensor, text: torch.Tensor, seed: int) -> float:
    """``validation_loss`` of the identity adapter, computed once per UNet, clips, texts and seed: the adapter
    run reports it as its baseline and the identity run as its own loss (~10 s of the cpu profile each)."""
    key = tensor_digest(*components.unet.state_dict().values(), means, text,
                        extra=json.dumps([seed, dict(components.scheduler_config)], sort_keys=True, default=str))
    if key not in _identity_losses:
        _identity_losses.clear()
        _identity_losses[key] = validation_loss(components, EmbeddingAdapter(components.condition_dim), means, text, seed)
    return _identity_losses[key]


def finetune_adapter(profile: Profile, manifest: pd.DataFrame, embed_text: TextEmbedder, ldm_dir: Path, out_dir: Path,
                     *, train_adapter: bool = True, base_version: str = "", clap_version: str = "",
                     unconditional: torch.Tensor | None = None) -> dict:
    """Fine-tune on the target classes' clips; writes the adapter (+ UNet if trained) and metrics.json.

    ``unconditional``: what condition dropout drops to when the UNet trains (the guidance's
    "no condition"; None = the zero vector of models trained here)."""
    out_dir = Path(out_dir)
    targets = manifest[manifest["is_target"].astype(str).str.lower() == "true"].rename(columns={"class": "class_"})
    train, val = targets[targets["split"] == "train"].reset_index(drop=True), targets[targets["split"] == "val"].reset_index(drop=True)
    if train.empty or val.empty:
        raise ValueError("fine-tuning needs target-class clips in both the train and val splits")
    train_unet = profile.finetune.train == "adapter+unet"
    # The training code is part of the key: a checkpoint of older code is not resumed as if new.
    key = json_hash([profile.finetune.model_dump(), profile.seed, train_adapter, base_version, clap_version,
                     sorted(train["content_hash"]), source_version(finetune_adapter)])[:12]
    finished = (out_dir / METRICS).is_file() and json.loads((out_dir / METRICS).read_text()).get("fingerprint") == key
    if finished and not retrain_requested():
        return json.loads((out_dir / METRICS).read_text())

    pl.seed_everything(profile.seed, workers=True)
    components = LdmComponents.load(Path(ldm_dir))
    adapter = EmbeddingAdapter(components.condition_dim)
    index, texts = _clip_texts(train, profile)
    steps = profile.finetune.steps if (train_adapter or train_unet) else 0
    data = None  # the identity ablation with nothing to train needs no training latents (they cost a VAE pass)
    if steps:
        means, stds, anchors = _latents(components, train, profile)
        text = torch.from_numpy(np.asarray(embed_text(texts), dtype=np.float32))
        pick = torch.tensor(index)
        if profile.finetune.crop_frames % unet_downsampling(components.unet):
            raise ValueError(f"finetune.crop_frames={profile.finetune.crop_frames} must be a multiple of the UNet's "
                             f"time downsampling ({unet_downsampling(components.unet)})")
        data = InMemoryDataModule(LatentConditions(means[pick], stds[pick], text, profile.finetune.crop_frames,
                                                   anchors[index]),
                                  profile.finetune.batch_size,
                                  profile.trainer.num_workers, profile.seed)
    module = AdapterModule(components, adapter, profile, train_adapter=train_adapter, train_unet=train_unet,
                           unconditional=unconditional)
    name = "finetune-adapter" if train_adapter else "finetune-identity"
    run, _ = fit(profile, name, module, data, steps, fresh_if_retraining(out_dir.parent / "training" / name / key),
                 precision=profile.finetune.precision)

    adapter.eval()
    val_means, _, _ = _latents(components, val, profile)
    val_text = torch.from_numpy(np.asarray(embed_text([profile.class_config(c).prompts[0] for c in val["class_"]]), dtype=np.float32))
    prompts = {c.name: c.prompts[0] for c in profile.classes}
    raw = torch.from_numpy(np.asarray(embed_text(list(prompts.values())), dtype=np.float32))
    with torch.no_grad():
        shift = F.cosine_similarity(raw, adapter(raw), dim=-1).tolist()
    # nothing trained: the adapter is the identity and the UNet the base, so its loss is the baseline's
    val_loss = (validation_loss(components, adapter, val_means, val_text, profile.seed) if steps
                else identity_validation_loss(components, val_means, val_text, profile.seed))  # fmt: skip
    metrics = {
        **run,
        "fingerprint": key,
        "trained": "+".join(p for p, on in (("adapter", train_adapter), ("unet", train_unet)) if on) or "nothing",
        "adapter_parameters": adapter.num_parameters(),
        "val_loss": val_loss,
        "val_loss_identity": identity_validation_loss(components, val_means, val_text, profile.seed),
        "prompt_cosine_raw_vs_adapted": dict(zip(prompts, shift)),
        "base_model_version": base_version,
        "clap_version": clap_version,
        "train_pairs": len(texts),
    }
    with staged_dir(out_dir) as staging:  # a kill leaves the old adapter folder or the new one, whole
        adapter.save(staging, {"base_model_version": base_version, "clap_version": clap_version, "trained": metrics["trained"]})
        if train_unet:
            module.ema_unet().save_pretrained(staging / "unet", safe_serialization=True)
        write_text_atomic(staging / METRICS, json.dumps(metrics, indent=2, sort_keys=True))
    return metrics
