"""The official DCASE 2023 Task 7 FAD (VGGish against the challenge's statistics), or why it was skipped."""

from __future__ import annotations

import logging
from pathlib import Path

from foley_core.metrics import evaluate_dirs, make_embedder
from foley_core.metrics.official import OFFICIAL_FOLDER_NAMES

# Published DCASE 2023 Task 7 Track A figures (official VGGish FAD on the evaluation set, mean over 7 classes).
PUBLISHED_FAD = {"winning system (Yuan et al.)": 4.765, "DCASE baseline": 9.7}



def official_fad_skip_reason(profile) -> str | None:
    """Why the official DCASE FAD cannot be computed for this profile, in words for the metrics and the
    report (None: it can). A configured VGGish file that is missing is said out loud, never silently skipped."""
    weights = profile.evaluation.vggish_weights
    if weights is None:
        return "evaluation.vggish_weights is not set"
    if not profile.resolve(weights).is_file():
        return (f"VGGish weights {profile.resolve(weights)} not found (evaluation.vggish_weights): put torchvggish's "
                "vggish-10086976.pth there")
    if not any(c in OFFICIAL_FOLDER_NAMES for c in profile.class_names):
        return "no class of this profile has official DCASE statistics"
    return None


def official_fad(profile, dcase_dir: Path) -> dict | None:
    """Per-class FAD of the exported clips against the official DCASE evaluation statistics
    (VGGish, the challenge's own pre-processing), when VGGish weights are configured and present;
    None otherwise (``official_fad_skip_reason`` says why)."""
    reason = official_fad_skip_reason(profile)
    if reason is not None:
        if profile.evaluation.vggish_weights is not None:  # asked for and not possible: a warning, not silence
            logging.getLogger(__name__).warning("official DCASE FAD skipped: %s", reason)
        return None
    weights = profile.evaluation.vggish_weights
    classes = [c for c in profile.class_names if c in OFFICIAL_FOLDER_NAMES]
    result = evaluate_dirs(dcase_dir, "official", make_embedder("vggish", vggish_weights=profile.resolve(weights)), classes)
    return {"per_class": {c: row["fad"] for c, row in result["classes"].items()},
            "mean_fad": result["mean"]["fad"], "published_mean_fad": PUBLISHED_FAD}


