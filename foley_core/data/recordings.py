"""Held-out splits by recording, for a user's own recordings.

Real collections hold several files cut from one recording: UrbanSound8K's
``100652-3-0-0.wav`` and ``100652-3-0-1.wav`` are slices of Freesound recording 100652, a
game's ``dirt_footstep.1.ogg`` .. ``.3.ogg`` are takes of one session, a keystroke dataset's
``key_0.wav`` .. ``key_9.wav`` are presses cut from one take. A split by file puts slices of
one recording on both sides, and a model that memorised the training slices then looks good
on "held-out" clips that are the same recording. So files are grouped by recording first
and whole recordings are held out.

The recording of a file is its name with trailing take / slice numbers removed (``-3-0-1``,
``.2``, ``_7``), unless a ``recording`` column in a ``MANIFEST.csv`` at the source's root
says otherwise. Which recordings are held out is decided by a hash of the recording's name:
stable when files are added, and the same in every process that splits the same folder.
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from foley_core.core.hashing import stable_seed

MANIFEST = "MANIFEST.csv"  # optional, at a source's root: columns file (relative path) and recording
_TRAILING_INDEX = re.compile(r"(?:[-_. ]\d+)+$")


def recording_of(path: str | Path) -> str:
    """The recording a file was cut from, by name: trailing take / slice numbers removed."""
    stem = Path(path).stem
    base = _TRAILING_INDEX.sub("", stem)
    return base or stem  # a name that is only numbers is its own recording


def recordings_from_manifest(root: Path) -> dict[str, str]:
    """``{absolute file path: recording}`` from ``root/MANIFEST.csv`` when it has a recording column."""
    path = Path(root) / MANIFEST
    if not path.is_file():
        return {}
    table = pd.read_csv(path, dtype=str)
    if not {"file", "recording"} <= set(table.columns):
        return {}
    return {str((Path(root) / f).resolve()): r for f, r in zip(table["file"], table["recording"]) if isinstance(r, str)}


def _rank(label: str, recording: str) -> int:
    return stable_seed(label, recording, bits=48)


def split_by_recording(manifest: pd.DataFrame, val_fraction: float, root: Path | None = None) -> pd.DataFrame:
    """The manifest with ``recording`` set and ``split`` re-drawn so that every recording lies
    wholly in train or wholly in val. Per class, the recordings first in hash order are held out
    until they hold about ``val_fraction`` of the class's clips; a class with two or more
    recordings keeps at least one on each side, a class with one recording trains on it."""
    out = manifest.copy()
    named = recordings_from_manifest(root) if root is not None else {}
    out["recording"] = [named.get(str(Path(p).resolve()), recording_of(p)) for p in out["source_path"]]
    out["split"] = "train"
    for label, rows in out.groupby("class"):
        sizes = rows.groupby("recording").size()
        if len(sizes) < 2:
            continue
        order = sorted(sizes.index, key=lambda r: _rank(str(label), r))
        held, count = [], 0
        for recording in order[:-1]:  # the last one always trains
            if held and count + sizes[recording] / 2 > val_fraction * len(rows):
                break
            held.append(recording)
            count += sizes[recording]
        out.loc[rows.index[rows["recording"].isin(held)], "split"] = "val"
    return out
