"""The pipeline's stages as plain functions: one per Dagster asset, no Dagster inside.

Each stage reads its inputs where ``foley_core.core.layout`` says they are, writes its outputs
there, and returns a ``StageResult``: the content version of what it wrote (equal content,
equal version), where it wrote it, and metadata for the UI (plain values; ``markdown`` holds
tables and pictures). The Dagster layer (``orchestration/assets``) is one call per asset.
"""

from __future__ import annotations

import base64
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf

from foley_core import registry
from foley_core.clap import EmbeddingCache, evaluate_clap, load_clap, load_paraphrases, train_clap
from foley_core.clap.cache import cached_audio_embeddings, cached_text_embedder
from foley_core.core.config import Profile
from foley_core.core.fsutil import staged_dir, write_text_atomic
from foley_core.core.hashing import folder_hash, json_hash, sha256_hex
from foley_core.core.layout import VARIANTS, layout
from foley_core.core.plots import spectrogram_png
from foley_core.data.ingest import QUARANTINE, ingest_class, load_manifest, manifest_version
from foley_core.data.own import recordings_source, snapshot_recordings
from foley_core.data.raw import snapshot_raw_data
from foley_core.data.recordings import recording_of, recordings_from_manifest
from foley_core.data.sources import discover_all, discover_source, source_from_path
from foley_core.evaluation import evaluate_generation, read_json
from foley_core.export import clip_name, validate_dcase, write_dcase_clip
from foley_core.generation.calibration import calibrate_class, selection_table
from foley_core.generation.conditioning import load_conditioner, pretrained_audioldm_source
from foley_core.generation.finetune import finetune_adapter
from foley_core.generation.pipeline import assemble_pipeline, resolve_device
from foley_core.generation.prompts import choose, class_centroids, prompt_table, score_prompts
from foley_core.generation.store import load_clips, save_class_generation
from foley_core.generation.submission import generate_selected
from foley_core.ldm.importing import import_audioldm, imports_pretrained_as_is, recorded_version
from foley_core.ldm.training import train_ldm
from foley_core.run_outputs import write_run_outputs
from foley_core.transfer import RESULT, GateRefused, finetune_on_recordings, summary_rows


@dataclass
class StageResult:
    version: str
    path: Path
    metadata: dict = field(default_factory=dict)  # numbers, strings, JSON-able dicts
    markdown: dict[str, str] = field(default_factory=dict)  # tables and pictures for the UI


def content_version(folder: Path, pattern: str = "*.safetensors") -> str:
    """Version of a model or clip folder: the content hash of its matching files."""
    return folder_hash(folder, pattern)[:16]


def ldm_version(folder: Path) -> str:
    """The LDM's version: recorded at import (no re-hash of a GB of weights), else its content hash."""
    return recorded_version(folder) or content_version(folder)


def png_markdown(png: bytes, alt: str) -> str:
    return f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode()})"


def _scalars(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float, str)) and not isinstance(v, bool)}


# ---------------------------------------------------------------- data
def snapshot_data(profile: Profile) -> tuple[StageResult, list[str]]:
    """The raw data (created when synthetic, versioned by DVC or content hash) and its warnings."""
    snapshot = snapshot_raw_data(profile)
    metadata = {"data_version": snapshot.version, "versioned_by": snapshot.versioned_by,
                "audio_files": len(snapshot.discovery.files), "files_per_class": snapshot.files_per_class(),
                "rejected_at_discovery": snapshot.rejected_per_reason(),
                "non_audio_files_ignored": len(snapshot.discovery.ignored)}
    return StageResult(snapshot.version, profile.resolve(profile.paths.data_dir), metadata), list(snapshot.warnings)


def ingest_dataset_class(profile: Profile, label: str) -> StageResult:
    """Normalised clips + manifest for one class; bad files quarantined with a reason."""
    root = layout(profile).dataset
    discovery = discover_all(profile, create_synthetic=False)
    result = ingest_class(label, [f for f in discovery.files if f.label == label],
                          [r for r in discovery.rejected if r.label == label], root, profile)
    manifest = load_manifest(root, [label])
    metadata = {"files_found": result.found, "clips": len(result.clips),
                "clips_per_split": dict(Counter(manifest["split"])),
                "seconds_of_audio": float(manifest["duration_s"].sum()) if len(manifest) else 0.0,
                "quarantined": len(result.quarantined),
                "quarantined_per_reason": dict(Counter(q.reason for q in result.quarantined))}
    markdown = {}
    if len(manifest):
        examples = [sf.read(p, dtype="float32")[0] for p in manifest["abs_path"].head(3)]
        markdown["spectrogram"] = png_markdown(
            spectrogram_png(examples, profile.audio.sample_rate, label, profile.audio.hop_length), label)
    return StageResult(manifest_version(root, label), root / label, metadata, markdown)


# ---------------------------------------------------------------- CLAP
def build_clap(profile: Profile) -> StageResult:
    """CLAP trained contrastively on the dataset, or a LAION checkpoint evaluated on it."""
    where = layout(profile)
    manifest = load_manifest(where.dataset)
    if profile.clap.source == "trained":
        metrics = train_clap(profile, manifest, where.clap, paraphrases=load_paraphrases())
    else:
        encoder = load_clap(profile)
        metrics = {**evaluate_clap(encoder, manifest[manifest["split"] == "val"], profile, load_paraphrases()),
                   "version": encoder.version}
    return StageResult(metrics["version"], where.clap, _scalars(metrics))


def embed_class(profile: Profile, label: str) -> StageResult:
    """CLAP audio embeddings of a class's clips and text embeddings of its captions and prompts."""
    where = layout(profile)
    encoder = load_clap(profile).to(resolve_device(profile.generation.device))
    manifest = load_manifest(where.dataset, [label])
    cache = EmbeddingCache(where.embeddings(label), encoder.version)
    audio = cache.update_audio(encoder, manifest)
    prompts = list(profile.class_config(label).prompts) if label in profile.class_names else []
    text = cache.update_text(encoder, list(manifest["caption"]) + prompts)
    version = json_hash([encoder.version, sorted(manifest["content_hash"]),
                         sorted(set(manifest["caption"]) | set(prompts))], sort_keys=False)[:16]
    return StageResult(version, where.embeddings(label), {
        "clap_version": encoder.version, "audio_computed": audio["computed"], "audio_reused": audio["reused"],
        "text_computed": text["computed"], "text_reused": text["reused"], "clips": len(manifest)})


# ---------------------------------------------------------------- LDM and adapter
def build_ldm(profile: Profile) -> StageResult:
    """VAE + UNet + vocoder trained on every clip (UNet conditioned on its CLAP audio embedding)."""
    where = layout(profile)
    named = {name: import_audioldm(profile.for_model(name), where.ldm_for(name)) for name in profile.named_models()}
    named_metadata = {f"model {name}": {"imported_from": m["source"], "version": m["version"],
                                        "classes": profile.classes_of(name)} for name, m in named.items()}
    if imports_pretrained_as_is(profile):  # an AudioLDM folder used as it is: validate and version, no corpus
        metrics = import_audioldm(profile, where.ldm)
        return StageResult(_with_named(metrics["version"], named), where.ldm, {
            "imported_from": metrics["source"], "content_hash": metrics["content_hash"],
            "parameters": metrics["parameters"], "latent_scale": metrics["latent_scale"],
            "converted_from_bin": metrics["converted_from_bin"], **named_metadata})
    manifest = load_manifest(where.dataset)
    clap_version = load_clap(profile).version
    metrics = train_ldm(profile, manifest, cached_audio_embeddings(profile, clap_version, manifest), where.ldm)
    metadata = {"clap_version": clap_version, "parameters": metrics.get("parameters", {}),
                "reconstruction": {k: v for k, v in metrics.get("reconstruction", {}).items()
                                   if not isinstance(v, (bytes, dict))}}
    for name in ("vae", "vocoder", "unet"):
        part = metrics.get(name, {})
        metadata.update({f"{name}/{k}": v for k, v in _scalars(part).items() if k != "fingerprint"})
    markdown = {}
    spectrogram = where.ldm / "reconstruction.png"
    if spectrogram.is_file():
        markdown["reconstruction_spectrograms"] = png_markdown(spectrogram.read_bytes(), "reconstruction")
    return StageResult(_with_named(content_version(where.ldm), named), where.ldm, {**metadata, **named_metadata},
                       markdown)


def _with_named(version: str, named: dict[str, dict]) -> str:
    """The LDM stage's version: the main model's, extended by the named models' (a model per class)."""
    if not named:
        return version
    return json_hash([version, sorted((name, m["version"]) for name, m in named.items())], sort_keys=False)[:16]


def finetune_adapters(profile: Profile) -> StageResult:
    """The paper's d x d adapter fine-tuned on the target classes, and the identity ablation."""
    where = layout(profile)
    runs, named = {}, {}
    for model in [None, *profile.named_models()]:  # one adapter per LDM, on the classes that LDM generates
        # the main LDM also serves free-text prompts: with every class routed elsewhere it learns from all
        classes = profile.classes_of(model) or profile.class_names
        manifest = load_manifest(where.dataset, classes)
        base = ldm_version(where.ldm_for(model))
        embed, conditioner_version, unconditional = conditioning_text_embedder(profile.for_model(model))
        for variant in VARIANTS:
            result = finetune_adapter(profile, manifest, embed, where.ldm_for(model), where.finetune(variant, model),
                                      train_adapter=variant == "adapter", base_version=base,
                                      clap_version=conditioner_version, unconditional=unconditional)
            if model is None:
                runs[variant], main_conditioner = result, conditioner_version
            elif variant == "adapter":
                named[f"model {model}"] = {"classes": classes, "val_loss_adapter": result["val_loss"],
                                           "val_loss_identity": result["val_loss_identity"]}
    adapter = runs["adapter"]
    return StageResult(content_version(where.finetune()), where.finetune(), {
        **named, "base_model_version": ldm_version(where.ldm), "conditioner_version": main_conditioner,
        "adapter_parameters": adapter["adapter_parameters"], "val_loss_adapter": adapter["val_loss"],
        "val_loss_identity": adapter["val_loss_identity"], "loss_first": adapter.get("loss_first"),
        "loss_final": adapter.get("loss_final"), "steps": adapter.get("steps"),
        "prompt_cosine_raw_vs_adapted": adapter["prompt_cosine_raw_vs_adapted"]})


def conditioning_text_embedder(profile: Profile):
    """(texts -> condition vectors, the conditioner's version, its unconditional vector): what the
    adapter is fine-tuned on, and what condition dropout drops to (the vector guidance uses).

    The text encoder the UNet was trained with: an imported AudioLDM's own (through
    ``load_conditioner``), else the profile's CLAP text tower, read from the embedding cache."""
    clap = load_clap(profile)
    conditioner = load_conditioner(profile, clap=clap)
    unconditional = conditioner.unconditional().float().cpu()
    if conditioner.kind == "clap":
        return cached_text_embedder(profile, clap), clap.version, unconditional
    return (lambda texts: conditioner.encode(texts).cpu().numpy()), conditioner.version, unconditional


def model_version(profile: Profile) -> str:
    """The trained model's version: the adapter folder's content and the LDM folder's (and, for an
    imported AudioLDM, its text encoder's: it lives in neither folder)."""
    where = layout(profile)
    version = content_version(where.finetune()) + "-" + ldm_version(where.ldm)
    if pretrained_audioldm_source(profile) is not None:
        version += "-" + load_conditioner(profile).version[:8]
    named = [ldm_version(where.ldm_for(name)) for name in profile.named_models()]
    if named:  # a model per class: the named LDMs are part of the model too
        version += "-" + json_hash(named, sort_keys=False)[:8]
    return version


# ---------------------------------------------------------------- generation
def choose_prompts(profile: Profile) -> StageResult:
    """The prompt search: each class's candidate prompts generate a few clips, scored against the
    class's training clips (``generation.prompts``); generation then uses each class's winner. With
    ``generation.calibrate_selection``, each class's selection settings are measured on the same
    training clips under the same CLAP (``generation.calibration``)."""
    where = layout(profile)
    clips, calibrate = profile.generation.prompt_search_clips, profile.generation.calibrate_selection
    record: dict = {"clips_per_prompt": clips, "calibrated_selection": calibrate, "model_version": model_version(profile),
                    "classes": {c.name: {"winner": c.prompts[0], "candidates": []} for c in profile.classes}}
    if clips or calibrate:
        pipelines: dict = {}
        for label in profile.class_names:
            model = profile.model_of(label)
            if model not in pipelines:
                pipelines[model] = assemble_pipeline(profile, "adapter", model)
        clap = pipelines[profile.model_of(profile.class_names[0])].scoring_clap()
        record["clap_version"] = clap.version
        train = load_manifest(where.dataset, profile.class_names)
        train = train[train["split"] == "train"]  # the held-out clips stay unseen until the evaluation
        embedded = cached_audio_embeddings(profile, clap.version, train)
        by_class = {label: np.stack([embedded[h] for h in rows["content_hash"]]) for label, rows in train.groupby("class")}
        centroids = class_centroids(by_class)
        for label in profile.class_names:
            entry = record["classes"][label]
            if clips and label not in centroids:  # no training clip to score against (a tiny or all-held-out class)
                entry["skipped"] = "no training clips to score the prompts against"
            elif clips:
                rows = score_prompts(pipelines[profile.model_of(label)], profile, label, centroids, clips)
                entry.update(winner=choose(rows), candidates=rows)
            if calibrate:
                cfg = profile.class_config(label)
                others = [by_class[c] for c in by_class if c != label]
                entry["selection"] = calibrate_class(
                    clap.encode_text([entry["winner"]]).numpy()[0], by_class.get(label, np.zeros((0, 1))),
                    np.concatenate(others) if others else np.zeros((0, 1)),
                    multi_target=cfg.clap_floor is None, candidates=cfg.candidates)
    write_text_atomic(where.prompts, json.dumps(record, indent=2))
    table = prompt_table(record)
    winners = {label: entry["winner"] for label, entry in record["classes"].items()}
    selection = {label: entry.get("selection") for label, entry in record["classes"].items()}
    note = "no search (generation.prompt_search_clips: 0): each class uses its first configured prompt"
    markdown = {"prompts": table.to_markdown(index=False) if len(table) else note}
    if calibrate:
        markdown["selection"] = selection_table(record).to_markdown(index=False)
    return StageResult(json_hash([winners, selection])[:16], where.prompts,
                       {"winners": winners, "clips_per_prompt": clips, "calibrated_selection": calibrate}, markdown)


def generate_candidates(profile: Profile, label: str) -> StageResult:
    """A class's clips with the fine-tuned adapter and with the identity ablation (same seeds)."""
    where = layout(profile)
    records = {}
    for variant in VARIANTS:
        gen = generate_selected(assemble_pipeline(profile, variant, profile.model_of(label)), profile, label,
                                profile.generation.clips_per_class, stage=f"generate {label} ({variant})")
        records[variant] = save_class_generation(gen, where.generation(variant, label))
    folder = where.generation("adapter", label)
    return StageResult(content_version(folder, "*.wav"), folder, {
        **records["adapter"]["summary"], "prompt": records["adapter"]["prompt"],
        "score_distribution": {v: r["summary"] for v, r in records.items()}})


def export_class(profile: Profile, label: str) -> StageResult:
    """A class's selected clips in the DCASE layout: 22,050 Hz, mono, 16-bit, exactly 4 s."""
    where = layout(profile)
    clips, rate = load_clips(where.generation("adapter", label) / "selected")
    out = where.dcase / label
    with staged_dir(out) as staging:  # the class folder holds exactly this selection, never a mix
        for i, clip in enumerate(clips):
            write_dcase_clip(staging / clip_name(i), clip, rate)
    problems = validate_dcase(where.dcase, classes=[label], clips_per_class=len(clips))
    return StageResult(content_version(out, "*.wav"), out, {"clips": len(clips), "format_problems": len(problems)},
                       {"spectrograms": png_markdown(spectrogram_png(list(clips[:3]), rate, label,
                                                                     profile.audio.hop_length), label)})


# ---------------------------------------------------------------- evaluation and promotion
def evaluate(profile: Profile) -> StageResult:
    """FAD/KAD per class, class consistency and the ablation (``foley_core.evaluation``)."""
    where = layout(profile)
    metrics = evaluate_generation(profile, model_version(profile))
    write_text_atomic(where.metrics, json.dumps(metrics, indent=2))
    metadata = {"mean_fad": metrics["mean"]["fad"], "mean_kad": metrics["mean"]["kad"],
                "consistent_classes": f"{len(metrics['consistent_classes'])}/{len(profile.class_names)}",
                "reference": metrics["reference"], "embedder": metrics["embedder"],
                "model_version": metrics["model_version"]}
    if metrics.get("official"):
        metadata["official_mean_fad"] = metrics["official"]["mean_fad"]
    markdown = {"ablation": pd.DataFrame(metrics["ablation"]).to_markdown(index=False),
                "clap_scores": pd.DataFrame(metrics["clap"]).to_markdown(index=False)}
    return StageResult(sha256_hex(where.metrics.read_bytes())[:16], where.metrics, metadata, markdown)


def promote_model(profile: Profile, metrics_path: Path) -> StageResult:
    """Promote the evaluated model if the gate passes (``registry.promote_base`` re-applies it);
    else keep the old one.

    The version is the accepted base model afterwards, so a refusal leaves it unchanged. What
    `foley generate` serves may be a fine-tune of it (``serving``): see ``foley_core.registry``."""
    where = layout(profile)
    metrics = read_json(metrics_path)
    if metrics is None:
        raise FileNotFoundError(f"no evaluation at {metrics_path}: materialise evaluation_metrics first")
    export_problems = validate_dcase(where.dcase, classes=profile.class_names,
                                     clips_per_class=profile.generation.clips_per_class)
    try:
        class_models = {name: assemble_pipeline(profile, "adapter", name) for name in profile.named_models()}
        folder = registry.promote_base(assemble_pipeline(profile, "adapter"), profile, metrics,
                                       export_problems=len(export_problems), class_models=class_models)
    except registry.PromotionRefused as refused:
        kept = (registry.accepted_metrics(profile) or {}).get("model_version", "none")
        return StageResult(kept, where.pipelines / registry.BASE, {
            "promoted": False, "model_version": kept, "rejected_model": metrics["model_version"],
            "serving": registry.describe_served(profile), "reasons": str(refused)})
    return StageResult(metrics["model_version"], folder, {"promoted": True, "model_version": metrics["model_version"],
                                                          "serving": registry.describe_served(profile)})


def write_report(profile: Profile, run_label: str = "") -> StageResult:
    """``outputs/<run-id>/`` (report, clips, metrics) and ``outputs/latest`` pointing at it."""
    where = layout(profile)
    folder = write_run_outputs(profile, run_label)
    digest = sha256_hex(where.metrics.read_bytes(), content_version(where.dcase, "*.wav"))
    return StageResult(digest[:16], folder, {"report": str(folder / "report.html")})


# ---------------------------------------------------------------- transfer: the profile's own recordings
def snapshot_own_recordings(profile: Profile) -> tuple[StageResult, list[str]]:
    """``transfer.source`` versioned (mirrored into data/own/ and tracked when DVC tracks data/)."""
    source = recordings_source(profile)
    if source is None:
        raise ValueError(f"profile {profile.name!r} names no transfer.source")
    snapshot = snapshot_recordings(profile, source)
    found = discover_source(source_from_path(snapshot.path), profile)
    named = recordings_from_manifest(snapshot.path)
    recordings: dict[str, set] = {}
    for item in found.files:
        recordings.setdefault(item.label, set()).add(named.get(str(item.path), recording_of(item.path)))
    usable = [c for c in profile.class_names if len(recordings.get(c, ())) >= 2]
    warnings = list(snapshot.warnings)
    if not usable:
        warnings.append(f"{source}: no class has two or more recordings, so there is nothing to hold out and "
                        "finetuned_model will refuse it")
    metadata = {"data_version": snapshot.version, "versioned_by": snapshot.versioned_by, "source": str(source),
                "files_per_class": dict(sorted(Counter(f.label for f in found.files).items())),
                "recordings_per_class": {c: len(r) for c, r in sorted(recordings.items())},
                "classes_to_finetune": usable, "quarantined": len(found.rejected),
                "quarantined_per_reason": dict(sorted(Counter(r.reason for r in found.rejected).items())),
                "non_audio_files_ignored": len(found.ignored)}
    return StageResult(snapshot.version, snapshot.path, metadata), warnings


def finetune_on_source(profile: Profile, recordings: Path | None = None) -> StageResult:
    """The accepted model fine-tuned on ``recordings`` (default: ``transfer.source``), gated, promoted
    if better (``foley_core.transfer``). A refusal is a result, not an error: the version is the
    model ``latest`` points at afterwards, so a refused fine-tune changes nothing downstream."""
    source = recordings_source(profile)
    if recordings is None and source is None:
        raise ValueError(f"profile {profile.name!r} names no transfer.source")
    recordings = Path(recordings or source).resolve()
    if not (registry.pipelines_dir(profile) / registry.LATEST).exists():
        return StageResult("none", registry.pipelines_dir(profile) / registry.LATEST, {
            "promoted": False, "model_version": "none", "reasons": "no accepted model to fine-tune yet"})
    work = layout(profile).transfer(recordings.name)
    try:
        record, refused = finetune_on_recordings(profile, recordings), None
    except GateRefused as exc:
        record, refused = json.loads((work / RESULT).read_text()), exc
    latest = json.loads((registry.latest_pipeline_dir(profile) / registry.PIPELINE_CONFIG).read_text()).get("model_version", "")
    ingested = layout(profile).ingest(recordings.name)
    quarantined = sum(max(len(path.read_text().splitlines()) - 1, 0) for path in
                      [*ingested.glob(f"*/{QUARANTINE}"), ingested / "quarantine_unassigned.csv"] if path.is_file())
    gate = record["gate"]
    metadata = {"promoted": refused is None, "model_version": latest, "finetuned_model": record["model_version"],
                "base_model_version": record["base_model_version"],
                "source_data_version": record.get("source_dvc_version") or record["source_data_version"],
                "clips_version": record["source_data_version"], "source": record["source"], "train": record["train"],
                "classes": record["classes"], "split": record["split"], "settings": record["settings"],
                "quarantined": quarantined, "seconds": record.get("seconds"),
                "mean_fad_base": gate["base"]["mean"]["fad"], "mean_fad_finetuned": gate["finetuned"]["mean"]["fad"],
                "mean_kad_base": gate["base"]["mean"]["kad"], "mean_kad_finetuned": gate["finetuned"]["mean"]["kad"],
                "clap_kept": record["clap"].get("kept"), "clap_note": record["clap"].get("reason") or None}
    if "after" in record["clap"]:  # zero-shot accuracy on the held-out recordings and the profile's own val clips
        metadata["clap_zero_shot"] = {f"{data}_{when}": record["clap"][when][data]["accuracy"]
                                      for data in ("recordings", "procedural") for when in ("before", "after")}
    if refused is None:
        metadata["promoted_to"] = record["promoted_to"]
    else:
        metadata.update(reasons=str(refused), rejected_model=record["model_version"])
    return StageResult(latest, work, metadata, {"per_class": pd.DataFrame(summary_rows(record)).to_markdown(index=False)})
