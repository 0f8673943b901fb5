"""Generated clips on disk: ``<root>/<Class>/{selected,first}/NNN.wav`` (model rate) + ``selection.json``.

A class folder always holds exactly one generation: it is written aside and swapped in whole, so
clips of an earlier, larger generation never linger and a killed save leaves the previous one."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import soundfile as sf

from foley_core.core.audio import write_text_atomic, write_wav_atomic
from foley_core.core.fsutil import staged_dir
from foley_core.core.layout import SELECTION
from foley_core.generation.generate import ClassGeneration


def save_class_generation(gen: ClassGeneration, folder: Path) -> dict:
    record = {
        "class": gen.class_name, "prompt": gen.prompt, "sample_rate": gen.sample_rate, "summary": gen.summary(),
        "slots": [{"seed": seed, "attempt": s.attempt, "index": s.index, "score": s.score, "accepted": s.accepted,
                   "floor": s.floor, "scores": s.scores} for seed, s in zip(gen.seeds, gen.selections)],
    }  # fmt: skip
    with staged_dir(folder) as staging:
        for kind, clips in (("selected", gen.selected), ("first", gen.first_candidates)):
            for i, clip in enumerate(clips):
                write_wav_atomic(staging / kind / f"{i:03d}.wav", clip, gen.sample_rate)
        write_text_atomic(staging / SELECTION, json.dumps(record, indent=2))
    return record


def load_clips(folder: Path) -> tuple[np.ndarray, int]:
    paths = sorted(folder.glob("*.wav"))
    if not paths:
        raise FileNotFoundError(f"no clips in {folder}")
    clips = [sf.read(p, dtype="float32") for p in paths]
    return np.stack([c for c, _ in clips]), clips[0][1]
