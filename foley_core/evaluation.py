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
    """Messages for each mean metric that is missing or not finite, or that got worse than
    ``accepted`` by more than ``margin`` (relative). NaN never passes (``nan > limit`` is False,
    so it must be refused explicitly)."""
    problems = []
    for key in keys:
        new = current.get(key)
        if new is None or not np.isfinite(new):
            problems.append(f"mean {key} is {new}: not a finite number")
            continue
        old = (accepted or {}).get(key)
        if old is None or not np.isfinite(old):
            continue  # nothing accepted yet to compare with
        limit = old + margin * abs(old)
        if new > limit:
            problems.append(f"mean {key} {new:.4g} > accepted {old:.4g} + {margin:.0%} margin")
    return problems


def gate_problems(metrics: dict, accepted: dict | None, margin: float, export_problems: int) -> list[str]:
    """The promotion rule, in one place: the blocking checks and ``promote`` both apply it.
    Empty list = the model may be promoted."""
    problems = [f"the DCASE export has {export_problems} format problem(s)"] if export_problems else []
    return problems + regression(metrics.get("mean", {}), accepted and accepted.get("mean"), margin)


def read_json(path: Path) -> dict | None:
    import json

    return json.loads(path.read_text()) if path.is_file() else None
