"""Fine-tune the accepted model on a user's own recordings: the paper's transfer step.

The paper pre-trains on broad data, then fine-tunes on the DCASE development set. Here the
"broad" model is the profile's accepted one (``pipelines/latest``) and the development set
is a folder of the user's recordings (``<Class>/<file>``, any subset of the classes, mixed
formats). ``finetune_on_recordings`` runs the whole step:

1. **Ingest** the folder (bad files quarantined, as everywhere) and split it *by recording*
   (``foley_core.data.recordings``): held-out clips are never slices of a training recording.
2. **CLAP**: its audio tower learns the recordings (``foley_core.clap.adapt``), text side
   frozen, so selection ranks real candidates. Kept only if it classifies the held-out
   recordings at least as well as before and the profile's own validation clips no more than
   ``transfer.clap_max_drop`` worse.
3. **Generator**: the adapter (``--train adapter``), or adapter + UNet (``unet``), or adapter +
   UNet + vocoder (``all``), on the training recordings' latents, each paired with the text
   embeddings of its caption and its class's prompts. Condition dropout uses the vector the
   sampler guides against (``FoleyPipeline.unconditional_embedding``).
   The UNet trains whole, or as LoRA factors merged back after training (``transfer.unet_lora_rank``).
   With ``all``, each held class then keeps the fine-tuned vocoder only where it brings the
   class's clips closer to its *training* recordings, else the base's (``choose_vocoders``).
4. **Gate**: the base and the fine-tuned model generate the held classes with the same seeds
   and the profile's per-class selection; log-mel FAD and KAD to the held-out recordings. The
   rule is the main pipeline's (``evaluation.regression``, NaN refused) with no margin: the
   fine-tuned model must not be worse than the base on either mean.
5. **Promotion** (only past the gate): a new version in ``pipelines/`` that generates the held
   classes with the fine-tuned model and every other class exactly as the base did (its
   folder carries the base as ``models/base/``), with the lineage in ``pipeline.json``:
   base version, the recordings' data version and folder, the settings. ``latest`` moves to
   it; ``foley generate`` and ``foley export-dcase`` use it.

Everything is written under ``artifacts/<profile>/transfer/<name>/``; a finished fine-tune of
the same base, data, settings and code is reused (``foley run --force`` semantics: set
``FOLEY_RETRAIN=1`` to redo it).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pytorch_lightning as pl
import torch
from diffusers import DDPMScheduler
from peft import LoraConfig
from transformers import SpeechT5HifiGan

from foley_core.clap.adapt import adapt_audio_tower, class_prompt_embeddings, zero_shot_accuracy
from foley_core.clap.encoder import TrainedClapEncoder
from foley_core.core.code_version import source_version
from foley_core.core.config import Profile
from foley_core.core.env import retrain_requested
from foley_core.core.fsutil import staged_dir, write_text_atomic
from foley_core.core.hashing import folder_hash, json_hash, sha256_hex
from foley_core.core.layout import CLASS_MODELS, PIPELINE_CONFIG, TRANSFER_RECORD, layout
from foley_core.data.ingest import ingest, load_manifest
from foley_core.data.own import snapshot_recordings
from foley_core.data.recordings import split_by_recording
from foley_core.data.sources import discover_source, source_from_path
from foley_core.evaluation import class_consistency, consistent_classes, distance_row, make_profile_embedder
from foley_core.generation.adapter import EmbeddingAdapter
from foley_core.generation.finetune import _clip_texts, _latents
from foley_core.generation.pipeline import FoleyPipeline, place
from foley_core.generation.store import save_class_generation
from foley_core.generation.submission import generate_selected, pipeline_for_class
from foley_core.ldm.data import InMemoryDataModule, LatentConditions, VocoderSegments, compute_log_mels, load_waveforms
from foley_core.ldm.mel import pad_frames
from foley_core.ldm.models import unet_downsampling, vae_downsampling
from foley_core.ldm.modules import UnetModule, VocoderModule
from foley_core.ldm.training import fit, fresh_if_retraining
from foley_core.registry import base_pipeline_dir, promote_finetuned, regression

log = logging.getLogger(__name__)

TRAIN_CHOICES = ("adapter", "unet", "all")
# LoRA (transfer.unet_lora_rank) wraps these layers of the UNet where they exist: AudioLDM's
# attention projections, and every UNet's resnet convolutions, time and condition projections
LORA_TARGETS = ["to_q", "to_k", "to_v", "to_out.0", "conv1", "conv2", "time_emb_proj", "class_embedding"]
KEPT_VOCODER = "base-vocoder"  # models/base-vocoder/: the fine-tuned model with the base's vocoder (choose_vocoders)
RESULT = TRANSFER_RECORD  # the fine-tune's record (named in layout)


class GateRefused(RuntimeError):
    """The fine-tuned model did not beat the base on the held-out recordings: nothing was promoted."""


@dataclass
class SourceData:
    name: str
    root: Path
    manifest: pd.DataFrame  # target-class clips, split by recording
    classes: list[str]  # the profile's classes the recordings hold (with train and held-out clips)
    version: str  # content of the clips and their split
    quarantined: list = field(default_factory=list)
    data_version: str = ""  # the recordings' DVC version (or content hash): foley_core.data.own

    @property
    def train(self) -> pd.DataFrame:
        return self.manifest[self.manifest["split"] == "train"].reset_index(drop=True)

    @property
    def val(self) -> pd.DataFrame:
        return self.manifest[self.manifest["split"] == "val"].reset_index(drop=True)


# ---------------------------------------------------------------- data
def ingest_recordings(profile: Profile, source: Path) -> SourceData:
    """Ingest ``source`` into ``artifacts/<profile>/ingest/<name>/`` and split it by recording."""
    source = Path(source)
    if not source.is_dir():
        raise FileNotFoundError(f"{source}: expected a folder of recordings in the <Class>/<file> layout")
    name = source.resolve().name
    snapshot = snapshot_recordings(profile, source)  # under DVC: mirrored into data/own/<name>, tracked
    source = snapshot.path
    found = discover_source(source_from_path(source), profile)
    out = layout(profile).ingest(name)
    result = ingest(found.files, found.rejected, out, profile)
    manifest = load_manifest(out)
    manifest = manifest[manifest["class"].isin(profile.class_names)]
    if manifest.empty:
        raise ValueError(f"{source} holds no usable recording of the profile's classes "
                         f"({', '.join(profile.class_names)}); {len(result.quarantined)} file(s) quarantined")
    manifest = split_by_recording(manifest, profile.transfer.val_fraction, root=source)
    splits = manifest.groupby("class")["split"].agg(set)
    classes = [c for c in profile.class_names if c in splits and {"train", "val"} <= splits[c]]
    skipped = sorted(set(splits.index) - set(classes))
    if skipped:
        log.warning(f"{', '.join(skipped)}: one recording only, so nothing to hold out; not fine-tuned on")
    if not classes:
        raise ValueError(f"{source}: no class has two or more recordings, so none can be held out to check the "
                         "fine-tune against (files named <name>-1.wav, <name>-2.wav count as one recording)")
    manifest = manifest[manifest["class"].isin(classes)].reset_index(drop=True)
    clips = sorted(zip(manifest["content_hash"], manifest["split"], manifest["caption"]))  # what the fine-tune learns from
    version = json_hash(clips, sort_keys=False)[:16]
    return SourceData(name, source.resolve(), manifest, classes, version, list(result.quarantined), snapshot.version)


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
    means, stds = _latents(components, rows, profile)
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


# ---------------------------------------------------------------- the whole step
def _fingerprint(profile: Profile, base_version: str, data: SourceData, train_what: str) -> str:
    code = source_version(finetune_on_recordings)
    settings = [profile.transfer.model_dump(mode="json", exclude={"source"}), profile.seed, train_what,
                base_version, data.version, code]
    return json_hash(settings)[:16]


def _base_model(profile: Profile) -> tuple[Path, dict]:
    """The accepted base model (never a fine-tune: fine-tunes do not stack) and its config."""
    folder = base_pipeline_dir(profile)
    config = json.loads((folder / PIPELINE_CONFIG).read_text())
    if config.get("transfer"):  # a registry from before ``base`` was recorded: latest was a fine-tune
        base = folder.parent / config["transfer"]["base_model_version"]
        if base.is_dir():
            return base, json.loads((base / PIPELINE_CONFIG).read_text())
    return folder, config


def finetune_on_recordings(profile: Profile, source: Path, train_what: str | None = None) -> dict:
    """Ingest, fine-tune, gate and (if it passes) promote; returns the result record.

    Raises ``GateRefused`` (after writing the record) when the fine-tuned model is not better."""
    train_what = train_what or profile.transfer.train
    if train_what not in TRAIN_CHOICES:
        raise ValueError(f"--train must be one of {', '.join(TRAIN_CHOICES)}, got {train_what!r}")
    started = time.perf_counter()
    data = ingest_recordings(profile, source)
    base_dir, base_config = _base_model(profile)
    base_version = base_config.get("model_version", base_dir.name)
    work = layout(profile).transfer(data.name)
    key = _fingerprint(profile, base_version, data, train_what)
    candidate_dir = work / "model"
    previous = _read(work / RESULT)
    if previous and previous.get("fingerprint") == key and candidate_dir.is_dir() and not retrain_requested():
        record = previous
        log.info(f"fine-tune of {base_version} on {data.name} is up to date")
    else:
        base = place(FoleyPipeline.from_pretrained(base_dir, profile), profile.generation)
        record = _train_candidate(profile, base, base_dir, data, train_what, work, candidate_dir, key)
        record.update(fingerprint=key, base_model_version=base_version, source=str(data.root), source_name=data.name,
                      source_data_version=data.version, train=train_what, classes=data.classes,
                      source_dvc_version=data.data_version,
                      settings=profile.transfer.model_dump(mode="json"),
                      split={c: {s: int(n) for s, n in g["split"].value_counts().items()}
                             for c, g in data.manifest.groupby("class")})
        record["gate"] = gate(profile, base_dir, candidate_dir, data, work)
        record["model_version"] = _version(candidate_dir, base_version)
        record["seconds"] = round(time.perf_counter() - started, 1)
        write_text_atomic(work / RESULT, json.dumps(record, indent=2, sort_keys=True))
    record["quarantined"] = [{"path": q.path, "reason": q.reason} for q in data.quarantined]
    if record["gate"]["problems"]:
        raise GateRefused(f"fine-tuned model {record['model_version']} not promoted: "
                          f"{'; '.join(record['gate']['problems'])}; {base_version} stays in use")
    record["promoted_to"] = str(promote_finetuned(profile, base_dir, base_config, candidate_dir, record))
    return record


def _read(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _version(candidate_dir: Path, base_version: str) -> str:

    return "ft-" + sha256_hex(folder_hash(candidate_dir, "*.safetensors") + base_version)[:16]


def _train_candidate(profile: Profile, base, base_dir: Path, data: SourceData, train_what: str, work: Path,
                     candidate_dir: Path, key: str) -> dict:
    """Adapt the CLAP, fine-tune the generator, save the candidate pipeline; returns the training record."""
    record: dict = {}
    # Checkpoints are resumed only by a run of the same base, data, settings and code: an
    # interrupted fine-tune continues, a different one starts afresh.
    training = fresh_if_retraining(work / "training" / key)
    for stale in (work / "training").glob("*"):
        if stale.name != key and stale.is_dir():
            shutil.rmtree(stale, ignore_errors=True)
    clap_dir = work / "clap"
    if base.clap_source == "trained":
        record["clap"] = adapt_clap(profile, base_dir / "clap", data, clap_dir)
        clap = TrainedClapEncoder.load(clap_dir if record["clap"]["kept"] else base_dir / "clap")
    else:  # a LAION checkpoint was trained on millions of real clips: it already knows real sounds
        record["clap"] = {"kept": False, "reason": f"the {base.clap_source} CLAP is used as it is"}
        clap = base.clap
    run, adapter, unet = finetune_generator(profile, base, data.train, train_what, training)
    record["generator"] = run
    ldm = base.ldm
    if unet is not None:
        ldm = dataclasses.replace(ldm, unet=unet)
    if train_what == "all" and base.ldm.vocoder is not None:
        vocoder_dir = work / "vocoder"
        record["vocoder"] = {k: v for k, v in finetune_vocoder(profile, base, data.train, training / "vocoder",
                                                               vocoder_dir).items() if not isinstance(v, (bytes, dict))}
        ldm = dataclasses.replace(ldm, vocoder=SpeechT5HifiGan.from_pretrained(vocoder_dir, use_safetensors=True))
    def pipeline(with_ldm):
        return FoleyPipeline(clap, adapter, with_ldm, sampler=base.sampler, steps=base.steps, clap_source=base.clap_source,
                             conditioner=base.conditioner, convention=base.convention)

    with staged_dir(candidate_dir) as staging:
        clap_folder = (clap_dir if record["clap"].get("kept") else base_dir / "clap") if base.clap_source == "trained" else None
        pipeline(ldm).save_pretrained(staging, clap_folder=clap_folder)
        routes: dict[str, str | None] = {label: None for label in data.classes}  # None: the folder's own model
        if "vocoder" in record:
            kept = staging / CLASS_MODELS / KEPT_VOCODER
            pipeline(dataclasses.replace(ldm, vocoder=base.ldm.vocoder)).save_pretrained(kept, clap_folder=clap_folder)
            record["vocoder"]["choice"] = choose_vocoders(profile, staging, kept, data)
            routes.update({label: KEPT_VOCODER for label, row in record["vocoder"]["choice"].items()
                           if row["vocoder"] == "base"})
            if KEPT_VOCODER not in routes.values():
                shutil.rmtree(staging / CLASS_MODELS)
        config = json.loads((staging / PIPELINE_CONFIG).read_text())
        config["class_models"] = routes  # read by pipeline_for_class, in the gate and after promotion
        write_text_atomic(staging / PIPELINE_CONFIG, json.dumps(config, indent=2, sort_keys=True))
    return record


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


# ---------------------------------------------------------------- the gate
def gate(profile: Profile, base_dir: Path, candidate_dir: Path, data: SourceData, work: Path) -> dict:
    """Base vs fine-tuned on the held-out recordings of each held class (same seeds, same selection)."""
    embedder = make_profile_embedder(profile)
    references = {c: embedder.embed_files(list(rows["abs_path"])) for c, rows in data.val.groupby("class")}
    n = profile.transfer.eval_clips_per_class
    result: dict = {"embedder": embedder.name, "reference": f"held-out recordings of {data.root} (split by recording)",
                    "clips_per_class": n, "reference_clips": {c: int(n) for c, n in data.val["class"].value_counts().items()}}
    generated: dict[str, dict[str, np.ndarray]] = {}
    for who, folder in (("base", base_dir), ("finetuned", candidate_dir)):
        default = place(FoleyPipeline.from_pretrained(folder, profile), profile.generation)
        loaded: dict = {}
        generated[who] = {}
        for label in data.classes:  # each class with the model its version routes it to
            pipeline = pipeline_for_class(default, folder, profile, label, loaded)
            gen = generate_selected(pipeline, profile, label, n, stage=f"gate: {label} ({who})")
            save_class_generation(gen, work / "gate" / who / label)
            generated[who][label] = embedder.embed(list(gen.selected), gen.sample_rate)
        per_class = {c: distance_row(generated[who][c], references[c]) for c in data.classes}
        consistency = class_consistency(generated[who], references)
        result[who] = {"per_class": per_class,
                       "mean": {k: float(np.mean([row[k] for row in per_class.values()])) for k in ("fad", "kad")},
                       "consistent_classes": consistent_classes(consistency),
                       "class_consistency_fad": consistency.to_dict(orient="index")}
    result["problems"] = regression(result["finetuned"]["mean"], result["base"]["mean"], margin=0.0)  # strictly no worse
    result["better_classes"] = {k: [c for c in data.classes if result["finetuned"]["per_class"][c][k] < result["base"]["per_class"][c][k]]
                                for k in ("fad", "kad")}
    return result


# ---------------------------------------------------------------- promotion
def summary_rows(record: dict) -> list[dict]:
    """One row per held class: FAD / KAD of base and fine-tuned clips to the held-out recordings."""
    gate_ = record["gate"]
    choice = (record.get("vocoder") or {}).get("choice", {})
    rows = []
    for label in record["classes"]:
        b, f = gate_["base"]["per_class"][label], gate_["finetuned"]["per_class"][label]
        rows.append({"class": label, "fad_base": round(b["fad"], 1), "fad_finetuned": round(f["fad"], 1),
                     "kad_base": round(b["kad"], 4), "kad_finetuned": round(f["kad"], 4),
                     "consistent_base": label in gate_["base"]["consistent_classes"],
                     "consistent_finetuned": label in gate_["finetuned"]["consistent_classes"],
                     "vocoder": choice.get(label, {}).get("vocoder", "base")})
    return rows

