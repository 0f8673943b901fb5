"""The raw data stage: make sure the configured sources exist and version them.

The data version is DVC's hash of ``data/`` (read from ``data.dvc``) when DVC tracks the
data folder; for data outside it (tests, ad-hoc folders) a content hash of the sources.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from foley_core.core.config import PROJECT_ROOT, CaptionedCsvSource, Profile
from foley_core.core.hashing import folder_hash
from foley_core.data.sources import Discovery, discover_all
from foley_core.data.versioning import DvcError, dvc_file_for, dvc_subtree_version, read_dvc_hash, track

log = logging.getLogger(__name__)


@dataclass
class RawDataSnapshot:
    version: str
    versioned_by: str  # "dvc" or "content-hash"
    discovery: Discovery
    warnings: list[str] = field(default_factory=list)

    def files_per_class(self) -> dict[str, int]:
        return dict(sorted(Counter(f.label for f in self.discovery.files).items()))

    def rejected_per_reason(self) -> dict[str, int]:
        return dict(sorted(Counter(r.reason for r in self.discovery.rejected).items()))


def _source_roots(profile: Profile) -> list[Path]:
    roots = []
    for source in profile.data.sources:
        path = profile.resolve(source.path)
        roots.append(path.parent if isinstance(source, CaptionedCsvSource) else path)
    return roots


def dvc_tracks_data_dir(profile: Profile) -> bool:
    data_dir = profile.resolve(profile.paths.data_dir)
    return profile.dvc.enabled and data_dir.parent == PROJECT_ROOT and (PROJECT_ROOT / ".dvc").is_dir()


def snapshot_raw_data(profile: Profile) -> RawDataSnapshot:
    """Create missing synthetic sources, scan every source, and version the raw data."""
    discovery = discover_all(profile, create_synthetic=True)
    warnings: list[str] = list(discovery.warnings)  # e.g. a skipped optional captions.csv (already logged)
    if dvc_tracks_data_dir(profile):
        data_dir = profile.resolve(profile.paths.data_dir)
        if profile.dvc.auto_track:
            try:
                whole = track(data_dir, remote=profile.dvc.remote)
                return RawDataSnapshot(_profile_version(profile, data_dir, whole), "dvc", discovery, warnings)
            except DvcError as exc:
                warnings.append(f"DVC tracking failed, falling back to data.dvc / content hash: {exc}")
                log.warning(warnings[-1])
        recorded = read_dvc_hash(dvc_file_for(data_dir))
        if recorded:
            return RawDataSnapshot(_profile_version(profile, data_dir, recorded), "dvc", discovery, warnings)
    digest = "-".join(folder_hash(root)[:12] for root in _source_roots(profile) if root.exists())
    return RawDataSnapshot(digest or "empty", "content-hash", discovery, warnings)


def _profile_version(profile: Profile, data_dir: Path, whole: str) -> str:
    """The DVC version of this profile's sources only (another profile's corpus in data/ does
    not move it); the whole folder's hash when DVC's manifest is not in the local cache."""
    return dvc_subtree_version(data_dir, _source_roots(profile)) or whole


def recorded_data_version(profile: Profile) -> str | None:
    """The version ``snapshot_raw_data`` would give now, from what ``data.dvc`` records (nothing
    is re-hashed or added to DVC): what the data sensor compares with the last snapshot."""
    if dvc_tracks_data_dir(profile):
        data_dir = profile.resolve(profile.paths.data_dir)
        whole = read_dvc_hash(dvc_file_for(data_dir))
        return _profile_version(profile, data_dir, whole) if whole else None
    roots = [root for root in _source_roots(profile) if root.exists()]
    return "-".join(folder_hash(root)[:12] for root in roots) or None
