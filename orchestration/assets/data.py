"""Data stage assets: raw_foley_data (DVC-versioned) -> foley_dataset (per class)."""


import base64
from collections import Counter

import numpy as np
import soundfile as sf
from dagster import (
    AssetExecutionContext,
    DataVersion,
    MaterializeResult,
    MetadataValue,
    StaticPartitionsDefinition,
    asset,
)

from foley_core.config import Profile
from foley_core.data.ingest import ingest_class, load_manifest, manifest_version
from foley_core.data.raw import snapshot_raw_data
from foley_core.data.sources import discover_all, partition_keys
from foley_core.plots import spectrogram_png
from orchestration.resources import FoleyProfile
from orchestration.versions import code_version

DATA_MODULES = ["foley_core.audio", "foley_core.data.sources", "foley_core.data.ingest"]


def dataset_dir(profile: Profile):
    return profile.artifact_dir("dataset")


def _png_markdown(png: bytes, alt: str) -> MetadataValue:
    return MetadataValue.md(f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode()})")


def build_data_assets(profile: Profile) -> list:
    class_partitions = StaticPartitionsDefinition(partition_keys(profile))

    @asset(
        group_name="data",
        code_version=code_version(profile, ["foley_core.data.raw", "foley_core.data.synth"], ["data", "audio", "seed"]),
        description="The DVC-tracked raw data (data/): synthetic corpus, DCASE dev set, captioned corpora.",
    )
    def raw_foley_data(context: AssetExecutionContext, foley: FoleyProfile) -> MaterializeResult:
        snapshot = snapshot_raw_data(foley.load())
        for warning in snapshot.warnings:
            context.log.warning(warning)
        return MaterializeResult(
            data_version=DataVersion(snapshot.version),
            metadata={
                "data_version": snapshot.version,
                "versioned_by": snapshot.versioned_by,
                "audio_files": len(snapshot.discovery.files),
                "files_per_class": MetadataValue.json(snapshot.files_per_class()),
                "rejected_at_discovery": MetadataValue.json(snapshot.rejected_per_reason()),
                "non_audio_files_ignored": len(snapshot.discovery.ignored),
            },
        )

    @asset(
        group_name="data",
        deps=[raw_foley_data],
        partitions_def=class_partitions,
        code_version=code_version(profile, DATA_MODULES, ["data", "audio", "classes"]),
        description="Normalised clip-length clips + manifest for one class; bad files quarantined with a reason.",
    )
    def foley_dataset(context: AssetExecutionContext, foley: FoleyProfile) -> MaterializeResult:
        prof = foley.load()
        label = context.partition_key
        discovery = discover_all(prof, create_synthetic=False)
        result = ingest_class(
            label,
            [f for f in discovery.files if f.label == label],
            [r for r in discovery.rejected if r.label == label],
            dataset_dir(prof),
            prof,
        )
        manifest = load_manifest(dataset_dir(prof), [label])
        metadata = {
            "files_found": result.found,
            "clips": len(result.clips),
            "clips_per_split": MetadataValue.json(dict(Counter(manifest["split"]))),
            "seconds_of_audio": float(manifest["duration_s"].sum()) if len(manifest) else 0.0,
            "quarantined_per_reason": MetadataValue.json(dict(Counter(q.reason for q in result.quarantined))),
            "path": MetadataValue.path(str(dataset_dir(prof) / label)),
        }
        if len(manifest):
            examples = [sf.read(p, dtype="float32")[0] for p in manifest["abs_path"].head(3)]
            metadata["spectrogram"] = _png_markdown(
                spectrogram_png(examples, prof.audio.sample_rate, label, prof.audio.hop_length), label
            )
        context.log.info(f"{label}: {len(result.clips)} clips, {len(result.quarantined)} quarantined")
        return MaterializeResult(
            data_version=DataVersion(manifest_version(dataset_dir(prof), label)), metadata=metadata
        )

    return [raw_foley_data, foley_dataset]
