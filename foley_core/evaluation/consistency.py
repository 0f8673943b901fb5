"""Distances of generated to real clips per class, and class consistency (closer to its own class than to any other)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from foley_core.metrics import kad
from foley_core.metrics.distances import fad, median_bandwidth


def distance_row(generated: np.ndarray, reference: np.ndarray) -> dict:
    """FAD and KAD of generated embeddings to reference embeddings. KAD's RBF bandwidth is the
    median heuristic on the *reference* alone, as in `foley evaluate`: every system scored
    against one reference shares one kernel, so the ablation, the gate and the CLI compare
    like with like."""
    return {"fad": float(fad(generated, reference)),
            "kad": float(kad(generated, reference, bandwidth=median_bandwidth(reference)))}


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


