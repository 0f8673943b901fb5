"""Generation stage assets: generated_candidates -> selected_outputs (per class) ->
evaluation_metrics (+ quality gates) -> promoted_pipeline and foley_report."""

import base64
import hashlib
import json

import numpy as np
import pandas as pd
import soundfile as sf
from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetDep,
    AssetExecutionContext,
    DataVersion,
    MaterializeResult,
    MetadataValue,
    StaticPartitionMapping,
    StaticPartitionsDefinition,
    asset,
    asset_check,
)

from foley_core.audio import write_text_atomic
from foley_core.config import Profile
from foley_core.fsutil import staged_dir
from foley_core.data.ingest import load_manifest
from orchestration.assets.data import dataset_dir
from orchestration.assets.models import embeddings_dir, folder_version
from orchestration.resources import FoleyProfile
from orchestration.versions import code_version

VARIANTS = ("adapter", "identity")  # fine-tuned adapter, and the identity-adapter ablation


def generation_dir(profile: Profile, variant: str, label: str | None = None):
    root = profile.artifact_dir("generation", variant)
    return root / label if label else root


def dcase_dir(profile: Profile):
    return profile.artifact_dir("dcase")


def reference_rows(rows: pd.DataFrame, minimum: int = 2) -> pd.DataFrame:
    """Held-out clips of a class; all its clips when too few are held out for a covariance (smoke size)."""
    val = rows[rows["split"] == "val"]
    return val if len(val) >= minimum else rows


def _md_png(png: bytes, alt: str):
    return MetadataValue.md(f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode()})")


def build_generation_assets(profile: Profile, finetuned_adapter, clap_embeddings) -> list:
    target_partitions = StaticPartitionsDefinition(profile.class_names)
    same_class = StaticPartitionMapping({c: c for c in profile.class_names})

    @asset(
        group_name="generation",
        deps=[finetuned_adapter, AssetDep(clap_embeddings, partition_mapping=same_class)],
        partitions_def=target_partitions,
        pool="compute",
        code_version=code_version(profile, ["foley_core.generation.generate", "foley_core.generation.pipeline",
                                            "foley_core.generation.selection", "foley_core.ldm.sampling"],
                                  ["generation", "classes", "seed"]),
        description="N candidates per clip in one batch, scored by CLAP; best kept (floor/ceiling, regeneration, "
        "multi-target). Made with the fine-tuned adapter and with the identity ablation, same seeds.",
    )
    def generated_candidates(context: AssetExecutionContext, foley: FoleyProfile) -> MaterializeResult:
        from foley_core.clap import EmbeddingCache
        from foley_core.generation.generate import generate_class
        from foley_core.generation.pipeline import assemble_pipeline
        from foley_core.generation.store import save_class_generation

        prof = foley.load()
        label = context.partition_key
        n_clips = prof.generation.clips_per_class
        records = {}
        for variant in VARIANTS:
            pipeline = assemble_pipeline(prof, variant)
            targets = None
            if prof.class_config(label).clap_floor is None:  # multi-target: each slot matches one real clip
                rows = load_manifest(dataset_dir(prof), [label])
                cached = EmbeddingCache(embeddings_dir(prof, label), pipeline.clap.version).audio(rows["content_hash"])
                targets = cached[np.arange(n_clips) % len(cached)]
            gen = generate_class(pipeline, prof, label, n_clips, targets=targets,
                                 progress=lambda done, total: context.log.debug(f"{label} {variant}: {done}/{total}"))
            records[variant] = save_class_generation(gen, generation_dir(prof, variant, label))
        summary = records["adapter"]["summary"]
        return MaterializeResult(
            data_version=DataVersion(folder_version(generation_dir(prof, "adapter", label), "*.wav")),
            metadata={**{k: v for k, v in summary.items()},
                      "score_distribution": MetadataValue.json({v: r["summary"] for v, r in records.items()}),
                      "prompt": records["adapter"]["prompt"]},
        )

    @asset(
        group_name="generation",
        deps=[generated_candidates],
        partitions_def=target_partitions,
        code_version=code_version(profile, ["foley_core.export"], ["audio"]),
        description="The selected clips in the DCASE layout: 22,050 Hz, mono, 16-bit, exactly 4 s.",
    )
    def selected_outputs(context: AssetExecutionContext, foley: FoleyProfile) -> MaterializeResult:
        from foley_core.export import clip_name, validate_dcase, write_dcase_clip
        from foley_core.generation.store import load_clips
        from foley_core.plots import spectrogram_png

        prof = foley.load()
        label = context.partition_key
        clips, rate = load_clips(generation_dir(prof, "adapter", label) / "selected")
        out = dcase_dir(prof) / label
        with staged_dir(out) as staging:  # the class folder holds exactly this selection, never a mix
            for i, clip in enumerate(clips):
                write_dcase_clip(staging / clip_name(i), clip, rate)
        problems = [p for p in validate_dcase(dcase_dir(prof), classes=[label], clips_per_class=len(clips))]
        return MaterializeResult(
            data_version=DataVersion(folder_version(out, "*.wav")),
            metadata={"clips": len(clips), "path": MetadataValue.path(str(out)), "format_problems": len(problems),
                      "spectrograms": _md_png(spectrogram_png(list(clips[:3]), rate, label, prof.audio.hop_length), label)},
        )

    @asset(
        group_name="evaluation",
        deps=[selected_outputs, generated_candidates],
        code_version=code_version(profile, ["foley_core.evaluation", "foley_core.metrics.distances",
                                            "foley_core.metrics.embedders"], ["evaluation", "classes"]),
        description="FAD/KAD of generated clips to held-out real clips per class, class consistency, "
        "and the {selection off, on} x {adapter off, on} ablation on the same seeds.",
    )
    def evaluation_metrics(context: AssetExecutionContext, foley: FoleyProfile) -> MaterializeResult:
        from foley_core.evaluation import class_consistency, consistent_classes, distance_row
        from foley_core.generation.store import SELECTION, load_clips
        from foley_core.metrics import make_embedder

        prof = foley.load()
        embedder = make_embedder("logmel")
        manifest = load_manifest(dataset_dir(prof), prof.class_names)
        references = {c: embedder.embed_files(list(reference_rows(rows)["abs_path"])) for c, rows in manifest.groupby("class")}
        ablation_rows, selected_embeddings, clap_rows = [], {}, []
        for variant in VARIANTS:
            for label in prof.class_names:
                folder = generation_dir(prof, variant, label)
                record = json.loads((folder / SELECTION).read_text())
                for pick in ("selected", "first"):
                    clips, rate = load_clips(folder / pick)
                    emb = embedder.embed(list(clips), rate)
                    if (variant, pick) == ("adapter", "selected"):
                        selected_embeddings[label] = emb
                    ablation_rows.append({"adapter": variant == "adapter", "selection": pick == "selected",
                                          "class": label, **distance_row(emb, references[label])})
                if variant == "adapter":
                    clap_rows.append({"class": label, **record["summary"]})
        ablation = pd.DataFrame(ablation_rows)
        table = ablation.groupby(["adapter", "selection"])[["fad", "kad"]].mean().reset_index()
        consistency = class_consistency(selected_embeddings, references)
        consistent = consistent_classes(consistency)
        main = ablation[(ablation["adapter"]) & (ablation["selection"])]
        metrics = {
            "mean": {"fad": float(main["fad"].mean()), "kad": float(main["kad"].mean())},
            "per_class": main.set_index("class")[["fad", "kad"]].to_dict(orient="index"),
            "ablation": table.to_dict(orient="records"),
            "class_consistency_fad": consistency.to_dict(orient="index"),
            "consistent_classes": consistent,
            "clap": clap_rows,
            "model_version": folder_version(prof.artifact_dir("finetune")) + "-" + folder_version(prof.artifact_dir("ldm")),
        }
        out = prof.artifact_dir("evaluation", "metrics.json")
        write_text_atomic(out, json.dumps(metrics, indent=2))
        return MaterializeResult(
            data_version=DataVersion(hashlib.sha256(out.read_bytes()).hexdigest()[:16]),
            metadata={"mean_fad": metrics["mean"]["fad"], "mean_kad": metrics["mean"]["kad"],
                      "consistent_classes": f"{len(consistent)}/{len(prof.class_names)}",
                      "ablation": MetadataValue.md(table.to_markdown(index=False)),
                      "clap_scores": MetadataValue.md(pd.DataFrame(clap_rows).to_markdown(index=False)),
                      "path": MetadataValue.path(str(out))},
        )

    @asset_check(asset=evaluation_metrics, blocking=True,
                 description="DCASE export valid for every class (rate, channels, bit depth, length, count).")
    def dcase_export_valid(foley: FoleyProfile) -> AssetCheckResult:
        from foley_core.export import validate_dcase

        prof = foley.load()
        problems = validate_dcase(dcase_dir(prof), classes=prof.class_names, clips_per_class=prof.generation.clips_per_class)
        return AssetCheckResult(passed=not problems, metadata={"problems": len(problems),
                                "first": "; ".join(f"{p.path}: {p.problem}" for p in problems[:5])})

    @asset_check(asset=evaluation_metrics, blocking=True,
                 description="Mean FAD/KAD not worse than the last accepted model beyond the configured margin.")
    def no_quality_regression(foley: FoleyProfile) -> AssetCheckResult:
        from foley_core.evaluation import read_json, regression
        from foley_core.generation.pipeline import accepted_metrics

        prof = foley.load()
        current = read_json(prof.artifact_dir("evaluation", "metrics.json"))
        accepted = accepted_metrics(prof)
        problems = regression(current["mean"], accepted and accepted["mean"], prof.evaluation.regression_margin)
        return AssetCheckResult(passed=not problems, severity=AssetCheckSeverity.ERROR,
                                metadata={"problems": "; ".join(problems) or "none",
                                          "accepted_model": (accepted or {}).get("model_version", "none yet")})

    @asset(
        group_name="evaluation",
        deps=[evaluation_metrics],
        code_version=code_version(profile, ["foley_core.generation.pipeline"], ["generation"]),
        description="The model the CLI uses (`latest`): promoted only when the blocking quality checks pass.",
    )
    def promoted_pipeline(context: AssetExecutionContext, foley: FoleyProfile) -> MaterializeResult:
        from foley_core.export import validate_dcase
        from foley_core.generation.pipeline import PromotionRefused, accepted_metrics, assemble_pipeline, promote

        prof = foley.load()
        metrics = json.loads(prof.artifact_dir("evaluation", "metrics.json").read_text())
        export_problems = validate_dcase(dcase_dir(prof), classes=prof.class_names,
                                         clips_per_class=prof.generation.clips_per_class)
        try:  # promote re-applies the gate itself: launched alone (a later run, the UI) it still holds
            folder = promote(assemble_pipeline(prof, "adapter"), prof, metrics, export_problems=len(export_problems))
        except PromotionRefused as refused:
            context.log.warning(str(refused))
            kept = (accepted_metrics(prof) or {}).get("model_version", "none")
            return MaterializeResult(data_version=DataVersion(kept), metadata={
                "promoted": False, "model_version": kept, "rejected_model": metrics["model_version"],
                "reasons": str(refused)})
        return MaterializeResult(data_version=DataVersion(metrics["model_version"]),
                                 metadata={"promoted": True, "path": MetadataValue.path(str(folder)),
                                           "model_version": metrics["model_version"]})

    return [generated_candidates, selected_outputs, evaluation_metrics, promoted_pipeline], [dcase_export_valid, no_quality_regression]
