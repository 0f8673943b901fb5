"""Find the audio files of a data source and the class and caption of each.

Three kinds of source (see ``configs/*.yaml``): the DCASE dev-set folder layout
``<root>/<Class>/*``, a captioned corpus CSV ``path,caption[,class]``, and the built-in
procedural synthesiser (written in the folder layout with a ``captions.csv``).
Files that cannot belong to the dataset are reported, never silently dropped.

Every file read lies inside its source's root (the folder, or the CSV's folder) once
resolved: a ``../`` or absolute path in a CSV, or a symlink pointing out of the root, is
rejected as ``outside_source_root`` and never read; a symlink that stays inside is fine.
``rglob`` does not descend into symlinked sub-folders (Python <= 3.13 default), so only a
symlinked class folder itself can lead elsewhere, and it is rejected without being walked.

A profile's ``captioned_csv`` sources are optional extras (e.g. the paper profile's
pre-training captions): ``discover_all`` skips one whose CSV does not exist with a warning
(``Discovery.warnings``, also logged) instead of failing. A missing folder or synthetic
source is still an error, and so is a profile none of whose sources exists. A source named
explicitly (``discover_source``, the CLI's SOURCE argument) must exist.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from foley_core.core.audio import is_audio_file
from foley_core.core.config import CaptionedCsvSource, FolderSource, Profile, SyntheticSource, plain_name_problem
from foley_core.data.synth import write_synthetic_corpus

UNLABELLED = "_unlabelled"  # captioned clips without a class: pre-training only
CAPTIONS_FILE = "captions.csv"
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SourceFile:
    path: Path  # absolute
    label: str  # a dataset class, or UNLABELLED
    caption: str
    source: str  # which configured source it came from


@dataclass(frozen=True)
class Rejected:
    path: str
    label: str
    reason: str
    detail: str


@dataclass
class Discovery:
    files: list[SourceFile] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)  # non-audio files (licences, notes)
    warnings: list[str] = field(default_factory=list)  # e.g. an optional captioned CSV that does not exist

    def extend(self, other: "Discovery") -> None:
        self.files += other.files
        self.rejected += other.rejected
        self.ignored += other.ignored
        self.warnings += other.warnings


def default_caption(profile: Profile, label: str) -> str:
    if label in profile.class_names:
        return profile.class_config(label).prompts[0]
    return label.replace("_", " ").lower()


def _outside(path: Path, real_root: Path) -> Rejected | None:
    """A rejection if ``path`` resolves (symlinks, ``..``) to somewhere outside ``real_root``."""
    real = path.resolve()
    if real.is_relative_to(real_root):
        return None
    return Rejected(str(path), "", "outside_source_root", f"resolves to {real}, outside the source folder {real_root}")


def discover_folder(root: Path, profile: Profile, source_name: str) -> Discovery:
    """DCASE layout: one folder per class; a root ``captions.csv`` overrides default captions."""
    if not root.is_dir():
        raise FileNotFoundError(f"data source {root} does not exist or is not a folder")
    captions = _read_caption_map(root / CAPTIONS_FILE) if (root / CAPTIONS_FILE).is_file() else {}
    allowed = set(profile.dataset_classes)
    real_root = root.resolve()
    found = Discovery()
    for entry in sorted(root.iterdir()):
        if entry.name.startswith("."):
            continue
        if entry.is_file():
            if is_audio_file(entry):
                found.rejected.append(Rejected(str(entry), "", "no_class_folder", "audio file outside a <Class>/ folder"))
            elif entry.name != CAPTIONS_FILE:
                found.ignored.append(str(entry))
            continue
        if not entry.is_dir():
            continue  # a broken symlink
        outside = _outside(entry, real_root)
        if outside:  # a class folder linked from elsewhere: not walked (it could be the whole disk)
            found.rejected.append(outside)
            continue
        for path in sorted(p for p in entry.rglob("*") if p.is_file() and not p.name.startswith(".")):
            if not is_audio_file(path):
                found.ignored.append(str(path))
            elif outside := _outside(path, real_root):
                found.rejected.append(Rejected(outside.path, entry.name, outside.reason, outside.detail))
            elif entry.name not in allowed:
                found.rejected.append(
                    Rejected(str(path), entry.name, "unknown_class", f"folder {entry.name!r} is not a configured class")
                )
            else:
                caption = captions.get(path.relative_to(root).as_posix()) or default_caption(profile, entry.name)
                found.files.append(SourceFile(path.resolve(), entry.name, caption, source_name))
    return found


def discover_captioned_csv(csv_path: Path, profile: Profile, source_name: str) -> Discovery:
    """Captioned corpus: paths relative to the CSV's folder; ``class`` optional."""
    table = _read_csv(csv_path)
    allowed = set(profile.dataset_classes)
    real_root = csv_path.parent.resolve()
    found = Discovery()
    for row in table.to_dict("records"):
        path = Path(row["path"])
        path = path if path.is_absolute() else csv_path.parent / path
        label = (row.get("class") or "").strip() or UNLABELLED
        caption = (row["caption"] or "").strip()
        bad_name, outside = plain_name_problem(label), _outside(path, real_root)
        if bad_name:  # the label would name a folder: never let it climb out of the output
            found.rejected.append(Rejected(str(path), "", "bad_class_name", f"class {label!r} {bad_name}"))
        elif outside:
            found.rejected.append(Rejected(outside.path, label, outside.reason, outside.detail))
        elif not path.is_file():
            found.rejected.append(Rejected(str(path), label, "missing_file", f"listed in {csv_path.name} but not found"))
        elif not is_audio_file(path):
            found.rejected.append(Rejected(str(path), label, "unreadable_format", f"extension {path.suffix!r} is not audio"))
        elif label != UNLABELLED and label not in allowed:
            found.rejected.append(Rejected(str(path), label, "unknown_class", f"class {label!r} is not configured"))
        elif not caption:
            found.rejected.append(Rejected(str(path), label, "empty_caption", "caption is empty"))
        else:
            found.files.append(SourceFile(path.resolve(), label, caption, source_name))
    return found


def _read_csv(csv_path: Path) -> pd.DataFrame:
    if not csv_path.is_file():
        raise FileNotFoundError(f"captioned corpus {csv_path} does not exist")
    table = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
    missing = {"path", "caption"} - set(table.columns)
    if missing:
        raise ValueError(f"{csv_path}: missing column(s) {sorted(missing)}; expected path,caption[,class]")
    return table


def _read_caption_map(csv_path: Path) -> dict[str, str]:
    table = _read_csv(csv_path)
    return {Path(p).as_posix(): c for p, c in zip(table["path"], table["caption"]) if c.strip()}


def materialise_synthetic(source: SyntheticSource, profile: Profile) -> Path:
    """Write the procedural corpus if it is not there yet (deterministic per seed)."""
    root = profile.resolve(source.path)
    counts = {name: source.clips_per_class for name in profile.class_names}
    counts.update({name: source.clips_per_extra_type for name in source.extra_types})
    if not (root / CAPTIONS_FILE).is_file():
        write_synthetic_corpus(
            root,
            list(counts),
            counts,
            sample_rate=profile.audio.sample_rate,
            duration_s=profile.audio.clip_seconds,
            seed=profile.seed,
        )
    return root


def discover_source(source, profile: Profile, *, create_synthetic: bool = True) -> Discovery:
    if isinstance(source, SyntheticSource):
        root = materialise_synthetic(source, profile) if create_synthetic else profile.resolve(source.path)
        return discover_folder(root, profile, f"synthetic:{source.path}")
    if isinstance(source, FolderSource):
        return discover_folder(profile.resolve(source.path), profile, f"folder:{source.path}")
    if isinstance(source, CaptionedCsvSource):
        return discover_captioned_csv(profile.resolve(source.path), profile, f"captioned_csv:{source.path}")
    raise TypeError(f"unknown source type {type(source).__name__}")


def source_root(source, profile: Profile) -> Path:
    """The folder a source's files must lie in: its folder, or the folder of its CSV."""
    path = profile.resolve(source.path)
    return path.parent if isinstance(source, CaptionedCsvSource) else path


def discover_all(profile: Profile, *, create_synthetic: bool = True) -> Discovery:
    """Every configured source. A ``captioned_csv`` whose CSV does not exist is skipped with a
    warning (optional captions); when no configured source can be read at all, that is an error."""
    found = Discovery()
    skipped = []
    for source in profile.data.sources:
        csv_path = profile.resolve(source.path)
        if isinstance(source, CaptionedCsvSource) and not csv_path.is_file():
            skipped.append(str(csv_path))
            found.warnings.append(
                f"optional captioned corpus {csv_path} does not exist: source captioned_csv:{source.path} skipped "
                "(its clips are not in this data version)"
            )
            log.warning(found.warnings[-1])
            continue
        found.extend(discover_source(source, profile, create_synthetic=create_synthetic))
    if len(skipped) == len(profile.data.sources):
        raise FileNotFoundError(
            f"profile {profile.name!r} has no usable data source: none of {', '.join(skipped)} exists "
            "(add a folder, synthetic or existing captioned_csv source under data.sources)"
        )
    return found


def source_from_path(path: Path):
    """A CLI argument: a folder (DCASE layout) or a captioned CSV."""
    if path.is_dir():
        return FolderSource(kind="folder", path=path.resolve())
    if path.suffix.lower() == ".csv":
        return CaptionedCsvSource(kind="captioned_csv", path=path.resolve())
    raise ValueError(f"{path}: expected a folder in the <Class>/*.wav layout or a captioned .csv")


def partition_keys(profile: Profile) -> list[str]:
    """Dataset partitions: every class a clip may carry (+ unlabelled captioned clips)."""
    keys = list(profile.dataset_classes)
    if any(isinstance(s, CaptionedCsvSource) for s in profile.data.sources):
        keys.append(UNLABELLED)
    return keys
