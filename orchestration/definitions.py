"""Dagster definitions for the Foley pipeline (``dagster dev -m orchestration.definitions``).

The profile comes from ``FOLEY_PROFILE`` (default ``cpu``); ``FOLEY_OVERRIDES`` (JSON, optional)
is deep-merged over it. Asset keys carry the profile (``cpu/clap_model``), so profiles never
share a history in one instance. ``FOLEY_EXECUTOR=celery`` runs the jobs' steps on Celery workers
(``orchestration.celery_executor``, docs/scaling.md); the default executes them in the run's process.
"""

from __future__ import annotations

import json
import os

from dagster import AssetSelection, Definitions, define_asset_job

import foley_core  # noqa: F401  (applies offline defaults before anything else loads)
from foley_core.core.config import load_profile
from orchestration.assets.graph import asset_prefix, build_assets
from orchestration.automation import SNAPSHOT_JOB, data_change_sensor, retrain_sensor, weekly_retraining
from orchestration.celery_executor import executor_config, foley_celery_executor, selected
from orchestration.resources import ArtifactIOManager, FoleyProfile

# A Dagster job runs one partitioning at a time, so the graph has these jobs (selected by asset
# name); the whole graph runs through `foley run`, "Materialize all" in the UI, or automation.
JOBS = {
    SNAPSHOT_JOB: (["raw_foley_data"], "snapshot and version the raw data; automation retrains what changed"),
    "foley_models": (["clap_model", "pretrained_ldm", "finetuned_adapter", "evaluation_metrics",
                      "promoted_pipeline", "foley_report"],
                     "unpartitioned stages: CLAP, LDM, adapter, evaluation, promotion, report"),
    "foley_data_per_class": (["foley_dataset", "clap_embeddings"], "per dataset class: ingestion and CLAP embeddings"),
    "foley_generation_per_class": (["generated_candidates", "selected_outputs"],
                                   "per target class: candidates, selection, DCASE export"),
}
# ... and, when the profile names transfer.source, the transfer step's assets in the same jobs: the data
# sensor and the weekly schedule snapshot the recordings with the raw data
TRANSFER_JOB_ASSETS = {SNAPSHOT_JOB: ["own_recordings"], "foley_models": ["finetuned_model"]}


def build_definitions(profile_name: str | None = None, overrides: dict | None = None) -> Definitions:
    profile_name = profile_name or os.environ.get("FOLEY_PROFILE", "cpu")
    if overrides is None:
        overrides = json.loads(os.environ.get("FOLEY_OVERRIDES") or "{}")
    profile = load_profile(profile_name, overrides)
    assets, checks = build_assets(profile)
    extra = TRANSFER_JOB_ASSETS if profile.transfer.source else {}
    jobs = [define_asset_job(name, selection=AssetSelection.assets(
                *[[asset_prefix(profile), a] for a in [*names, *extra.get(name, [])]]), description=description)
            for name, (names, description) in JOBS.items()]
    settings = {"name": profile_name, "overrides_json": json.dumps(overrides)}
    return Definitions(
        assets=assets,
        asset_checks=checks,
        jobs=jobs,
        schedules=[weekly_retraining()],
        sensors=[data_change_sensor(profile), retrain_sensor(profile, assets)],
        resources={"foley": FoleyProfile(**settings), "io_manager": ArtifactIOManager(**settings)},
        executor=foley_celery_executor.configured(executor_config()) if selected() else None,
    )


defs = build_definitions()
