"""A user's own recordings (``transfer.source``) under data versioning.

When DVC tracks the profile's data folder, a recordings folder outside it is mirrored into
``<data_dir>/own/<folder name>/`` (audio files and a root ``MANIFEST.csv`` / ``captions.csv``
only) and ``data/`` is tracked again, so a fine-tune records the DVC version of exactly the
recordings it learnt from, and ``dvc pull`` brings them back. The mirror is replaced whole
(``staged_dir``) and only when its content differs from the source's. A folder already inside
``data/`` is versioned where it is. Outside DVC the version is a content hash of the folder.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from foley_core.core.audio import is_audio_file
from foley_core.core.config import Profile
from foley_core.core.fsutil import staged_dir
from foley_core.core.hashing import files_hash, folder_hash
from foley_core.data.raw import dvc_tracks_data_dir
from foley_core.data.versioning import DvcError, dvc_subtree_version, run_dvc, track

log = logging.getLogger(__name__)

OWN = "own"  # <data_dir>/own/<name>/: mirrored recordings folders
ROOT_TABLES = ("MANIFEST.csv", "captions.csv")  # kept from a source's root: recording groups, captions


@dataclass
class RecordingsSnapshot:
    path: Path  # the folder to ingest: the mirror inside data/, or the source itself
    version: str
    versioned_by: str  # "dvc" or "content-hash"
    warnings: list[str] = field(default_factory=list)


def recordings_source(profile: Profile) -> Path | None:
    """``transfer.source`` as an absolute folder (relative to the project root), or None."""
    return profile.resolve(Path(profile.transfer.source)).resolve() if profile.transfer.source else None


def _data_dir(profile: Profile) -> Path:
    return profile.resolve(profile.paths.data_dir).resolve()


def _versioned_path(profile: Profile, source: Path) -> Path:
    """Where the recordings are versioned: ``source`` if inside the data folder, else its mirror."""
    data_dir = _data_dir(profile)
    return source if source.is_relative_to(data_dir) else data_dir / OWN / source.name


def _selected(root: Path) -> list[Path]:
    """What a mirror holds: audio files at any depth and the root tables (relative paths, sorted).
    Hidden files and folders are left out, as are links that lead outside ``root``."""
    real_root = root.resolve()
    chosen = []
    for path in root.rglob("*"):
        rel = path.relative_to(root)
        if any(part.startswith(".") for part in rel.parts) or not path.is_file():
            continue
        if not (is_audio_file(path) or (len(rel.parts) == 1 and path.name in ROOT_TABLES)):
            continue
        if not path.resolve().is_relative_to(real_root):
            log.warning(f"{path} resolves outside {root}: not copied into the data folder")
            continue
        chosen.append(rel)
    return sorted(chosen)


def _selection_hash(root: Path) -> str:
    """Content hash of ``_selected(root)`` (relative paths + bytes), as ``folder_hash`` makes one."""
    return files_hash(root, _selected(root))


def mirror_recordings(source: Path, target: Path) -> bool:
    """Make ``target`` hold exactly ``_selected(source)``; False when it already did (nothing copied)."""
    if target.is_dir() and folder_hash(target) == _selection_hash(source):  # same files, same bytes, nothing else
        return False
    with staged_dir(target) as staging:
        for rel in _selected(source):
            (staging / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source / rel, staging / rel)
    return True


def snapshot_recordings(profile: Profile, source: Path) -> RecordingsSnapshot:
    """Version the recordings in ``source`` (see the module notes); returns what to ingest and its version."""
    source = Path(source).resolve()
    if not source.is_dir():
        raise FileNotFoundError(f"{source}: expected a folder of recordings in the <Class>/<file> layout")
    if not dvc_tracks_data_dir(profile):
        return RecordingsSnapshot(source, folder_hash(source)[:16], "content-hash")
    data_dir = _data_dir(profile)
    if data_dir.is_relative_to(source):
        raise ValueError(f"{source} holds the data folder {data_dir}: name the recordings folder itself")
    path = _versioned_path(profile, source)
    if path != source and mirror_recordings(source, path):
        log.info(f"recordings {source} mirrored into {path}")
    warnings: list[str] = []
    if profile.dvc.auto_track:
        try:
            track(data_dir, push=False)
        except DvcError as exc:
            warnings.append(f"DVC tracking of {path} failed, versioned by content hash: {exc}")
            log.warning(warnings[-1])
        else:
            try:  # a push that fails leaves data.dvc recording the recordings: still their DVC version
                run_dvc("push", *(["-r", profile.dvc.remote] if profile.dvc.remote else []), cwd=data_dir.parent)
            except DvcError as exc:
                warnings.append(f"DVC push failed (the recordings are tracked, not pushed): {exc}")
                log.warning(warnings[-1])
            version = dvc_subtree_version(data_dir, [path])
            if version:
                return RecordingsSnapshot(path, version, "dvc", warnings)
    return RecordingsSnapshot(path, _selection_hash(path)[:16], "content-hash", warnings)


def recorded_recordings_version(profile: Profile) -> str | None:
    """The version ``snapshot_recordings`` would give the profile's ``transfer.source`` now, from
    what ``data.dvc`` records (nothing is copied or added to DVC): what the data sensor compares
    with the last snapshot. Outside DVC, the source's content hash. None when there is nothing."""
    source = recordings_source(profile)
    if source is None or not source.is_dir():
        return None
    if not dvc_tracks_data_dir(profile):
        return folder_hash(source)[:16]
    if profile.dvc.auto_track:
        return dvc_subtree_version(_data_dir(profile), [_versioned_path(profile, source)])
    return _selection_hash(source)[:16]
