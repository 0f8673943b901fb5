"""What the fine-tune trains: the generator (adapter, UNet or its LoRA), the vocoder, the CLAP audio tower."""

from __future__ import annotations

import copy
import logging
from pathlib import Path

import pandas as pd
import pytorch_lightning as pl
import torch
from diffusers import DDPMScheduler
from peft import LoraConfig

from foley_core.clap.adapt import adapt_audio_tower, class_prompt_embeddings, zero_shot_accuracy
from foley_core.clap.encoder import TrainedClapEncoder
from foley_core.core.config import Profile
from foley_core.core.fsutil import staged_dir
from foley_core.core.layout import layout
from foley_core.data.ingest import load_manifest
from foley_core.evaluation import distance_row, make_profile_embedder
from foley_core.generation.adapter import EmbeddingAdapter
from foley_core.generation.finetune import _clip_texts, _latents
from foley_core.generation.pipeline import FoleyPipeline, place
from foley_core.generation.submission import generate_selected
from foley_core.ldm.data import InMemoryDataModule, LatentConditions, VocoderSegments, compute_log_mels, load_waveforms
from foley_core.ldm.mel import pad_frames
from foley_core.ldm.models import unet_downsampling, vae_downsampling
from foley_core.ldm.modules import UnetModule, VocoderModule
from foley_core.ldm.training import fit
from foley_core.transfer.recordings import SourceData

log = logging.getLogger(__name__)

# LoRA (transfer.unet_lora_rank) wraps these layers of the UNet where they exist: AudioLDM's
# attention projections, and every UNet's resnet convolutions, time and condition projections
LORA_TARGETS = ["to_q", "to_k", "to_v", "to_out.0", "conv1", "conv2", "time_emb_proj", "class_embedding"]
KEPT_VOCODER = "base-vocoder"  # models/base-vocoder/: the fine-tuned model with the base's vocoder (choose_vocoders)


# ---------------------------------------------------------------- generator fine-tuning
class TransferModule(pl.LightningModule):
    """The UNet's denoising loss on ``adapter(text)``; the UNet trains too unless ``train_unet`` is off."""

    def __init__(self, unet_module, adapter, *, train_unet: bool, learning_rate: float, adapter_learning_rate: float):
        super().__init__()
        self.inner, self.adapter, self.train_unet = unet_module, adapter, train_unet
        self.learning_rate, self.adapter_learning_rate = learning_rate, adapter_learning_rate
        if not train_unet:  # (a LoRA-wrapped UNet arrives with only its LoRA factors trainable)
            self.inner.unet.requires_grad_(False)
        self.adapter.requires_grad_(True)

    def training_step(self, batch, batch_index):
        means, stds, text = batch
        loss, _ = self.inner.compute_loss((means, stds, self.adapter(text)))
        self.log("transfer/loss", loss)
        return loss

    def optimizer_step(self, *args, **kwargs) -> None:
        super().optimizer_step(*args, **kwargs)
        if self.train_unet:
            self.inner.update_ema()

    def on_fit_start(self) -> None:
        self.inner.ema.to(self.device)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["ema"] = self.inner.ema.state_dict()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.inner.ema.load_state_dict(checkpoint["ema"])

    def configure_optimizers(self):
        groups = [{"params": list(self.adapter.parameters()), "lr": self.adapter_learning_rate}]
        if self.train_unet:
            groups.append({"params": [p for p in self.inner.unet.parameters() if p.requires_grad], "lr": self.learning_rate})
        return torch.optim.AdamW(groups, weight_decay=0.0)


def finetune_generator(profile: Profile, base, train: pd.DataFrame, train_what: str, work_dir: Path) -> tuple[dict, object, object]:
    """Fine-tune ``base``'s adapter (and UNet) on ``train``; returns (run metrics, adapter, unet or None)."""
    cfg = profile.transfer
    pl.seed_everything(profile.seed, workers=True)
    components = base.ldm
    train_unet = train_what in ("unet", "all")
    adapter = EmbeddingAdapter(base.adapter.dim)
    adapter.load_state_dict(base.adapter.state_dict())
    unet = type(components.unet).from_config(components.unet.config)
    unet.load_state_dict(components.unet.state_dict())
    unet.train().requires_grad_(train_unet)
    if train_unet and cfg.unet_lora_rank:
        # the UNet's linear and conv layers; only the low-rank factors train (the rest is frozen by add_adapter)
        unet.add_adapter(LoraConfig(r=cfg.unet_lora_rank, lora_alpha=cfg.unet_lora_rank, target_modules=LORA_TARGETS,
                                    init_lora_weights="gaussian"))
    rows = train.rename(columns={"class": "class_"})  # the main fine-tune's column name
    index, texts = _clip_texts(rows, profile)
    means, stds, _ = _latents(components, rows, profile)
    # Bounded text batches (finetune.text_batch_size): an AudioLDM conditioner's RoBERTa pads to 512 tokens
    base.conditioner.text_batch_size = profile.finetune.text_batch_size
    with torch.no_grad():
        text = base.conditioner.encode(texts).float().cpu()
    pick = torch.tensor(index)
    dataset = LatentConditions(means[pick], stds[pick], text)
    data = InMemoryDataModule(dataset, min(cfg.batch_size, len(dataset)), profile.trainer.num_workers, profile.seed)
    inner = UnetModule(unet, DDPMScheduler.from_config(components.scheduler_config), profile.ldm.unet,
                       condition_dropout=cfg.condition_dropout, unconditional=base.unconditional_embedding().float().cpu())
    module = TransferModule(inner, adapter, train_unet=train_unet, learning_rate=cfg.learning_rate,
                            adapter_learning_rate=cfg.adapter_learning_rate)
    run, _ = fit(profile, f"transfer-{train_what}", module, data, cfg.steps, work_dir)
    adapter.eval().requires_grad_(False)
    trained = sum(p.numel() for p in unet.parameters() if p.requires_grad)
    run = {**run, "train_pairs": len(texts), "unet_trained_parameters": trained}
    if not train_unet:
        return run, adapter, None
    if cfg.unet_lora_rank:  # the EMA weights, then the LoRA factors merged in: a plain UNet again
        inner.ema.copy_to(unet.parameters())
        unet.fuse_lora()
        unet.unload_lora()
        return run, adapter, unet.eval().requires_grad_(False)
    return run, adapter, inner.ema_unet()


def finetune_vocoder(profile: Profile, base, train: pd.DataFrame, work_dir: Path, out_dir: Path) -> dict:
    """The vocoder, from the base's weights, on the training recordings (``--train all``).

    It learns from each clip's log-mel *and* from that log-mel after a round trip through the
    base VAE, both against the real waveform. Generated audio reaches the vocoder through the
    VAE decoder, never as an exact log-mel; a vocoder fine-tuned on exact log-mels alone
    rebuilt held-out recordings far better (log-mel FAD 9,390 -> 401 on Footstep) yet made
    generated clips worse (8,851 -> 29,197), because the decoder's output is not what it learnt."""
    cfg = profile.transfer
    ldm = base.ldm
    # its own steps at a constant rate (the main vocoder's schedule is sized to the main vocoder's steps)
    vocoder_cfg = profile.ldm.vocoder.model_copy(update={"learning_rate": cfg.vocoder_learning_rate, "lr_schedule": "constant"})
    pl.seed_everything(profile.seed, workers=True)
    waves = load_waveforms(train, ldm.audio)
    mels = compute_log_mels(waves, ldm.front_end)
    with torch.no_grad():
        frames = mels.shape[-2]
        images = ldm.normalisation.normalise(pad_frames(mels, vae_downsampling(ldm.vae) * unet_downsampling(ldm.unet)))
        decoded = torch.cat([ldm.vae.decode(ldm.vae.encode(images[i : i + 32]).latent_dist.mean).sample
                             for i in range(0, len(images), 32)])
        through_vae = ldm.normalisation.denormalise(decoded)[..., :frames, :]
    segments = VocoderSegments(torch.cat([mels, through_vae]), torch.cat([waves, waves]), vocoder_cfg.segment_frames,
                               ldm.audio.hop_length)
    data = InMemoryDataModule(segments, min(vocoder_cfg.batch_size, len(segments)), profile.trainer.num_workers, profile.seed)
    module = VocoderModule(copy.deepcopy(ldm.vocoder).float().train().requires_grad_(True), ldm.front_end, vocoder_cfg)
    run, _ = fit(profile, "transfer-vocoder", module, data, cfg.vocoder_steps, work_dir)
    vocoder = module.vocoder.cpu().eval()
    with staged_dir(out_dir) as staging:
        vocoder.save_pretrained(staging, safe_serialization=True)
    return run



def keeps_finetuned_vocoder(finetuned: dict, base: dict) -> bool:
    """The fine-tuned vocoder serves a class only when its clips are no further from the class's
    training recordings than the base vocoder's, by FAD *and* KAD (a NaN keeps the base)."""
    return all(finetuned[k] <= base[k] for k in ("fad", "kad"))


def choose_vocoders(profile: Profile, finetuned_dir: Path, kept_dir: Path, data: SourceData) -> dict:
    """Per held class, the vocoder it generates with: fine-tuned or the base's.

    A vocoder fine-tuned on every class at once learns the clean silence of studio recordings
    (Footstep, GunShot, Keyboard) and renders the street-noise floor of field recordings
    (UrbanSound8K's dog barks and engines) as near-silence: on real-foley it took DogBark's
    log-mel FAD from 5,793 to 22,398 while cutting GunShot's from 9,362 to 659 (docs/finetune.md).
    Both vocoders generate each class (same seeds, same selection) and are compared with the
    class's *training* recordings, so the held-out recordings stay unseen until the gate."""
    embedder = make_profile_embedder(profile)
    n = profile.transfer.eval_clips_per_class
    pipelines = {who: place(FoleyPipeline.from_pretrained(folder, profile), profile.generation)
                 for who, folder in (("finetuned", finetuned_dir), ("base", kept_dir))}
    choice = {}
    for label in data.classes:
        rows = data.train[data.train["class"] == label]
        reference = embedder.embed_files(list(rows["abs_path"]))
        distances = {}
        for who, pipeline in pipelines.items():
            gen = generate_selected(pipeline, profile, label, n, stage=f"vocoder choice: {label} ({who} vocoder)")
            distances[who] = distance_row(embedder.embed(list(gen.selected), gen.sample_rate), reference)
        keep = keeps_finetuned_vocoder(distances["finetuned"], distances["base"])
        choice[label] = {"vocoder": "finetuned" if keep else "base", "to_training_recordings": distances}
        log.info(f"{label}: the {choice[label]['vocoder']} vocoder (log-mel FAD to the training recordings "
                 f"{distances['finetuned']['fad']:.0f} fine-tuned, {distances['base']['fad']:.0f} base)")
    return choice


def adapt_clap(profile: Profile, base_clap: Path, data: SourceData, out_dir: Path) -> dict:
    """Fine-tune the CLAP's audio tower; keep it only if it does not lose what it knew."""
    cfg = profile.transfer
    classes = profile.class_names
    own = load_manifest(layout(profile).dataset, classes)
    replay, procedural_val = own[own["split"] == "train"], own[own["split"] == "val"]

    def scores(encoder) -> dict:
        prompts = class_prompt_embeddings(encoder, profile, classes)
        return {"recordings": zero_shot_accuracy(encoder, list(data.val["abs_path"]), list(data.val["class"]), prompts, classes),
                "procedural": zero_shot_accuracy(encoder, list(procedural_val["abs_path"]), list(procedural_val["class"]),
                                                 prompts, classes)}

    before = scores(TrainedClapEncoder.load(base_clap))
    run = adapt_audio_tower(profile, base_clap, data.train, replay, classes, out_dir, steps=cfg.clap_steps,
                            learning_rate=cfg.clap_learning_rate, batch_size=cfg.clap_batch_size)
    after = scores(TrainedClapEncoder.load(out_dir))
    drop = before["procedural"]["accuracy"] - after["procedural"]["accuracy"]
    kept = after["recordings"]["accuracy"] >= before["recordings"]["accuracy"] and not drop > cfg.clap_max_drop
    return {"kept": bool(kept), "before": before, "after": after, "run": run,
            "reason": "" if kept else "the adapted CLAP did not classify the recordings better or lost more than "
                                      f"{cfg.clap_max_drop} on the profile's validation clips"}


