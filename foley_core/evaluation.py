"""Pipeline evaluation: per-class distances of generated clips to held-out real clips, class
consistency, the selection x adapter ablation, and a regression gate against the last
accepted model. Distances use a pluggable embedder (log-mel statistics offline by default)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from foley_core.metrics import kad
from foley_core.metrics.distances import fad


def distance_row(generated: np.ndarray, reference: np.ndarray) -> dict:
    return {"fad": float(fad(generated, reference)), "kad": float(kad(generated, reference))}


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


def regression(current: dict, accepted: dict | None, margin: float, keys=("kad", "fad")) -> list[str]:
    """Messages for each mean metric that got worse than ``accepted`` by more than ``margin`` (relative)."""
    if not accepted:
        return []
    problems = []
    for key in keys:
        new, old = current.get(key), accepted.get(key)
        if new is None or old is None:
            continue
        limit = old + margin * abs(old)
        if new > limit:
            problems.append(f"mean {key} {new:.4g} > accepted {old:.4g} + {margin:.0%} margin")
    return problems


def read_json(path: Path) -> dict | None:
    import json

    return json.loads(path.read_text()) if path.is_file() else None
