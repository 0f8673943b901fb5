"""The evaluation stage: the selected clips of a model against held-out clips, class consistency, the selection x adapter ablation."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from foley_core.clap import load_clap
from foley_core.core.layout import SELECTION, VARIANTS, layout
from foley_core.data.ingest import load_manifest
from foley_core.evaluation.consistency import class_consistency, consistent_classes, distance_row
from foley_core.evaluation.official import official_fad, official_fad_skip_reason
from foley_core.generation.store import load_clips
from foley_core.metrics import make_embedder


def read_json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def reference_description(profile) -> str:
    """What "real clips" means for this profile's evaluation, in words for the report."""
    kinds = []
    for source in profile.data.sources:
        if source.kind == "synthetic":
            kinds.append("held-out clips of the procedural (synthetic) training corpus, not real recordings")
        elif source.kind == "folder":
            kinds.append(f"held-out recordings from {source.path}")
        else:
            kinds.append(f"held-out captioned clips from {source.path}")
    return "; ".join(kinds)


def reference_rows(rows: pd.DataFrame, minimum: int = 2) -> pd.DataFrame:
    """Held-out clips of a class; all its clips when too few are held out for a covariance (smoke size)."""
    val = rows[rows["split"] == "val"]
    return val if len(val) >= minimum else rows


def make_profile_embedder(profile):
    """The embedder the profile names (``evaluation.embedder``), with its weights."""
    name = profile.evaluation.embedder
    weights = profile.resolve(profile.evaluation.vggish_weights) if profile.evaluation.vggish_weights else None
    encoder = None
    if name == "clap":
        encoder = load_clap(profile)
    return make_embedder(name, vggish_weights=weights, clap_encoder=encoder,
                         clap_sample_rate=getattr(encoder, "sample_rate", profile.audio.sample_rate))


def evaluate_generation(profile, model_version: str) -> dict:
    """The evaluation of a generation: per-class FAD/KAD of the selected clips to held-out clips,
    class consistency, the {selection off, on} x {adapter off, on} ablation on the same seeds,
    CLAP scores, and (with VGGish weights) the official DCASE FAD."""
    where = layout(profile)
    embedder = make_profile_embedder(profile)
    manifest = load_manifest(where.dataset, profile.class_names)
    references = {c: embedder.embed_files(list(reference_rows(rows)["abs_path"])) for c, rows in manifest.groupby("class")}
    ablation_rows, selected_embeddings, clap_rows = [], {}, []
    for variant in VARIANTS:
        for label in profile.class_names:
            folder = where.generation(variant, label)
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
    main = ablation[(ablation["adapter"]) & (ablation["selection"])]
    official = official_fad(profile, where.dcase)
    return {
        "embedder": embedder.name,
        "reference": reference_description(profile),
        "mean": {"fad": float(main["fad"].mean()), "kad": float(main["kad"].mean())},
        "per_class": main.set_index("class")[["fad", "kad"]].to_dict(orient="index"),
        "ablation": table.to_dict(orient="records"),
        "class_consistency_fad": consistency.to_dict(orient="index"),
        "consistent_classes": consistent_classes(consistency),
        "clap": clap_rows,
        "official": official,
        # the report says when the official FAD is missing, and why (a missing VGGish file, ...)
        **({"official_fad_skipped": official_fad_skip_reason(profile)} if official is None else {}),
        "model_version": model_version,
        "precision": profile.precision_summary(),
    }
