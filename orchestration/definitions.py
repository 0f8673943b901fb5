"""Dagster definitions for the Foley pipeline (``dagster dev -m orchestration.definitions``).

The profile comes from ``FOLEY_PROFILE`` (default ``cpu``): partitions follow its classes.
"""

from __future__ import annotations

import json
import os

from dagster import AssetSelection, Definitions, define_asset_job

import foley_core  # noqa: F401  (applies offline defaults before anything else loads)
from foley_core.config import load_profile
from orchestration.assets.data import build_data_assets
from orchestration.assets.generation import build_generation_assets
from orchestration.assets.models import build_model_assets
from orchestration.automation import retrain_on_data_change, weekly_retraining
from orchestration.resources import FoleyProfile

# A Dagster job runs one partitioning at a time, so the graph has three jobs; the whole
# graph runs as a backfill ("Materialize all" in the UI, the schedule, the sensor) or `foley run`.
JOBS = {
    "foley_models": "unpartitioned stages: CLAP, LDM, adapter, evaluation, promotion",
    "foley_data_per_class": "per dataset class: ingestion and CLAP embeddings",
    "foley_generation_per_class": "per target class: candidates, selection, DCASE export",
}


def build_definitions(profile_name: str | None = None, overrides: dict | None = None) -> Definitions:
    profile_name = profile_name or os.environ.get("FOLEY_PROFILE", "cpu")
    profile = load_profile(profile_name, overrides)
    raw_foley_data, foley_dataset = build_data_assets(profile)
    model_assets = build_model_assets(profile, foley_dataset)
    clap_embeddings, finetuned_adapter = model_assets[1], model_assets[3]
    generation_assets, checks = build_generation_assets(profile, finetuned_adapter, clap_embeddings)
    return Definitions(
        assets=[raw_foley_data, foley_dataset, *model_assets, *generation_assets],
        asset_checks=checks,
        jobs=[
            define_asset_job("foley_models", selection=AssetSelection.assets(
                raw_foley_data, model_assets[0], model_assets[2], finetuned_adapter, *generation_assets[2:]),
                description=JOBS["foley_models"]),
            define_asset_job("foley_data_per_class", selection=AssetSelection.assets(foley_dataset, clap_embeddings),
                             description=JOBS["foley_data_per_class"]),
            define_asset_job("foley_generation_per_class", selection=AssetSelection.assets(*generation_assets[:2]),
                             description=JOBS["foley_generation_per_class"]),
        ],
        schedules=[weekly_retraining],
        sensors=[retrain_on_data_change],
        resources={"foley": FoleyProfile(name=profile_name, overrides_json=json.dumps(overrides or {}))},
    )


defs = build_definitions()
