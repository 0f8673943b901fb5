"""Candidate selection, as in the paper and the winning DCASE 2023 code.

Each output slot gets N candidates generated in one batch; each is scored by the cosine
between its CLAP audio embedding and a target embedding (the prompt's text embedding, or in
multi-target mode a slot's own target clip). The best candidate within [floor, ceiling) wins.
Scores at or above the ceiling (0.99) are rejected: they are near-copies of a target. A
ceiling of None turns that off, for a CLAP whose distinct real clips of one class already sit
above it (then the ceiling marks nothing as a copy; see ``generation.clap_ceiling``).
If no candidate qualifies, the slot is regenerated with fresh seeds, at most
``max_regenerations`` times; in multi-target mode the floor is relaxed by ``relax_step``
after every ``relax_every`` failures. When every attempt fails, the best candidate seen is
kept and marked ``accepted=False`` so nothing is silently dropped.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np


@dataclass
class SlotSelection:
    """The outcome for one output slot: which candidate of which attempt won, and why."""

    attempt: int
    index: int
    score: float
    accepted: bool
    floor: float | None
    scores: list[list[float]] = field(default_factory=list)  # every attempt's candidate scores

    @property
    def all_scores(self) -> list[float]:
        return [s for attempt in self.scores for s in attempt]


def best_candidate(scores: np.ndarray, floor: float | None, ceiling: float | None) -> int | None:
    """Index of the highest score in [floor, ceiling), or None if none qualifies (None: no bound)."""
    ok = scores < (np.inf if ceiling is None else ceiling)
    if floor is not None:
        ok &= scores >= floor
    if not ok.any():
        return None
    return int(np.flatnonzero(ok)[np.argmax(scores[ok])])


class SlotSelector:
    """Selection state of one output slot across regeneration attempts.

    Drive it with ``offer(scores)`` once per attempt (True = a candidate qualified), then
    ``result()``. Many slots can be driven together so their attempts share one batch.
    """

    def __init__(self, floor: float | None, ceiling: float | None = 0.99, relax_every: int = 0, relax_step: float = 0.05):
        self.floor, self.ceiling = floor, np.inf if ceiling is None else ceiling
        self.relax_every, self.relax_step = relax_every, relax_step
        self.history: list[np.ndarray] = []
        self.choice: SlotSelection | None = None

    @property
    def done(self) -> bool:
        return self.choice is not None

    def offer(self, scores) -> bool:
        scores = np.asarray(scores, dtype=np.float64)
        self.history.append(scores)
        index = best_candidate(scores, self.floor, self.ceiling)
        if index is not None:
            attempt = len(self.history) - 1
            self.choice = SlotSelection(attempt, index, float(scores[index]), True, self.floor, self._scores())
            return True
        if self.relax_every and self.floor is not None and len(self.history) % self.relax_every == 0:
            self.floor -= self.relax_step
        return False

    def result(self) -> SlotSelection:
        if self.choice is not None:
            return self.choice
        # Nothing qualified: keep the best below the ceiling (or the overall best) and say so.
        flat = np.concatenate(self.history)
        below = np.where(flat < self.ceiling, flat, -np.inf)
        pick = int(np.argmax(below)) if np.isfinite(below).any() else int(np.argmax(flat))
        sizes = np.cumsum([len(h) for h in self.history])
        attempt = int(np.searchsorted(sizes, pick, side="right"))
        index = pick - (int(sizes[attempt - 1]) if attempt else 0)
        return SlotSelection(attempt, index, float(flat[pick]), False, self.floor, self._scores())

    def _scores(self) -> list[list[float]]:
        return [h.tolist() for h in self.history]


def select_slot(
    score_attempt: Callable[[int], np.ndarray],
    *,
    floor: float | None,
    ceiling: float | None = 0.99,
    max_regenerations: int = 0,
    relax_every: int = 0,
    relax_step: float = 0.05,
) -> SlotSelection:
    """One slot: run attempts (0, 1, ...) until a candidate qualifies.

    ``score_attempt(attempt)`` generates that attempt's candidates (seeded by the attempt
    number, so a result can be reproduced) and returns their scores.
    """
    selector = SlotSelector(floor, ceiling, relax_every, relax_step)
    for attempt in range(max_regenerations + 1):
        if selector.offer(score_attempt(attempt)):
            break
    return selector.result()
