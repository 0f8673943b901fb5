"""Pipeline evaluation: per-class distances of generated clips to held-out real clips, class
consistency, and the selection x adapter ablation (the gate on them is ``foley_core.registry``).
Distances use a pluggable embedder (log-mel statistics offline by default).

Modules: ``consistency`` (distances and class consistency), ``official`` (the DCASE FAD) and
``generation`` (the evaluation stage)."""

from foley_core.evaluation.consistency import class_consistency, consistent_classes, distance_row
from foley_core.evaluation.generation import (
    evaluate_generation,
    make_profile_embedder,
    read_json,
    reference_description,
    reference_rows,
)
from foley_core.evaluation.official import PUBLISHED_FAD, official_fad, official_fad_skip_reason

__all__ = ["PUBLISHED_FAD", "class_consistency", "consistent_classes", "distance_row", "evaluate_generation",
           "make_profile_embedder", "official_fad", "official_fad_skip_reason", "read_json", "reference_description",
           "reference_rows"]
