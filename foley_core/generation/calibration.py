"""Each class's selection settings measured on its training recordings, under the CLAP that selects.

The winners' floors (0.15-0.3) and ceiling (0.99) were calibrated for their CLAP; another CLAP puts
text and audio at other distances, so the same numbers mean something else (issue 25). With
``generation.calibrate_selection`` on, the ``class_prompts`` asset measures them instead, from the
class's *training* clips (the held-out clips stay unseen until the evaluation and the gate):

- **Does selection help this class?** The CLAP scores every training clip against the class's
  prompt. ``auc`` is the chance that a clip of the class scores above a clip of another class. Where
  it is below ``MIN_AUC`` the CLAP cannot tell the class's real sound from the others' by this
  prompt, so its highest-scoring candidate is no likelier to sound like the class than the first:
  the class generates one candidate (selection off), and saves generating the others.
- **floor**: the ``FLOOR_QUANTILE`` of the class's own clips' scores. A candidate that scores below
  nine in ten real recordings of the class is regenerated (up to ``max_regenerations``).
- **ceiling**, multi-target classes only (scored against a real clip, not text): the highest cosine
  between two distinct training clips of the class. A candidate closer to its target than any two
  real recordings are to each other is a near-copy, not a new sound.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from foley_core.clap.similarity import cosine_scores
from foley_core.core.layout import layout

MIN_AUC = 0.75  # below this the CLAP ranks the class's clips little better than chance (0.5)
FLOOR_QUANTILE = 0.10
MIN_CLIPS = 3  # fewer training clips than this measure nothing: the configured settings stay


def auc(own: np.ndarray, other: np.ndarray) -> float:
    """P(a clip of the class scores above a clip of another class), ties counting half (Mann-Whitney)."""
    own, other = np.asarray(own, dtype=np.float64), np.asarray(other, dtype=np.float64)
    if not len(own) or not len(other):
        return float("nan")
    above = (own[:, None] > other[None, :]).sum() + 0.5 * (own[:, None] == other[None, :]).sum()
    return float(above / (len(own) * len(other)))


def copy_ceiling(own_audio: np.ndarray) -> float | None:
    """The highest cosine between two distinct clips of a class (None with fewer than two)."""
    if len(own_audio) < 2:
        return None
    own_audio = np.asarray(own_audio, dtype=np.float32)
    pairs = cosine_scores(own_audio[:, None, :], own_audio[None, :, :])  # (n, n)
    return float(pairs[~np.eye(len(own_audio), dtype=bool)].max())


def calibrate_class(text: np.ndarray, own_audio: np.ndarray, other_audio: np.ndarray, *, multi_target: bool,
                    candidates: int) -> dict:
    """The selection settings of one class: ``candidates``, ``floor`` (None for a multi-target class,
    whose floor relaxes from its own start), ``ceiling`` (None: the profile's), with what they came from."""
    own = cosine_scores(own_audio, text)
    other = cosine_scores(other_audio, text)
    measured = {"training_clips": int(len(own)), "other_clips": int(len(other)),
                "own_scores": _spread(own), "other_scores": _spread(other)}
    if len(own) < MIN_CLIPS or not len(other):
        return {**measured, "calibrated": False, "why": f"fewer than {MIN_CLIPS} training clips or no other class",
                "candidates": candidates, "floor": None, "ceiling": None, "auc": None}
    score_auc = auc(own, other)
    selection = multi_target or score_auc >= MIN_AUC  # a multi-target class scores against real clips, not text
    return {**measured, "calibrated": True, "auc": round(score_auc, 4), "selection": selection,
            "why": ("multi-target: scored against its own training clips" if multi_target else
                    f"AUC {score_auc:.2f} {'>=' if selection else '<'} {MIN_AUC} by its prompt"),
            "candidates": candidates if selection else 1,
            # no selection, no floor either: regenerating by a score that does not tell the class apart is as random
            "floor": None if multi_target or not selection else round(float(np.quantile(own, FLOOR_QUANTILE)), 4),
            "ceiling": round(copy_ceiling(own_audio), 4) if multi_target else None}


def _spread(scores: np.ndarray) -> dict:
    if not len(scores):
        return {}
    q = np.quantile(scores, [0.1, 0.5, 0.9])
    return {"p10": round(float(q[0]), 4), "median": round(float(q[1]), 4), "p90": round(float(q[2]), 4)}


def calibrated_selection(profile, label: str, clap_version: str | None) -> dict:
    """What ``label`` selects with: ``candidates``, ``floor``, ``ceiling`` and ``source``. The
    ``class_prompts`` record's calibration when it was measured under ``clap_version`` (the CLAP that
    scores now: a fine-tune's adapted CLAP puts scores elsewhere, and gets the configured values), else
    the class's configured settings and the profile's ceiling."""
    cfg = profile.class_config(label)
    configured = {"candidates": cfg.candidates, "floor": cfg.clap_floor, "ceiling": profile.generation.clap_ceiling,
                  "source": "configured"}
    path = layout(profile).prompts
    if not profile.generation.calibrate_selection or not path.is_file():
        return configured
    record = json.loads(path.read_text())
    measured = record.get("classes", {}).get(label, {}).get("selection")
    if not measured or not measured.get("calibrated") or record.get("clap_version") != clap_version:
        return configured
    return {"candidates": measured["candidates"],
            "floor": measured["floor"],  # None: selection off (or a multi-target class, which relaxes its own)
            "ceiling": profile.generation.clap_ceiling if measured["ceiling"] is None else measured["ceiling"],
            "source": "calibrated"}


def selection_table(record: dict) -> pd.DataFrame:
    """One row per class for the report: what the training clips measured, and what selection does."""
    rows = []
    for label, entry in record.get("classes", {}).items():
        measured = entry.get("selection") or {}
        own, other = measured.get("own_scores") or {}, measured.get("other_scores") or {}
        rows.append({"class": label, "prompt": entry["winner"], "training clips": measured.get("training_clips"),
                     "own median": own.get("median"), "others median": other.get("median"), "AUC": measured.get("auc"),
                     "candidates": measured.get("candidates"), "floor": measured.get("floor"),
                     "ceiling": measured.get("ceiling"), "why": measured.get("why")})
    return pd.DataFrame(rows)
