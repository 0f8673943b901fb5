"""Per-class generation with CLAP selection: the clips a user keeps.

All pending slots of a class share one batched pipeline call per attempt; a slot whose best
candidate misses the floor (or hits the 0.99 ceiling) is regenerated with fresh seeds, at
most ``generation.max_regenerations`` times. Multi-target mode (a class without a fixed
floor, e.g. MovingMotorVehicle, when target embeddings are given) scores each slot against
its own target clip's CLAP audio embedding and relaxes the floor by 0.05 after every 3 failures.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from foley_core.core.config import Profile
from foley_core.core.hashing import stable_seed
from foley_core.core.progress import ProgressReporter
from foley_core.generation.pipeline import FoleyPipeline
from foley_core.generation.selection import SlotSelection, SlotSelector

MULTI_TARGET_START_FLOOR = 0.5  # official code starts high and relaxes by 0.05 every 3 failures
MAX_BATCH_ROWS = 32  # candidates per UNet batch: bounds memory, keeps batching's speed-up


def slot_seed(base_seed: int, class_name: str, slot: int) -> int:
    """The seed of one output slot of a class (its candidates' seeds derive from it)."""
    return stable_seed(base_seed, class_name, slot, bits=32)


@dataclass
class ClassGeneration:
    class_name: str
    prompt: str
    sample_rate: int
    selected: np.ndarray  # (n_clips, samples)
    first_candidates: np.ndarray  # (n_clips, samples): candidate 0 of attempt 0, the "no selection" baseline
    selections: list[SlotSelection] = field(default_factory=list)
    seeds: list[int] = field(default_factory=list)

    def summary(self) -> dict:
        chosen = [s.score for s in self.selections]
        every = [v for s in self.selections for v in s.all_scores]
        first = [s.scores[0][0] for s in self.selections]
        return {
            "clips": len(self.selections),
            "mean_selected_score": float(np.mean(chosen)),
            "mean_candidate_score": float(np.mean(every)),
            "mean_first_candidate_score": float(np.mean(first)),
            "accepted": int(sum(s.accepted for s in self.selections)),
            "regenerations": int(sum(len(s.scores) - 1 for s in self.selections)),
        }


def generate_class(pipeline: FoleyPipeline, profile: Profile, class_name: str, n_clips: int, *,
                   targets: np.ndarray | None = None, progress: Callable[[int, int], None] | None = None,
                   stage: str | None = None, prompt: str | None = None, selection: dict | None = None) -> ClassGeneration:
    """``n_clips`` selected clips of ``class_name``; live progress in the terminal (``stage`` names
    it, default "generate <class>"; see foley_core.core.progress) and ``progress(done, total)`` per clip.
    ``prompt``: the class's text (the prompt search's winner); default its first configured prompt.
    ``selection``: ``candidates``, ``floor`` and ``ceiling`` (``generation.calibration``); default the
    class's configured ones."""
    cfg = profile.class_config(class_name)
    prompt = prompt or cfg.prompts[0]
    selection = selection or {"candidates": cfg.candidates, "floor": cfg.clap_floor,
                              "ceiling": profile.generation.clap_ceiling}
    candidates = selection["candidates"]
    multi_target = targets is not None and cfg.clap_floor is None
    floor = MULTI_TARGET_START_FLOOR if multi_target else selection["floor"]
    selectors = [SlotSelector(floor, selection["ceiling"], 3 if multi_target else 0) for _ in range(n_clips)]
    seeds = [slot_seed(profile.seed, class_name, slot) for slot in range(n_clips)]
    kept: dict[tuple[int, int], np.ndarray] = {}  # (slot, attempt) -> candidates, only what selection may need
    first = np.zeros((n_clips, profile.audio.clip_samples), dtype=np.float32)
    chunk = max(1, MAX_BATCH_ROWS // candidates)
    done = 0
    reporter = ProgressReporter(stage or f"generate {class_name}", n_clips, unit="clips")
    reporter.update(0)
    try:
        for attempt in range(profile.generation.max_regenerations + 1):
            pending = [s for s in range(n_clips) if not selectors[s].done]
            if not pending:
                break
            for start in range(0, len(pending), chunk):
                slots = pending[start : start + chunk]
                out = pipeline([prompt] * len(slots), n_candidates=candidates, guidance_scale=cfg.guidance,
                               seeds=[seeds[s] for s in slots], attempt=attempt,
                               targets=targets[slots] if multi_target else None)
                reporter.update(done)  # refreshes elapsed / ETA even when no slot finished
                for row, slot in enumerate(slots):
                    kept[(slot, attempt)] = out.candidates[row]
                    if attempt == 0:
                        first[slot] = out.candidates[row, 0]
                    if selectors[slot].offer(out.scores[row]):
                        done += 1
                        reporter.update(done)
                        if progress:
                            progress(done, n_clips)
    except BaseException:
        reporter.close()
        raise
    selections = [selector.result() for selector in selectors]
    selected = np.stack([kept[(slot, s.attempt)][s.index] for slot, s in enumerate(selections)])
    reporter.finish(note=f"{sum(s.accepted for s in selections)} accepted, "
                         f"{sum(len(s.scores) - 1 for s in selections)} regenerations")
    return ClassGeneration(class_name, prompt, pipeline.sample_rate, selected, first, selections, seeds)
