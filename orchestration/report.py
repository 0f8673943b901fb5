"""The end of `foley run`: ``outputs/<run-id>/`` with the report a person can listen to, the
selected clips in the DCASE layout and the metrics; ``outputs/latest`` points at it."""

from __future__ import annotations

import json
import secrets
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd
from dagster import AssetKey, DagsterInstance

from foley_core.audio import write_text_atomic
from foley_core.config import Profile
from foley_core.fsutil import replace_symlink, staged_dir
from foley_core.generation.store import load_clips
from foley_core.plots import spectrogram_png
from foley_core.report import ClassSection, write_report
from orchestration.assets.generation import dcase_dir, generation_dir


def lineage(instance: DagsterInstance, keys: list[AssetKey]) -> dict[str, str]:
    """Data version and code version of the latest materialisation of each asset (partition)."""
    rows = {}
    for key in keys:
        records = instance.fetch_materializations(key, limit=200).records
        latest: dict[str | None, object] = {}
        for record in records:  # newest first
            latest.setdefault(record.partition_key, record)
        for partition, record in sorted(latest.items(), key=lambda kv: kv[0] or ""):
            tags = record.asset_materialization.tags or {}
            name = key.to_user_string() + (f"[{partition}]" if partition else "")
            rows[name] = f"data {tags.get('dagster/data_version', '?')} · code {tags.get('dagster/code_version', '?')}"
    return rows


def write_run_outputs(profile: Profile, instance: DagsterInstance, keys: list[AssetKey], run_ids: list[str]) -> Path:
    """Write ``outputs/<run-id>/`` aside and rename it in complete, then repoint ``outputs/latest``.

    The run id is readable and unique: time to the second, profile, and a random suffix, so two
    runs finishing in the same second never share (or collide on) a folder."""
    outputs = profile.resolve(profile.paths.outputs_dir)
    run_id = time.strftime("%Y%m%d-%H%M%S") + f"-{profile.name}-{secrets.token_hex(3)}"
    with staged_dir(outputs / run_id, replace=False) as staging:
        _write_run_folder(staging, run_id, profile, instance, keys, run_ids)
    replace_symlink(outputs / "latest", run_id)
    return outputs / run_id


def _write_run_folder(folder: Path, run_id: str, profile: Profile, instance: DagsterInstance, keys: list[AssetKey],
                      run_ids: list[str]) -> None:
    shutil.copytree(dcase_dir(profile), folder / "dcase")
    metrics = json.loads(profile.artifact_dir("evaluation", "metrics.json").read_text())
    write_text_atomic(folder / "metrics.json", json.dumps(metrics, indent=2))
    sections = []
    for label in profile.class_names:
        clips = sorted((folder / "dcase" / label).glob("*.wav"))
        audio, rate = load_clips(generation_dir(profile, "adapter", label) / "selected")
        selection = json.loads((generation_dir(profile, "adapter", label) / "selection.json").read_text())
        captions = [f"{p.name} · CLAP {slot['score']:.2f}" for p, slot in zip(clips, selection["slots"])]
        sections.append(ClassSection(label, selection["prompt"], [(f"dcase/{label}/{p.name}", c) for p, c in zip(clips, captions)],
                                     spectrogram_png(list(audio[:4]), rate, label, profile.audio.hop_length)))
    per_class = pd.DataFrame(metrics["per_class"]).T
    clap = pd.DataFrame(metrics["clap"]).set_index("class")
    tables = {
        "Per class: distance of selected clips to held-out real clips (log-mel embedder)": per_class,
        "Ablation: {selection off, on} x {adapter off, on}, same seeds (mean over classes)": pd.DataFrame(metrics["ablation"]),
        "CLAP scores (cosine of audio and prompt embeddings)": clap,
        "Class consistency: FAD of each class's clips (rows) to each class's real clips (columns)":
            pd.DataFrame(metrics["class_consistency_fad"]).T,
    }
    summary = (f"profile {profile.name} · {len(profile.class_names)} classes · mean FAD {metrics['mean']['fad']:.3g} · "
               f"mean KAD {metrics['mean']['kad']:.3g} · class-consistent {len(metrics['consistent_classes'])}/"
               f"{len(profile.class_names)} · model {metrics['model_version']}")
    lines = {"run": run_id, "dagster runs": ", ".join(r[:8] for r in run_ids) or "none (everything fresh)",
             **lineage(instance, keys)}
    write_report(folder / "report.html", "Foley LDM run report", summary, sections, tables, lines)


def terminal_summary(profile: Profile, folder: Path) -> str:
    metrics = json.loads((folder / "metrics.json").read_text())
    clap = pd.DataFrame(metrics["clap"]).set_index("class")[["mean_selected_score", "mean_candidate_score"]]
    per_class = pd.DataFrame(metrics["per_class"]).T
    table = per_class.join(clap).round(3)
    return "\n".join([
        table.to_string(),
        f"class-consistent: {len(metrics['consistent_classes'])}/{len(profile.class_names)} "
        f"({', '.join(metrics['consistent_classes'])})",
        f"report:  {folder / 'report.html'}",
        f"clips:   {folder / 'dcase'}  (DCASE layout, 22,050 Hz, 16-bit, 4 s)",
    ])
