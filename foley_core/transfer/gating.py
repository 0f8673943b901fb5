"""The fine-tune's gate: base against fine-tuned on the held-out recordings, and its table."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from foley_core.core.config import Profile
from foley_core.evaluation import class_consistency, consistent_classes, distance_row, make_profile_embedder
from foley_core.generation.pipeline import FoleyPipeline, place
from foley_core.generation.store import save_class_generation
from foley_core.generation.submission import generate_selected, pipeline_for_class
from foley_core.registry import regression
from foley_core.transfer.recordings import SourceData


class GateRefused(RuntimeError):
    """The fine-tuned model did not beat the base on the held-out recordings: nothing was promoted."""



# ---------------------------------------------------------------- the gate
def gate(profile: Profile, base_dir: Path, candidate_dir: Path, data: SourceData, work: Path) -> dict:
    """Base vs fine-tuned on the held-out recordings of each held class (same seeds, same selection)."""
    embedder = make_profile_embedder(profile)
    references = {c: embedder.embed_files(list(rows["abs_path"])) for c, rows in data.val.groupby("class")}
    n = profile.transfer.eval_clips_per_class
    held_out_by = data.manifest.groupby("class")["held_out_by"].first().to_dict() if "held_out_by" in data.manifest else {}
    result: dict = {"embedder": embedder.name, "clips_per_class": n,
                    "reference": f"held-out recordings of {data.root} (whole recordings; whole collections where a "
                                 "class has files from two or more, per its MANIFEST.csv source column)",
                    "held_out_by": {c: held_out_by.get(c, "recording") for c in data.classes},
                    "reference_clips": {c: int(n) for c, n in data.val["class"].value_counts().items()}}
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
        rows.append({"class": label, "held_out_by": gate_.get("held_out_by", {}).get(label, "recording"),
                     "fad_base": round(b["fad"], 1), "fad_finetuned": round(f["fad"], 1),
                     "kad_base": round(b["kad"], 4), "kad_finetuned": round(f["kad"], 4),
                     "consistent_base": label in gate_["base"]["consistent_classes"],
                     "consistent_finetuned": label in gate_["finetuned"]["consistent_classes"],
                     "vocoder": choice.get(label, {}).get("vocoder", "base")})
    return rows

