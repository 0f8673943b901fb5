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

A split by recording still keeps one collection's microphones and noise floor on both sides,
and a fine-tune that learnt the collection rather than the sound looks good on it (issue 25).
So where a class's files come from two or more collections (the first word of the manifest's
``source`` column: a dataset such as ``UrbanSound8K``, a package, a repository), whole
collections are held out instead, smallest first: the gate then measures the class on sound
from a source the fine-tune never heard. ``held_out_by`` says which rule split each class.
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


def _manifest_column(root: Path, column: str) -> dict[str, str]:
    """``{absolute file path: value}`` of ``column`` in ``root/MANIFEST.csv``; empty without the file or column."""
    path = Path(root) / MANIFEST
    if not path.is_file():
        return {}
    table = pd.read_csv(path, dtype=str)
    if not {"file", column} <= set(table.columns):
        return {}
    return {str((Path(root) / f).resolve()): v for f, v in zip(table["file"], table[column]) if isinstance(v, str)}


def recordings_from_manifest(root: Path) -> dict[str, str]:
    """``{absolute file path: recording}`` from ``root/MANIFEST.csv`` when it has a recording column."""
    return _manifest_column(root, "recording")


def collection_of(source: str) -> str:
    """The collection a manifest's ``source`` names: its first word (``UrbanSound8K fold 2 fsID 100652``
    -> ``UrbanSound8K``, ``ESC-50 fold 1; ...`` -> ``ESC-50``); empty when it names none."""
    words = str(source).split()
    return words[0].rstrip(";,") if words else ""


def collections_from_manifest(root: Path) -> dict[str, str]:
    """``{absolute file path: collection}`` from ``root/MANIFEST.csv`` when it has a source column."""
    return {path: collection_of(source) for path, source in _manifest_column(root, "source").items()
            if collection_of(source)}


def _rank(label: str, recording: str) -> int:
    return stable_seed(label, recording, bits=48)


def split_by_recording(manifest: pd.DataFrame, val_fraction: float, root: Path | None = None) -> pd.DataFrame:
    """The manifest with ``recording``, ``collection`` and ``held_out_by`` set and ``split`` re-drawn
    so that every recording lies wholly in train or wholly in val. A class whose files come from
    two or more collections holds out whole collections, smallest first, until about ``val_fraction``
    of its clips (at least one collection, never the largest). Otherwise the recordings first in hash
    order are held out until they hold about ``val_fraction`` of the class's clips; a class with two
    or more recordings keeps at least one on each side, a class with one recording trains on it."""
    out = manifest.copy()
    named = recordings_from_manifest(root) if root is not None else {}
    collections = collections_from_manifest(root) if root is not None else {}
    out["recording"] = [named.get(str(Path(p).resolve()), recording_of(p)) for p in out["source_path"]]
    out["collection"] = [collections.get(str(Path(p).resolve()), "") for p in out["source_path"]]
    out["split"] = "train"
    out["held_out_by"] = "recording"
    for label, rows in out.groupby("class"):
        sources = rows[rows["collection"] != ""].groupby("collection").size()
        if len(sources) >= 2:  # sound from a source the fine-tune never heard
            held = _held_out(sorted(sources.index, key=lambda c: (sources[c], _rank(str(label), c))), sources,
                             val_fraction * len(rows))
            out.loc[rows.index, "held_out_by"] = "collection"
            out.loc[rows.index[rows["collection"].isin(held)], "split"] = "val"
            continue
        sizes = rows.groupby("recording").size()
        if len(sizes) < 2:
            continue
        held = _held_out(sorted(sizes.index, key=lambda r: _rank(str(label), r)), sizes, val_fraction * len(rows))
        out.loc[rows.index[rows["recording"].isin(held)], "split"] = "val"
    return out


def _held_out(order: list[str], sizes: pd.Series, target: float) -> list[str]:
    """The groups held out, taken in ``order`` until they hold about ``target`` clips: at least one,
    never the last (it always trains)."""
    held, count = [], 0
    for group in order[:-1]:
        if held and count + sizes[group] / 2 > target:
            break
        held.append(group)
        count += sizes[group]
    return held
