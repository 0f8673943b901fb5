"""The one way a class's clips are made for a submission: the generation asset and
`foley export-dcase` both call ``generate_selected``, so both apply the same selection,
multi-target mode included."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Callable

import numpy as np

from foley_core.clap import EmbeddingCache
from foley_core.clap.cache import cached_model_version
from foley_core.core.config import Profile
from foley_core.core.layout import CLASS_MODELS, PIPELINE_CONFIG, layout
from foley_core.data.ingest import load_manifest
from foley_core.generation.calibration import calibrated_selection
from foley_core.generation.generate import ClassGeneration, generate_class
from foley_core.generation.pipeline import FoleyPipeline, place
from foley_core.generation.prompts import chosen_prompt

log = logging.getLogger(__name__)


def class_targets(pipeline: FoleyPipeline, profile: Profile, label: str, n_clips: int) -> np.ndarray | None:
    """Multi-target mode (a class with no fixed CLAP floor, as MovingMotorVehicle in the winning
    system): slot i is scored against the CLAP audio embedding of real training clip i mod n.
    Only the training split: the evaluation measures the class's FAD against its held-out (val)
    clips, and clips selected to sit near those would be scored partly against their own targets.
    The targets are embedded by the CLAP that selects: the profile's embedding cache when that is
    the pipeline's CLAP, else (a fine-tune's adapted CLAP) a cache of that CLAP's own, filled once.
    None for classes with a floor, or (with a warning) when the class has no training clip."""
    if profile.class_config(label).clap_floor is not None:
        return None
    where = layout(profile)
    clap = pipeline.scoring_clap()  # ScoringUnavailable when there is no CLAP: multi-target needs one
    try:
        rows = load_manifest(where.dataset, [label])
    except FileNotFoundError as exc:
        log.warning(f"{label}: no dataset to take targets from ({exc}); scoring against the prompt")
        return None
    rows = rows[rows["split"] == "train"]  # never the held-out clips the evaluation compares with
    if rows.empty:
        log.warning(f"{label}: no training clips in the dataset; scoring against the prompt")
        return None
    hashes = rows["content_hash"]
    if cached_model_version(where.embeddings(label)) == clap.version:
        try:
            cached = EmbeddingCache(where.embeddings(label), clap.version).audio(hashes)  # the clap_embeddings asset's
            return cached[np.arange(n_clips) % len(cached)]
        except KeyError:  # clips the asset has not embedded: done below, beside its cache, never inside it
            pass
    cache = EmbeddingCache(where.embeddings_for_clap(label, clap.version), clap.version)  # each CLAP its own
    cache.update_audio(clap, rows)  # embeds only what this CLAP has not embedded yet
    cached = cache.audio(hashes)
    return cached[np.arange(n_clips) % len(cached)]


def generate_selected(pipeline: FoleyPipeline, profile: Profile, label: str, n_clips: int,
                      progress: Callable[[int, int], None] | None = None, stage: str | None = None) -> ClassGeneration:
    """``n_clips`` selected clips of a class, with the class's chosen prompt
    (``generation.prompts.chosen_prompt``) and its selection settings: configured, or calibrated on
    its training clips under this pipeline's CLAP (``generation.calibration.calibrated_selection``)."""
    targets = class_targets(pipeline, profile, label, n_clips)
    clap = pipeline.scoring_clap() if profile.generation.calibrate_selection else None
    selection = calibrated_selection(profile, label, clap.version if clap is not None else None)
    return generate_class(pipeline, profile, label, n_clips, targets=targets, progress=progress, stage=stage,
                          prompt=chosen_prompt(profile, label), selection=selection)


def pipeline_for_class(default: FoleyPipeline, folder: Path | None, profile: Profile, label: str,
                       loaded: dict[str, FoleyPipeline] | None = None) -> FoleyPipeline:
    """The pipeline a class generates with: ``default``, or, for a class routed to another model,
    that model's pipeline saved in the promoted ``folder`` (``models/<name>/``). The routing the
    folder records (``class_models`` in its pipeline.json) wins: a fine-tuned version sends the
    classes it was not fine-tuned on to its base. Otherwise the profile's ``ldm.models`` decide."""
    if folder is None:
        return default
    model = _recorded_routes(Path(folder)).get(label, profile.model_of(label))
    if model is None:
        return default
    loaded = {} if loaded is None else loaded
    if model not in loaded:
        sub = Path(folder) / CLASS_MODELS / model
        if not sub.is_dir():
            raise FileNotFoundError(f"{label} generates with model {model!r} (ldm.models) but {folder} has no "
                                    f"{CLASS_MODELS}/{model}/: promote a model trained with this profile")
        loaded[model] = place(FoleyPipeline.from_pretrained(sub, profile), profile.generation)
    return loaded[model]


def _recorded_routes(folder: Path) -> dict[str, str | None]:
    """``{class: model}`` as the promoted folder records it; a fine-tuned version lists every class
    (None = the folder's own model), so the profile's routing no longer applies to it."""
    path = folder / PIPELINE_CONFIG
    config = json.loads(path.read_text()) if path.is_file() else {}
    routes = config.get("class_models") or {}
    if config.get("transfer"):
        return {label: routes.get(label) for label in set(routes) | set(config["transfer"]["classes"])}
    return routes
