"""Ingestion: source files -> normalised clip-length clips + a manifest, per class.

Every audio file found is accounted for: it becomes one or more clips, or it is
quarantined with a reason. One bad file never stops the run. Re-ingesting the
same source gives byte-identical outputs (clip names are content hashes).

Nothing of the user's is lost: the output folder may not be, contain or lie inside a
source folder, and an ``<out>/<Class>/`` folder is replaced only if ingest wrote it.
Each file is decoded only as far as its kept windows, so memory does not grow with a
recording's length.

On disk, per class: ``<Class>/`` (clips/, manifest.csv, quarantine.csv), and while an
ingest runs, hidden ``.<Class>.staging-*`` (being built), ``.<Class>.old-*`` (the previous
version, for the moment of the swap) and ``.<Class>.lock``. The loader never reads hidden
folders; the next ingest of the class deletes leftovers of a killed run, or restores the
previous version if the kill came between the swap's two renames.
"""

from __future__ import annotations

import shutil
from collections import Counter
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import pandas as pd

from foley_core.core.audio import (
    AudioDecodeError,
    content_hash,
    normalise_peak,
    peak_db,
    read_audio,
    resample,
    split_into_windows,
    to_mono,
    write_text_atomic,
    write_wav_atomic,
)
from foley_core.core.config import CaptionedCsvSource, Profile, plain_name_problem
from foley_core.core.fsutil import exclusive_lock, staged_dir
from foley_core.core.hashing import file_hash, new_digest
from foley_core.data.sources import Rejected, SourceFile, source_root

MANIFEST = "manifest.csv"
QUARANTINE = "quarantine.csv"
CLIPS_DIR = "clips"
MANIFEST_COLUMNS = [
    "id", "class", "is_target", "caption", "split", "path", "content_hash", "source_hash",
    "source_path", "source", "window", "duration_s", "orig_sample_rate", "orig_channels",
]  # fmt: skip
QUARANTINE_COLUMNS = ["path", "class", "reason", "detail"]
INGEST_ENTRIES = {MANIFEST, QUARANTINE, CLIPS_DIR}  # everything ingest writes into <out>/<Class>/
# Decoded beyond the last kept window: soxr's filter looks ahead, and with this margin the kept
# windows are sample-identical to resampling the whole file (measured at 1-384 kHz).
RESAMPLER_LOOKAHEAD_S = 1.0


class UnsafeOutputError(ValueError):
    """Ingesting into this output folder could overwrite or delete files ingest did not write."""


@dataclass(frozen=True)
class Clip:
    id: str
    class_: str
    is_target: bool
    caption: str
    split: str
    path: str  # relative to the class folder
    content_hash: str
    source_hash: str
    source_path: str
    source: str
    window: int
    duration_s: float
    orig_sample_rate: int
    orig_channels: int

    def row(self) -> dict:
        row = asdict(self)
        row["class"] = row.pop("class_")
        return row


@dataclass
class IngestResult:
    clips: list[Clip]
    quarantined: list[Rejected]
    found: int

    def summary(self) -> pd.DataFrame:
        """Per class: files found, clips written, quarantined files, seconds of (unpadded) audio."""
        per_class: dict[str, Counter] = {}
        for clip in self.clips:
            c = per_class.setdefault(clip.class_, Counter())
            c["clips"] += 1
            c["seconds"] += clip.duration_s
        for label, n in Counter(c.class_ for c in {c.source_path: c for c in self.clips}.values()).items():
            per_class[label]["files_ingested"] = n
        for item in self.quarantined:
            per_class.setdefault(item.label or "?", Counter())["quarantined"] += 1
        table = pd.DataFrame.from_dict(per_class, orient="index").fillna(0)
        for col in ("files_ingested", "quarantined", "clips", "seconds"):
            if col not in table:
                table[col] = 0
        table = table[["files_ingested", "quarantined", "clips", "seconds"]].astype(
            {"files_ingested": int, "quarantined": int, "clips": int}
        )
        return table.sort_index().round({"seconds": 1})


def is_validation(source_hash: str, val_fraction: float) -> bool:
    """Deterministic split by the source file's hash: stable when other files are added,
    and all windows of one recording land on the same side (no leakage)."""
    return int(source_hash[:8], 16) / 0x1_0000_0000 < val_fraction


def clips_from_file(item: SourceFile, profile: Profile) -> list[tuple[Clip, np.ndarray]]:
    """Decode, mono, resample, window, drop silent windows, normalise. Raises AudioDecodeError.

    Only the first ``max_windows_per_file`` windows can become clips, so only they (and the
    resampler's look-ahead) are decoded: a 2-hour recording costs what a 17-second one does.
    The silence check below sees that decoded part, which is the whole file for anything shorter.
    """
    audio_cfg, data_cfg = profile.audio, profile.data
    seconds = data_cfg.max_windows_per_file * audio_cfg.clip_seconds + RESAMPLER_LOOKAHEAD_S
    raw, rate, channels = read_audio(item.path, max_seconds=seconds, max_bytes=data_cfg.max_decoded_bytes)
    mono = to_mono(raw)
    del raw  # the multichannel copy is the largest array: free it before resampling
    try:
        audio = resample(mono, rate, audio_cfg.sample_rate)
    except MemoryError as exc:
        raise AudioDecodeError("too_large", f"out of memory resampling {rate} Hz -> {audio_cfg.sample_rate} Hz") from exc
    except Exception as exc:  # soxr rejects some rates/inputs: one file's problem, not the class's
        raise AudioDecodeError("resample_failed", f"{type(exc).__name__}: {exc}") from exc
    if peak_db(audio) < data_cfg.silence_threshold_db:
        raise AudioDecodeError("silent", f"peak {peak_db(audio):.1f} dBFS < {data_cfg.silence_threshold_db} dBFS")
    window = audio_cfg.clip_samples
    source_hash = file_hash(item.path)
    split = "val" if is_validation(source_hash, data_cfg.val_fraction) else "train"
    clips = []
    for index, piece in enumerate(
        split_into_windows(audio, window, data_cfg.max_windows_per_file, data_cfg.min_window_fraction)
    ):
        if peak_db(piece) < data_cfg.silence_threshold_db:
            continue  # a quiet stretch inside a long recording: not a clip, not an error
        piece = normalise_peak(piece, data_cfg.target_peak)
        digest = content_hash(piece)
        event_samples = min(window, max(0, audio.shape[0] - index * window))
        clip = Clip(
                id=f"{item.label}-{digest[:16]}",
                class_=item.label,
                is_target=item.label in profile.class_names,
                caption=item.caption,
                split=split,
                path=f"{CLIPS_DIR}/{item.label}-{digest[:16]}.wav",
                content_hash=digest,
                source_hash=source_hash,
                source_path=str(item.path),
                source=item.source,
                window=index,
                duration_s=round(event_samples / audio_cfg.sample_rate, 4),
                orig_sample_rate=rate,
                orig_channels=channels,
        )
        clips.append((clip, piece))
    if not clips:
        raise AudioDecodeError("silent", "every window is below the silence threshold")
    return clips


def ingest_class(label: str, files: Iterable[SourceFile], rejected: Iterable[Rejected], out_dir: Path, profile: Profile) -> IngestResult:
    """Ingest one class into ``out_dir/<label>/`` (clips/, manifest.csv, quarantine.csv).

    Built in a temporary folder and swapped in at the end, so an interrupted run
    leaves the previous version intact and a re-run leaves no stale clips. Raises
    UnsafeOutputError, before decoding anything, if ``out_dir/<label>/`` holds files ingest
    did not write or a source file lies inside ``out_dir``.
    """
    files, quarantined = list(files), list(rejected)
    found = len(files) + len(quarantined)
    problem = plain_name_problem(label)
    if problem:  # callers pass configured names; a path-like label would write outside out_dir
        raise ValueError(f"class name {label!r} {problem}")
    final = out_dir / label
    _check_sources_outside(out_dir, [str(f.path) for f in files] + [r.path for r in quarantined])
    check_replaceable(final)
    out_dir.mkdir(parents=True, exist_ok=True)
    with _class_lock(out_dir, label):
        _recover_interrupted(out_dir, label)
        check_replaceable(final)  # again: the recovery may have restored a folder
        with staged_dir(final) as staging:
            clips = _build(label, files, quarantined, staging, profile)
    return IngestResult(clips=clips, quarantined=quarantined, found=found)


def _build(label: str, files: list[SourceFile], quarantined: list[Rejected], staging: Path,
           profile: Profile) -> list[Clip]:
    """Decode every file into ``staging`` (bad ones are appended to ``quarantined``); write the tables."""
    clips: list[Clip] = []
    seen: dict[str, str] = {}
    for item in files:
        try:
            produced = clips_from_file(item, profile)
        except AudioDecodeError as exc:
            quarantined.append(Rejected(str(item.path), label, exc.reason, exc.detail))
            continue
        except MemoryError as exc:  # anywhere past decoding; the arrays are freed as this unwinds
            quarantined.append(Rejected(str(item.path), label, "too_large", f"out of memory: {exc}"))
            continue
        fresh = [(clip, audio) for clip, audio in produced if clip.content_hash not in seen]
        if not fresh:
            first = seen[produced[0][0].content_hash]
            quarantined.append(Rejected(str(item.path), label, "duplicate", f"same audio as {first}"))
            continue
        for clip, audio in fresh:
            seen[clip.content_hash] = clip.source_path
            write_wav_atomic(staging / clip.path, audio, profile.audio.sample_rate)
            clips.append(clip)
    clips = _ensure_validation_clip(clips, profile.data.val_fraction)
    _write_tables(staging, clips, quarantined)
    return clips


def _ensure_validation_clip(clips: list[Clip], val_fraction: float) -> list[Clip]:
    """Stratification: a class with at least two recordings keeps at least one for validation."""
    sources = sorted({c.source_hash for c in clips})
    if val_fraction <= 0 or len(sources) < 2 or any(c.split == "val" for c in clips):
        return clips
    chosen = sources[0]  # lowest hash: deterministic
    return [Clip(**{**c.__dict__, "split": "val"}) if c.source_hash == chosen else c for c in clips]


def _write_tables(folder: Path, clips: list[Clip], quarantined: list[Rejected]) -> None:
    manifest = pd.DataFrame([c.row() for c in clips], columns=MANIFEST_COLUMNS).sort_values("id")
    write_text_atomic(folder / MANIFEST, manifest.to_csv(index=False))
    rows = [{"path": q.path, "class": q.label, "reason": q.reason, "detail": q.detail} for q in quarantined]
    quarantine = pd.DataFrame(rows, columns=QUARANTINE_COLUMNS).sort_values(["reason", "path"])
    write_text_atomic(folder / QUARANTINE, quarantine.to_csv(index=False))


@contextmanager
def _class_lock(out_dir: Path, label: str) -> Iterator[None]:
    """One ingest of ``out_dir/<label>`` at a time, across processes and threads. An flock: the
    kernel drops it when its holder dies, so a killed run never leaves a stale lock, and while
    it is held every hidden folder of this class is a leftover of a run that has ended."""
    with exclusive_lock(out_dir / f".{label}.lock"):
        yield


def _recover_interrupted(out_dir: Path, label: str) -> None:
    """Tidy what a killed ingest of ``label`` left behind (the caller holds the class lock).

    ``.<label>.staging-*`` is a half-built version: deleted. ``.<label>.old-*`` (or ``.old``,
    the name used before) is the previous version, set aside for the swap: if ``<label>`` is
    missing the kill came between the swap's two renames, and the newest such folder that
    ingest wrote is put back; otherwise it is deleted.
    """
    final = out_dir / label
    prefix = f".{label}."
    staging, old = [], []
    for path in out_dir.iterdir():
        if not path.name.startswith(prefix) or path.is_symlink() or not path.is_dir():
            continue
        kind = path.name[len(prefix):]
        if kind.startswith("staging-"):
            staging.append(path)
        elif kind == "old" or kind.startswith("old-"):
            old.append(path)
    restorable = [p for p in old if (p / MANIFEST).is_file() and not _foreign_entries(p)]
    if not final.exists() and restorable:
        newest = max(restorable, key=lambda p: (p / MANIFEST).stat().st_mtime)
        newest.rename(final)
        old.remove(newest)
    for path in staging + old:
        shutil.rmtree(path, ignore_errors=True)


def _foreign_entries(folder: Path) -> list[str]:
    """What in ``folder`` ingest did not write: [] for an ingest class folder (or an empty one)."""
    names = {p.name for p in folder.iterdir()}
    if not names:
        return []
    missing = sorted({MANIFEST, QUARANTINE} - names)
    return sorted(names - INGEST_ENTRIES) + [f"(no {m})" for m in missing]


def check_replaceable(folder: Path) -> None:
    """Refuse (UnsafeOutputError) to replace ``folder`` unless it is absent, empty or a class
    folder ingest wrote: ingest swaps ``<out>/<Class>/`` in whole, deleting what was there."""
    if not folder.exists() and not folder.is_symlink():
        return
    if folder.is_symlink() or not folder.is_dir():
        raise UnsafeOutputError(f"{folder} is not a folder ingest wrote (a file or a symlink); ingest would "
                                "replace it: choose another output folder or move it away")
    foreign = _foreign_entries(folder)
    if foreign:
        shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
        raise UnsafeOutputError(f"{folder} holds files ingest did not write ({shown}); ingest replaces "
                                "<out>/<Class>/ folders whole: choose another output folder or move them away")


def check_output_folder(out_dir: Path, sources: Iterable, profile: Profile) -> None:
    """Refuse (UnsafeOutputError) an output folder that is, lies inside or contains a source's
    folder: ingest would write its clips among the recordings (and the next scan of a folder
    source would read them back). A captioned CSV reads only the files it lists, so an output
    folder inside the CSV's folder is fine (a listed file inside the output is refused anyway)."""
    out = Path(out_dir).resolve()
    for source in sources:
        root = source_root(source, profile).resolve()
        inside_is_safe = isinstance(source, CaptionedCsvSource)
        relation = ("is" if out == root else "contains" if root.is_relative_to(out)
                    else "is inside" if out.is_relative_to(root) and not inside_is_safe else None)
        if relation:
            raise UnsafeOutputError(f"output folder {out_dir} {relation} the source folder {root}; "
                                    "choose an output folder outside it")


def _check_sources_outside(out_dir: Path, paths: list[str]) -> None:
    """A source file inside the output folder would be deleted or overwritten by the swap."""
    out = Path(out_dir).resolve()
    for path in paths:
        if Path(path).resolve().is_relative_to(out):
            raise UnsafeOutputError(f"source file {path} lies inside the output folder {out_dir}; "
                                    "choose an output folder outside the source")


def ingest(files: list[SourceFile], rejected: list[Rejected], out_dir: Path, profile: Profile,
           labels: Iterable[str] | None = None, progress=None, sources: Iterable = ()) -> IngestResult:
    """Ingest several classes; files of classes outside ``labels`` are left alone.

    Rejections without a known class (unknown class folders, audio outside any class
    folder) are written to ``out_dir/quarantine_unassigned.csv``. Before anything is
    decoded, raises UnsafeOutputError if ``out_dir`` overlaps the folder of one of ``sources``
    (source configs; see ``check_output_folder``), holds one of the files, or would replace a
    folder ingest did not write.
    """
    wanted = sorted(set(labels) if labels is not None else {f.label for f in files} | {r.label for r in rejected if r.label})
    allowed = set(profile.dataset_classes) | {f.label for f in files}
    check_output_folder(out_dir, sources, profile)
    _check_sources_outside(out_dir, [str(f.path) for f in files] + [r.path for r in rejected])
    for label in wanted:
        if label in allowed:
            check_replaceable(out_dir / label)
    results = IngestResult(clips=[], quarantined=[], found=0)
    for label in wanted:
        own_files = [f for f in files if f.label == label]
        own_rejected = [r for r in rejected if r.label == label]
        if label not in allowed:
            continue
        result = ingest_class(label, own_files, own_rejected, out_dir, profile)
        results.clips += result.clips
        results.quarantined += result.quarantined
        results.found += result.found
        if progress:
            progress(label, result)
    unassigned = [r for r in rejected if r.label not in allowed or not r.label]
    if labels is None or unassigned:
        _write_unassigned(out_dir, unassigned)
    results.quarantined += unassigned
    results.found += len(unassigned)
    return results


def _write_unassigned(out_dir: Path, unassigned: list[Rejected]) -> None:
    rows = [{"path": q.path, "class": q.label, "reason": q.reason, "detail": q.detail} for q in unassigned]
    table = pd.DataFrame(rows, columns=QUARANTINE_COLUMNS).sort_values(["reason", "path"])
    write_text_atomic(out_dir / "quarantine_unassigned.csv", table.to_csv(index=False))


def load_manifest(dataset_dir: Path, labels: Iterable[str] | None = None) -> pd.DataFrame:
    """All clips of the given classes (default: every ingested class), with absolute paths."""
    folders = [dataset_dir / label for label in labels] if labels is not None else sorted(
        # hidden folders are ingest's own work in progress (.<Class>.staging-*, .<Class>.old-*)
        p for p in dataset_dir.iterdir() if not p.name.startswith(".") and (p / MANIFEST).is_file()
    )
    tables = []
    for folder in folders:
        if not (folder / MANIFEST).is_file():
            raise FileNotFoundError(f"class {folder.name!r} has not been ingested into {dataset_dir}")
        table = pd.read_csv(folder / MANIFEST, dtype={"caption": str}, keep_default_na=False)
        table["abs_path"] = [str(folder / p) for p in table["path"]]
        tables.append(table)
    return pd.concat(tables, ignore_index=True) if tables else pd.DataFrame(columns=MANIFEST_COLUMNS + ["abs_path"])


def manifest_version(dataset_dir: Path, label: str) -> str:
    """Data version of one class partition: the hash of its manifest (clips are content-addressed)."""
    folder = dataset_dir / label
    digest = new_digest((folder / MANIFEST).read_bytes())
    digest.update((folder / QUARANTINE).read_bytes())
    return digest.hexdigest()[:16]
