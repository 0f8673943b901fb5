"""The best prompt per class (the paper's first open question), chosen by measurement.

For each class, every candidate prompt (the configured ``prompts``, the held-out paraphrases of
``clap/paraphrase_prompts.csv`` and the user's ``extra_prompts``) generates a few clips with the
same seeds, so prompts differ and noise does not. The CLAP that selects embeds them, and each
prompt scores by how much closer its clips sit to the class's *training* clips than to any other
class's (``margin``: cosine to the class's centroid minus the highest cosine to another class's
centroid). That is what a listener needs: the sound of the class, not of Foley in general. The
held-out clips stay unseen: the evaluation measures against them afterwards.

The paraphrases are never used to *train* anything (the CLAP's paraphrase accuracy is measured
on them, docs/clap.md); choosing a generation prompt among them trains nothing either.
"""

from __future__ import annotations

import json
import logging

import numpy as np
import pandas as pd

from foley_core.clap.evaluate import load_paraphrases
from foley_core.clap.similarity import cosine_scores
from foley_core.core.config import Profile
from foley_core.core.hashing import stable_seed
from foley_core.core.layout import layout
from foley_core.generation.generate import MAX_BATCH_ROWS
from foley_core.generation.pipeline import FoleyPipeline

log = logging.getLogger(__name__)

SOURCES = ("configured", "paraphrase", "extra")


def candidate_prompts(profile: Profile, label: str) -> list[dict]:
    """Every prompt the search tries for ``label``, each once, with where it came from."""
    cfg = profile.class_config(label)
    paraphrases = load_paraphrases()
    found = {"configured": list(cfg.prompts),
             "paraphrase": list(paraphrases.loc[paraphrases["class"] == label, "prompt"]),
             "extra": list(cfg.extra_prompts)}
    seen: dict[str, str] = {}
    for source in SOURCES:
        for prompt in found[source]:
            seen.setdefault(prompt, source)
    return [{"prompt": prompt, "source": source} for prompt, source in seen.items()]


def class_centroids(embeddings: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Unit mean of each class's (n, d) CLAP audio embeddings."""
    centroids = {}
    for label, rows in embeddings.items():
        mean = np.asarray(rows, dtype=np.float64).mean(axis=0)
        centroids[label] = (mean / max(np.linalg.norm(mean), 1e-12)).astype(np.float32)
    return centroids


def score_prompts(pipeline: FoleyPipeline, profile: Profile, label: str, centroids: dict[str, np.ndarray],
                  clips: int) -> list[dict]:
    """Each candidate prompt's clips against the training centroids: ``own``, ``other`` (the
    nearest other class) and ``margin`` = own - other, means over its clips."""
    cfg = profile.class_config(label)
    candidates = candidate_prompts(profile, label)
    seeds = [stable_seed(profile.seed, "prompt-search", label, i, bits=31) for i in range(clips)]
    prompts = [c["prompt"] for c in candidates for _ in range(clips)]
    clap = pipeline.scoring_clap()
    audio = []
    for start in range(0, len(prompts), MAX_BATCH_ROWS):  # bounded batches, however many prompts a user adds
        batch = prompts[start : start + MAX_BATCH_ROWS]
        # one candidate per clip, no selection: the prompt alone decides what is heard
        out = pipeline(batch, n_candidates=1, guidance_scale=cfg.guidance,
                       seeds=[seeds[i % clips] for i in range(start, start + len(batch))])
        audio.append(clap.encode_audio(out.waveforms, pipeline.sample_rate).numpy())
    audio = np.concatenate(audio).reshape(len(candidates), clips, -1)
    others = [c for c in centroids if c != label]
    rows = []
    for i, candidate in enumerate(candidates):
        own = cosine_scores(audio[i], centroids[label])
        other = np.max([cosine_scores(audio[i], centroids[c]) for c in others], axis=0) if others else np.zeros(clips)
        rows.append({**candidate, "own": round(float(own.mean()), 4), "other": round(float(other.mean()), 4),
                     "margin": round(float((own - other).mean()), 4)})
    return rows


def choose(rows: list[dict]) -> str:
    """The winner: the highest margin; a tie goes to the earlier prompt (configured first)."""
    return max(rows, key=lambda r: r["margin"])["prompt"]


def chosen_prompt(profile: Profile, label: str) -> str:
    """The prompt ``label`` generates with: the search's winner when it ran, else the first configured."""
    path = layout(profile).prompts
    if path.is_file():
        winner = json.loads(path.read_text()).get("classes", {}).get(label, {}).get("winner")
        if winner:
            return winner
    return profile.class_config(label).prompts[0]


def prompt_table(record: dict) -> pd.DataFrame:
    """One row per (class, prompt) for the report, the winner marked."""
    rows = []
    for label, entry in record.get("classes", {}).items():
        for row in entry["candidates"]:
            rows.append({"class": label, "prompt": row["prompt"], "source": row["source"], "own": row["own"],
                         "other": row["other"], "margin": row["margin"], "chosen": row["prompt"] == entry["winner"]})
    return pd.DataFrame(rows, columns=["class", "prompt", "source", "own", "other", "margin", "chosen"])
