"""Generated clips on disk: ``<root>/<Class>/{selected,first}/NNN.wav`` (model rate) + ``selection.json``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import soundfile as sf

from foley_core.audio import write_text_atomic, write_wav_atomic
from foley_core.generation.generate import ClassGeneration

SELECTION = "selection.json"


def save_class_generation(gen: ClassGeneration, folder: Path) -> dict:
    for kind, clips in (("selected", gen.selected), ("first", gen.first_candidates)):
        for i, clip in enumerate(clips):
            write_wav_atomic(folder / kind / f"{i:03d}.wav", clip, gen.sample_rate)
    record = {
        "class": gen.class_name, "prompt": gen.prompt, "sample_rate": gen.sample_rate, "summary": gen.summary(),
        "slots": [{"seed": seed, "attempt": s.attempt, "index": s.index, "score": s.score, "accepted": s.accepted,
                   "floor": s.floor, "scores": s.scores} for seed, s in zip(gen.seeds, gen.selections)],
    }  # fmt: skip
    write_text_atomic(folder / SELECTION, json.dumps(record, indent=2))
    return record


def load_clips(folder: Path) -> tuple[np.ndarray, int]:
    paths = sorted(folder.glob("*.wav"))
    if not paths:
        raise FileNotFoundError(f"no clips in {folder}")
    clips = [sf.read(p, dtype="float32") for p in paths]
    return np.stack([c for c, _ in clips]), clips[0][1]
