"""Ingestion: source files -> normalised clip-length clips + a manifest, per class.

Every audio file found is accounted for: it becomes one or more clips, or it is
quarantined with a reason. One bad file never stops the run. Re-ingesting the
same source gives byte-identical outputs (clip names are content hashes).
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd

from foley_core.audio import (
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
from foley_core.config import Profile
from foley_core.data.sources import Rejected, SourceFile
from foley_core.data.versioning import file_hash

MANIFEST = "manifest.csv"
QUARANTINE = "quarantine.csv"
CLIPS_DIR = "clips"
MANIFEST_COLUMNS = [
    "id", "class", "is_target", "caption", "split", "path", "content_hash", "source_hash",
    "source_path", "source", "window", "duration_s", "orig_sample_rate", "orig_channels",
]  # fmt: skip
QUARANTINE_COLUMNS = ["path", "class", "reason", "detail"]


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
    """Decode, mono, resample, window, drop silent windows, normalise. Raises AudioDecodeError."""
    audio_cfg, data_cfg = profile.audio, profile.data
    raw, rate, channels = read_audio(item.path)
    audio = resample(to_mono(raw), rate, audio_cfg.sample_rate)
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
    leaves the previous version intact and a re-run leaves no stale clips.
    """
    files, quarantined = list(files), list(rejected)
    found = len(files) + len(quarantined)
    clips: list[Clip] = []
    seen: dict[str, str] = {}
    final = out_dir / label
    out_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=out_dir, prefix=f".{label}.staging-"))
    try:
        for item in files:
            try:
                produced = clips_from_file(item, profile)
            except AudioDecodeError as exc:
                quarantined.append(Rejected(str(item.path), label, exc.reason, exc.detail))
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
        _swap_in(staging, final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return IngestResult(clips=clips, quarantined=quarantined, found=found)


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


def _swap_in(staging: Path, final: Path) -> None:
    old = final.with_name(f".{final.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        final.rename(old)
    staging.rename(final)
    shutil.rmtree(old, ignore_errors=True)


def ingest(files: list[SourceFile], rejected: list[Rejected], out_dir: Path, profile: Profile,
           labels: Iterable[str] | None = None, progress=None) -> IngestResult:
    """Ingest several classes; files of classes outside ``labels`` are left alone.

    Rejections without a known class (unknown class folders, audio outside any class
    folder) are written to ``out_dir/quarantine_unassigned.csv``.
    """
    wanted = sorted(set(labels) if labels is not None else {f.label for f in files} | {r.label for r in rejected if r.label})
    allowed = set(profile.dataset_classes) | {f.label for f in files}
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
        p for p in dataset_dir.iterdir() if (p / MANIFEST).is_file()
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
    digest = hashlib.sha256((folder / MANIFEST).read_bytes())
    digest.update((folder / QUARANTINE).read_bytes())
    return digest.hexdigest()[:16]
