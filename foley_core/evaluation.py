"""Pipeline evaluation: per-class distances of generated clips to held-out real clips, class
consistency, and the selection x adapter ablation (the gate on them is ``foley_core.registry``).
Distances use a pluggable embedder (log-mel statistics offline by default)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from foley_core.clap import load_clap
from foley_core.core.layout import SELECTION, VARIANTS, layout
from foley_core.data.ingest import load_manifest
from foley_core.generation.store import load_clips
from foley_core.metrics import evaluate_dirs, kad, make_embedder
from foley_core.metrics.distances import fad, median_bandwidth
from foley_core.metrics.official import OFFICIAL_FOLDER_NAMES

# Published DCASE 2023 Task 7 Track A figures (official VGGish FAD on the evaluation set, mean over 7 classes).
PUBLISHED_FAD = {"winning system (Yuan et al.)": 4.765, "DCASE baseline": 9.7}


def distance_row(generated: np.ndarray, reference: np.ndarray) -> dict:
    """FAD and KAD of generated embeddings to reference embeddings. KAD's RBF bandwidth is the
    median heuristic on the *reference* alone, as in `foley evaluate`: every system scored
    against one reference shares one kernel, so the ablation, the gate and the CLI compare
    like with like."""
    return {"fad": float(fad(generated, reference)),
            "kad": float(kad(generated, reference, bandwidth=median_bandwidth(reference)))}


def class_consistency(generated: dict[str, np.ndarray], references: dict[str, np.ndarray]) -> pd.DataFrame:
    """FAD of each class's generated clips (rows) to each class's held-out clips (columns)."""
    table = pd.DataFrame(index=list(generated), columns=list(references), dtype=float)
    for g, g_emb in generated.items():
        for r, r_emb in references.items():
            table.loc[g, r] = fad(g_emb, r_emb)
    return table


def consistent_classes(table: pd.DataFrame) -> list[str]:
    """Classes whose generated clips are closer to their own class than to every other class."""
    return [c for c in table.index if c in table.columns and table.loc[c].idxmin() == c]


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


def official_fad_skip_reason(profile) -> str | None:
    """Why the official DCASE FAD cannot be computed for this profile, in words for the metrics and the
    report (None: it can). A configured VGGish file that is missing is said out loud, never silently skipped."""
    weights = profile.evaluation.vggish_weights
    if weights is None:
        return "evaluation.vggish_weights is not set"
    if not profile.resolve(weights).is_file():
        return (f"VGGish weights {profile.resolve(weights)} not found (evaluation.vggish_weights): put torchvggish's "
                "vggish-10086976.pth there")
    if not any(c in OFFICIAL_FOLDER_NAMES for c in profile.class_names):
        return "no class of this profile has official DCASE statistics"
    return None


def official_fad(profile, dcase_dir: Path) -> dict | None:
    """Per-class FAD of the exported clips against the official DCASE evaluation statistics
    (VGGish, the challenge's own pre-processing), when VGGish weights are configured and present;
    None otherwise (``official_fad_skip_reason`` says why)."""
    reason = official_fad_skip_reason(profile)
    if reason is not None:
        if profile.evaluation.vggish_weights is not None:  # asked for and not possible: a warning, not silence
            logging.getLogger(__name__).warning("official DCASE FAD skipped: %s", reason)
        return None
    weights = profile.evaluation.vggish_weights
    classes = [c for c in profile.class_names if c in OFFICIAL_FOLDER_NAMES]
    result = evaluate_dirs(dcase_dir, "official", make_embedder("vggish", vggish_weights=profile.resolve(weights)), classes)
    return {"per_class": {c: row["fad"] for c, row in result["classes"].items()},
            "mean_fad": result["mean"]["fad"], "published_mean_fad": PUBLISHED_FAD}


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
