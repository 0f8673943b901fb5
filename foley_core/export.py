"""DCASE 2023 Task 7 submission format: export clips and validate a submission folder.

Format (task page): per class, 100 clips of 4 s, mono, 16-bit PCM, 22,050 Hz, i.e. exactly
88,200 samples, in ``<Class>/NNN.wav``. The official FAD tool reads every file of a class
folder with ``scipy.io.wavfile`` and expects exactly 100 (names do not matter to it); it
does not resample, so a wrong rate silently changes the score rather than failing.
``validate_dcase`` therefore checks every property and names every offending file.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from foley_core.core.audio import AudioDecodeError, is_audio_file, read_audio, resample, to_mono, write_wav_atomic
from foley_core.core.config import DCASE_CLASS_IDS
from foley_core.core.fsutil import staged_dir, write_text_atomic

DCASE_RATE = 22050
DCASE_SECONDS = 4.0
DCASE_CLIPS_PER_CLASS = 100
DCASE_CLASSES = tuple(DCASE_CLASS_IDS)
CLIP_NAME = re.compile(r"^\d+\.wav$")  # ours: 000.wav ..; the baseline: 0001.wav ..


def clip_name(index: int) -> str:
    return f"{index:03d}.wav"


def to_dcase_clip(
    waveform: np.ndarray, sample_rate: int, out_rate: int = DCASE_RATE, seconds: float = DCASE_SECONDS
) -> np.ndarray:
    """A 1-D waveform at ``sample_rate`` -> float32 at ``out_rate``, exactly ``seconds`` long, in [-1, 1].

    soxr (HQ) resamples; the tail is zero-padded or cut to the exact length, then samples
    are clipped to [-1, 1] (the 16-bit range). Multi-channel or non-finite input raises.
    """
    wave = np.asarray(waveform)
    if wave.ndim != 1:
        raise ValueError(f"expected a mono 1-D waveform, got shape {wave.shape} (mix to mono first)")
    if wave.size == 0:
        raise ValueError("waveform is empty")
    if not np.isfinite(wave).all():
        raise ValueError("waveform contains NaN or infinite samples")
    length = int(round(seconds * out_rate))
    wave = resample(wave.astype(np.float32), int(sample_rate), out_rate)
    if wave.shape[0] < length:
        wave = np.pad(wave, (0, length - wave.shape[0]))
    return np.clip(wave[:length], -1.0, 1.0).astype(np.float32)


def write_dcase_clip(
    path: Path, waveform: np.ndarray, sample_rate: int, out_rate: int = DCASE_RATE, seconds: float = DCASE_SECONDS
) -> Path:
    """Write one submission clip atomically: ``to_dcase_clip`` then 16-bit PCM wav."""
    path = Path(path)
    write_wav_atomic(path, to_dcase_clip(waveform, sample_rate, out_rate, seconds), out_rate)
    return path


EXPORT_MARKER = ".foley-export.json"  # hidden: validate_dcase and the official tool skip it


def _written_files(root: Path) -> set[str] | None:
    """The files an earlier export recorded in ``root``'s marker (relative paths), or None if unmarked."""
    try:
        files = json.loads((root / EXPORT_MARKER).read_text())["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return set(files) if isinstance(files, list) and all(isinstance(f, str) for f in files) else None


def check_export_target(out_dir: Path) -> None:
    """Raise ValueError unless an export may write ``out_dir`` without touching anything of the user's.

    Allowed: a folder that does not exist yet (its parent folders are created), an empty folder,
    or an earlier export by this module (it holds ``EXPORT_MARKER``, which lists what was
    written, and nothing else). Refused: an existing file, and a folder holding anything
    foley did not write, e.g. a DCASE dev set, whose ``0001.wav`` names look like clips.
    Called before any clip is generated, and again just before the new export is swapped in.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"refusing to write into {out_dir}: it is a file, not a folder")
    if out_dir.is_dir():
        present = set()  # every file and folder inside, symlinks included and not followed
        for folder, dirs, files in os.walk(out_dir):
            present.update(Path(folder, name).relative_to(out_dir).as_posix() for name in dirs + files)
        written = _written_files(out_dir)
        if written is None and present:
            raise ValueError(f"refusing to write into {out_dir}: it holds files foley did not write; "
                             "choose a new or empty folder")
        ours = (written or set()) | {EXPORT_MARKER} | {Path(f).parent.as_posix() for f in written or ()}
        foreign = sorted(present - ours)
        if foreign:
            raise ValueError(f"refusing to replace the export in {out_dir}: it also holds {len(foreign)} file(s) "
                             f"foley did not write ({out_dir / foreign[0]}, ...); move them or choose a new folder")
    # The export is written beside out_dir and renamed in: its (nearest existing) parent must be writable.
    parent = out_dir.resolve().parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise ValueError(f"cannot create {out_dir}: {parent} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ValueError(f"cannot write {out_dir}: folder {parent} is not writable")


def _staged(out_dir: Path, write: Callable[[Path], dict[str, list[str]]]) -> None:
    """Run ``write(folder)`` on a new folder beside ``out_dir``, then swap it in for ``out_dir``
    (``fsutil.staged_dir``, without its lock file: nothing is left beside the user's folder).

    ``write`` returns {class: [file names]}; the marker records them. The old export is removed
    only after the new one is in place: a kill while writing leaves the old export whole (plus a
    hidden ``.NAME.staging-*`` folder beside it, removed by the next export). Only a SIGKILL
    between the two renames (microseconds) leaves ``out_dir`` absent, with the old export beside
    it in a hidden folder that the next export puts back first; never old and new clips mixed.
    """
    check_export_target(out_dir)
    target = Path(out_dir).resolve()  # a symlinked OUT keeps its link: we replace what it points at
    with staged_dir(target, lock=False) as new:
        names = write(new)
        files = sorted(f"{label}/{name}" for label, listed in names.items() for name in listed)
        write_text_atomic(new / EXPORT_MARKER, json.dumps({"written_by": "foley export_dcase", "files": files}, indent=1))
        check_export_target(out_dir)  # again: the user may have put files there while we generated


def export_dcase(
    clips_by_class: Mapping[str, Sequence[np.ndarray]],
    sample_rate: int,
    out_dir: Path,
    clips_per_class: int = DCASE_CLIPS_PER_CLASS,
    out_rate: int = DCASE_RATE,
    seconds: float = DCASE_SECONDS,
) -> dict[str, list[Path]]:
    """Write ``out_dir/<Class>/000.wav ..`` from in-memory clips; the first ``clips_per_class`` of each class.

    A class with fewer clips raises (a short submission is invalid). ``out_dir`` must be new,
    empty or an earlier export (``check_export_target``, else ValueError); the whole export is
    written beside it and swapped in at the end, so ``out_dir`` then holds exactly this export
    and a kill leaves the previous one untouched. Returns the final paths per class.
    """
    short = {name: len(clips) for name, clips in clips_by_class.items() if len(clips) < clips_per_class}
    if short:
        counts = ", ".join(f"{n} ({c})" for n, c in short.items())
        raise ValueError(f"fewer than {clips_per_class} clips for: {counts}")
    names = {name: [clip_name(i) for i in range(clips_per_class)] for name in clips_by_class}

    def write(staging: Path) -> dict[str, list[str]]:
        for name, clips in clips_by_class.items():
            for file, clip in zip(names[name], clips[:clips_per_class]):
                write_dcase_clip(staging / name / file, clip, sample_rate, out_rate, seconds)
        return names

    _staged(Path(out_dir), write)
    return {name: [Path(out_dir) / name / file for file in files] for name, files in names.items()}


def export_dcase_dir(
    source_dir: Path,
    out_dir: Path,
    classes: Sequence[str] = DCASE_CLASSES,
    clips_per_class: int = DCASE_CLIPS_PER_CLASS,
    out_rate: int = DCASE_RATE,
    seconds: float = DCASE_SECONDS,
) -> dict[str, list[Path]]:
    """Convert ``source_dir/<Class>/*`` (any readable audio, any rate) into the submission layout.

    Files are taken in sorted name order; multi-channel files are mixed to mono. Classes are
    converted one at a time, so memory holds one clip; ``out_dir`` follows ``export_dcase``'s
    rules (new, empty or an earlier export; swapped in whole at the end).
    """
    source_dir = Path(source_dir)
    missing = [c for c in classes if not (source_dir / c).is_dir()]
    if missing:
        raise FileNotFoundError(f"no class folder in {source_dir} for: {', '.join(missing)}")
    sources: dict[str, list[Path]] = {}
    for name in classes:
        files = sorted(
            p for p in (source_dir / name).iterdir() if p.is_file() and not p.name.startswith(".") and is_audio_file(p)
        )
        if len(files) < clips_per_class:
            raise ValueError(f"{source_dir / name}: {len(files)} audio files, need {clips_per_class}")
        sources[name] = files[:clips_per_class]
    names = {name: [clip_name(i) for i in range(clips_per_class)] for name in classes}

    def write(staging: Path) -> dict[str, list[str]]:
        for name in classes:
            for file, path in zip(names[name], sources[name]):
                try:
                    audio, rate, _ = read_audio(path)
                except AudioDecodeError as exc:
                    raise AudioDecodeError(exc.reason, f"{path}: {exc.detail}") from None
                write_dcase_clip(staging / name / file, to_mono(audio), rate, out_rate, seconds)
        return names

    _staged(Path(out_dir), write)
    return {name: [Path(out_dir) / name / file for file in files] for name, files in names.items()}


@dataclass(frozen=True)
class Problem:
    """One reason a submission folder is invalid: the path it concerns, a short tag, the details."""

    path: Path
    # missing_folder, missing_class_folder, wrong_count, unexpected_folder, unexpected_file, unexpected_name,
    # unreadable, not_wav, wrong_rate, not_mono, wrong_bit_depth, wrong_length
    problem: str
    detail: str = ""

    def __str__(self) -> str:
        return f"{self.path}: {self.problem}" + (f" ({self.detail})" if self.detail else "")

    def to_dict(self) -> dict[str, str]:
        return {"path": str(self.path), "problem": self.problem, "detail": self.detail}


def _check_clip(path: Path, rate: int, samples: int) -> list[Problem]:
    try:
        info = sf.info(str(path))
        sf.read(str(path), dtype="int16", frames=-1)  # the data decodes, not just the header
    except Exception as exc:  # libsndfile raises several types for broken files
        return [Problem(path, "unreadable", f"{type(exc).__name__}: {exc}")]
    found = []
    if info.format != "WAV":
        found.append(Problem(path, "not_wav", f"container is {info.format}"))
    if info.samplerate != rate:
        found.append(Problem(path, "wrong_rate", f"{info.samplerate} Hz, expected {rate} Hz"))
    if info.channels != 1:
        found.append(Problem(path, "not_mono", f"{info.channels} channels"))
    if info.subtype != "PCM_16":
        found.append(Problem(path, "wrong_bit_depth", f"{info.subtype}, expected PCM_16"))
    if info.frames != samples:
        seconds = info.frames / info.samplerate
        found.append(Problem(path, "wrong_length", f"{info.frames} samples ({seconds:.3f} s), expected {samples}"))
    return found


def validate_dcase(
    root: Path,
    classes: Sequence[str] = DCASE_CLASSES,
    clips_per_class: int = DCASE_CLIPS_PER_CLASS,
    rate: int = DCASE_RATE,
    seconds: float = DCASE_SECONDS,
    name_pattern: re.Pattern[str] | None = CLIP_NAME,
) -> list[Problem]:
    """Every way ``root`` departs from the submission format; an empty list means valid.

    Per class folder: exactly ``clips_per_class`` ``.wav`` files; each a readable WAV,
    ``rate`` Hz, mono, 16-bit PCM, exactly ``seconds * rate`` samples. Also reported:
    missing class folders, files that are not ``.wav`` (the official tool would try to read
    them), wav names not matching ``name_pattern`` (None accepts any), sub-folders, and
    folders at the top level that are not classes. Hidden files are ignored, as ``ls *``
    in the official tool ignores them.
    """
    root = Path(root)
    if not root.is_dir():
        return [Problem(root, "missing_folder", "submission folder does not exist")]
    samples = int(round(seconds * rate))
    problems: list[Problem] = []
    for entry in sorted(root.iterdir()):
        if entry.is_dir() and entry.name not in classes and not entry.name.startswith("."):
            problems.append(Problem(entry, "unexpected_folder", f"not one of the classes {', '.join(classes)}"))
    for name in classes:
        folder = root / name
        if not folder.is_dir():
            problems.append(Problem(folder, "missing_class_folder"))
            continue
        wavs = []
        for path in sorted(folder.iterdir()):
            if path.name.startswith("."):
                continue
            if path.is_dir():
                problems.append(Problem(path, "unexpected_folder", "class folders hold files only"))
            elif path.suffix.lower() != ".wav":
                problems.append(Problem(path, "unexpected_file", "not a .wav file"))
            else:
                wavs.append(path)
                if name_pattern is not None and not name_pattern.match(path.name):
                    problems.append(Problem(path, "unexpected_name", f"expected a name matching {name_pattern.pattern}"))
                problems.extend(_check_clip(path, rate, samples))
        if len(wavs) != clips_per_class:
            problems.append(Problem(folder, "wrong_count", f"{len(wavs)} wav files, expected {clips_per_class}"))
    return problems


def format_problems(problems: Sequence[Problem]) -> str:
    """One line per problem, for a CLI or an asset check's description."""
    return "\n".join(str(p) for p in problems)


__all__ = [
    "CLIP_NAME",
    "DCASE_CLASSES",
    "DCASE_CLIPS_PER_CLASS",
    "DCASE_RATE",
    "DCASE_SECONDS",
    "EXPORT_MARKER",
    "Problem",
    "check_export_target",
    "clip_name",
    "export_dcase",
    "export_dcase_dir",
    "format_problems",
    "to_dcase_clip",
    "validate_dcase",
    "write_dcase_clip",
]
