"""The report of a pipeline run: ``outputs/<run-id>/`` with the report a person can listen to,
the selected clips in the DCASE layout and the metrics; ``outputs/latest`` points at it."""

from __future__ import annotations

import json
import secrets
import shutil
import time
from pathlib import Path

import pandas as pd

from foley_core.core.config import Profile
from foley_core.core.fsutil import replace_symlink, staged_dir, write_text_atomic
from foley_core.core.layout import LATEST, SELECTION, layout
from foley_core.core.plots import spectrogram_png
from foley_core.core.records import lineage_rows
from foley_core.generation.calibration import selection_table
from foley_core.generation.prompts import prompt_table
from foley_core.generation.store import load_clips
from foley_core.report import ClassSection, write_report


def write_run_outputs(profile: Profile, run_label: str = "") -> Path:
    """Write ``outputs/<run-id>/`` aside and rename it in complete, then repoint ``outputs/latest``.

    The run id is readable and unique: time to the second, profile, and a random suffix, so two
    runs finishing in the same second never share (or collide on) a folder."""
    outputs = layout(profile).outputs
    run_id = time.strftime("%Y%m%d-%H%M%S") + f"-{profile.name}-{secrets.token_hex(3)}"
    with staged_dir(outputs / run_id, replace=False) as staging:
        _write_run_folder(staging, run_id, run_label, profile)
    replace_symlink(outputs / LATEST, run_id)
    return outputs / run_id


def _write_run_folder(folder: Path, run_id: str, run_label: str, profile: Profile) -> None:
    where = layout(profile)
    shutil.copytree(where.dcase, folder / "dcase")
    metrics = json.loads(where.metrics.read_text())
    write_text_atomic(folder / "metrics.json", json.dumps(metrics, indent=2))
    sections = []
    for label in profile.class_names:
        clips = sorted((folder / "dcase" / label).glob("*.wav"))
        audio, rate = load_clips(where.generation("adapter", label) / "selected")
        selection = json.loads((where.generation("adapter", label) / SELECTION).read_text())
        captions = [f"{p.name} · CLAP {slot['score']:.2f}" for p, slot in zip(clips, selection["slots"])]
        sections.append(ClassSection(label, selection["prompt"], [(f"dcase/{label}/{p.name}", c) for p, c in zip(clips, captions)],
                                     spectrogram_png(list(audio[:4]), rate, label, profile.audio.hop_length)))
    reference = metrics.get("reference", "held-out clips")
    per_class = pd.DataFrame(metrics["per_class"]).T
    clap = pd.DataFrame(metrics["clap"]).set_index("class")
    tables = {
        f"Per class: distance of selected clips to the reference ({metrics.get('embedder', 'logmel')} embedder); "
        f"reference = {reference}": per_class,
        "Ablation: {selection off, on} x {adapter off, on}, same seeds (mean over classes)": pd.DataFrame(metrics["ablation"]),
        "CLAP scores (cosine of audio and prompt embeddings)": clap,
        "Class consistency: FAD of each class's clips (rows) to each class's reference clips (columns)":
            pd.DataFrame(metrics["class_consistency_fad"]).T,
    }
    if metrics.get("precision"):  # absent in metrics of models evaluated before precision was recorded
        tables["Precision: each network's training and sampling precision (auto resolved on this machine)"] = \
            pd.DataFrame({"precision": metrics["precision"]})
    if where.prompts.is_file():  # the prompt search (class_prompts asset): every candidate, the winner marked
        search = json.loads(where.prompts.read_text())
        table = prompt_table(search)
        if len(table):
            tables[f"Prompt per class: {search['clips_per_prompt']} clips per prompt, CLAP cosine to the class's "
                   "training clips (own), to the nearest other class (other); the highest margin is chosen"] = table
        if search.get("calibrated_selection"):
            tables["Selection per class, measured on its training clips: their CLAP scores against the prompt "
                   "(own, other classes'), AUC (own above other), candidates (1: selection off), floor, copy ceiling"] = \
                selection_table(search)
    official = metrics.get("official")
    if official:
        rows = {**official["per_class"], "mean": official["mean_fad"],
                **{f"published: {k}": v for k, v in official["published_mean_fad"].items()}}
        tables["Official DCASE FAD (VGGish, against the evaluation-set statistics)"] = pd.DataFrame(
            {"fad": rows})
    elif metrics.get("official_fad_skipped"):  # said, not left out: e.g. the VGGish file is missing
        tables["Official DCASE FAD (VGGish, against the evaluation-set statistics): skipped"] = pd.DataFrame(
            {"reason": {"skipped": metrics["official_fad_skipped"]}})
    summary = (f"profile {profile.name} · {len(profile.class_names)} classes · mean FAD {metrics['mean']['fad']:.3g} · "
               f"mean KAD {metrics['mean']['kad']:.3g} · class-consistent {len(metrics['consistent_classes'])}/"
               f"{len(profile.class_names)} · model {metrics['model_version']} · reference: {reference}")
    lines = {"run": run_id, **({"dagster run": run_label} if run_label else {}),
             **lineage_rows(where.root / "records")}
    write_report(folder / "report.html", "Foley LDM run report", summary, sections, tables, lines)


def terminal_summary(profile: Profile, folder: Path) -> str:
    metrics = json.loads((folder / "metrics.json").read_text())
    clap = pd.DataFrame(metrics["clap"]).set_index("class")[["mean_selected_score", "mean_candidate_score"]]
    per_class = pd.DataFrame(metrics["per_class"]).T
    table = per_class.join(clap).round(3)
    skipped = metrics.get("official_fad_skipped")
    return "\n".join([
        table.to_string(),
        f"class-consistent: {len(metrics['consistent_classes'])}/{len(profile.class_names)} "
        f"({', '.join(metrics['consistent_classes'])})",
        *([f"official DCASE FAD skipped: {skipped}"] if skipped else []),
        f"report:  {folder / 'report.html'}",
        f"clips:   {folder / 'dcase'}  (DCASE layout, 22,050 Hz, 16-bit, 4 s)",
    ])
