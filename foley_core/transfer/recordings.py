"""The user's recordings for a fine-tune: ingested, quarantined where bad, split by recording."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from foley_core.core.config import Profile
from foley_core.core.hashing import json_hash
from foley_core.core.layout import layout
from foley_core.data.ingest import ingest, load_manifest
from foley_core.data.own import snapshot_recordings
from foley_core.data.recordings import split_by_recording
from foley_core.data.sources import discover_source, source_from_path

log = logging.getLogger(__name__)


@dataclass
class SourceData:
    name: str
    root: Path
    manifest: pd.DataFrame  # target-class clips, split by recording
    classes: list[str]  # the profile's classes the recordings hold (with train and held-out clips)
    version: str  # content of the clips and their split
    quarantined: list = field(default_factory=list)
    data_version: str = ""  # the recordings' DVC version (or content hash): foley_core.data.own

    @property
    def train(self) -> pd.DataFrame:
        return self.manifest[self.manifest["split"] == "train"].reset_index(drop=True)

    @property
    def val(self) -> pd.DataFrame:
        return self.manifest[self.manifest["split"] == "val"].reset_index(drop=True)


# ---------------------------------------------------------------- data
def ingest_recordings(profile: Profile, source: Path) -> SourceData:
    """Ingest ``source`` into ``artifacts/<profile>/ingest/<name>/`` and split it by recording."""
    source = Path(source)
    if not source.is_dir():
        raise FileNotFoundError(f"{source}: expected a folder of recordings in the <Class>/<file> layout")
    name = source.resolve().name
    snapshot = snapshot_recordings(profile, source)  # under DVC: mirrored into data/own/<name>, tracked
    source = snapshot.path
    found = discover_source(source_from_path(source), profile)
    out = layout(profile).ingest(name)
    result = ingest(found.files, found.rejected, out, profile)
    manifest = load_manifest(out)
    manifest = manifest[manifest["class"].isin(profile.class_names)]
    if manifest.empty:
        raise ValueError(f"{source} holds no usable recording of the profile's classes "
                         f"({', '.join(profile.class_names)}); {len(result.quarantined)} file(s) quarantined")
    manifest = split_by_recording(manifest, profile.transfer.val_fraction, root=source)
    splits = manifest.groupby("class")["split"].agg(set)
    classes = [c for c in profile.class_names if c in splits and {"train", "val"} <= splits[c]]
    skipped = sorted(set(splits.index) - set(classes))
    if skipped:
        log.warning(f"{', '.join(skipped)}: one recording only, so nothing to hold out; not fine-tuned on")
    if not classes:
        raise ValueError(f"{source}: no class has two or more recordings, so none can be held out to check the "
                         "fine-tune against (files named <name>-1.wav, <name>-2.wav count as one recording)")
    manifest = manifest[manifest["class"].isin(classes)].reset_index(drop=True)
    clips = sorted(zip(manifest["content_hash"], manifest["split"], manifest["caption"]))  # what the fine-tune learns from
    version = json_hash(clips, sort_keys=False)[:16]
    return SourceData(name, source.resolve(), manifest, classes, version, list(result.quarantined), snapshot.version)

