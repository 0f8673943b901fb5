"""Per-class FAD, KAD and CLAP score of a folder of generated clips (``<Class>/*.wav``).

The reference is either another folder in the same layout (e.g. held-out real clips) or
``"official"``: the DCASE 2023 Task 7 evaluation-set statistics, with the VGGish embedder.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from foley_core.core.audio import is_audio_file
from foley_core.core.config import DCASE_CLASS_IDS
from foley_core.metrics.distances import fad, fad_against_stats, kad, median_bandwidth
from foley_core.metrics.embedders import ClapAudioEmbedder, Embedder, clap_scores
from foley_core.metrics.official import OFFICIAL_FOLDER_NAMES, dcase_class_name, official_stats, official_stats_path

OFFICIAL = "official"


def class_folder(root: Path, class_name: str) -> Path | None:
    """``root/DogBark`` or, failing that, the official tool's ``root/dog_bark``; None if neither exists."""
    for name in (class_name, OFFICIAL_FOLDER_NAMES.get(class_name)):
        if name and (root / name).is_dir():
            return root / name
    return None


def class_files(root: Path, class_name: str) -> list[Path]:
    """Sorted audio files of one class folder; raises if the folder is missing or holds no audio."""
    folder = class_folder(root, class_name)
    if folder is None:
        raise FileNotFoundError(f"no folder for class {class_name!r} in {root}")
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".") and is_audio_file(p))
    if not files:
        raise FileNotFoundError(f"no audio files in {folder}")
    return files


def discover_classes(root: Path) -> list[str]:
    """Class folders holding audio, DCASE names first in challenge order (``dog_bark`` is read as ``DogBark``)."""
    if not root.is_dir():
        raise FileNotFoundError(f"not a folder: {root}")
    names = {
        dcase_class_name(d.name)
        for d in root.iterdir()
        if d.is_dir() and not d.name.startswith(".") and any(is_audio_file(p) for p in d.iterdir())
    }
    return sorted(names, key=lambda n: (DCASE_CLASS_IDS.get(n, len(DCASE_CLASS_IDS)), n))


def _mean(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return float(np.mean(present)) if present else None


def evaluate_dirs(
    generated_dir: Path,
    reference_dir: Path | str,
    embedder: Embedder,
    classes: Sequence[str] | None = None,
    *,
    kernel: str = "rbf",
    clap_embedder: ClapAudioEmbedder | None = None,
    text_embeddings: Mapping[str, np.ndarray] | None = None,
) -> dict[str, Any]:
    """Per-class FAD and KAD of ``generated_dir`` against ``reference_dir`` (or ``"official"``), plus means.

    ``classes=None``: every class folder found in ``generated_dir``. KAD uses one RBF
    bandwidth per class, the median heuristic on the *reference* embeddings, so scores of
    different systems against the same reference share a kernel. With ``"official"`` there
    are no reference samples, hence no KAD. ``clap_embedder`` + ``text_embeddings`` (class ->
    CLAP text embedding) add the mean CLAP score of each class's generated clips.
    Returns plain JSON-serialisable types (None where a metric does not apply).
    """
    generated_dir = Path(generated_dir)
    official = isinstance(reference_dir, str) and reference_dir == OFFICIAL
    if official and not getattr(embedder, "matches_official", False):
        raise ValueError(
            "reference 'official' needs the VGGish embedder with the official pre-processing and no PCA, "
            f"not {embedder.name!r}"
        )
    classes = list(classes) if classes is not None else discover_classes(generated_dir)
    if not classes:
        raise FileNotFoundError(f"no class folders with audio in {generated_dir}")
    if (clap_embedder is None) != (text_embeddings is None):
        raise ValueError("clap_embedder and text_embeddings go together")

    per_class: dict[str, dict[str, Any]] = {}
    for name in classes:
        gen_files = class_files(generated_dir, name)
        gen = embedder.embed_files(gen_files)
        row: dict[str, Any] = {"n_generated_clips": len(gen_files), "n_generated_embeddings": int(gen.shape[0])}
        if official:
            mu, sigma = official_stats(name)
            with np.load(official_stats_path(name)) as data:
                row["n_reference_embeddings"] = int(data["embedding_count"][0])
            row.update(fad=fad_against_stats(gen, mu, sigma), kad=None, kad_bandwidth=None)
        else:
            ref_files = class_files(Path(reference_dir), name)
            ref = embedder.embed_files(ref_files)
            bandwidth = median_bandwidth(ref) if kernel == "rbf" else None
            row.update(
                n_reference_clips=len(ref_files),
                n_reference_embeddings=int(ref.shape[0]),
                fad=fad(gen, ref),
                kad=kad(gen, ref, kernel=kernel, bandwidth=bandwidth),
                kad_bandwidth=bandwidth,
            )
        if clap_embedder is not None:
            if name not in text_embeddings:
                raise KeyError(f"no text embedding for class {name!r}")
            row["clap_score"] = float(clap_scores(clap_embedder.embed_files(gen_files), text_embeddings[name]).mean())
        per_class[name] = row

    means = {key: _mean([row.get(key) for row in per_class.values()]) for key in ("fad", "kad", "clap_score")}
    return {
        "embedder": embedder.name,
        "reference": OFFICIAL if official else str(reference_dir),
        "generated_dir": str(generated_dir),
        "kernel": kernel,
        "classes": per_class,
        "mean": {k: v for k, v in means.items() if k != "clap_score" or clap_embedder is not None},
    }
