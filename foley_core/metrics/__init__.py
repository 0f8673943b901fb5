"""Evaluation metrics: embedders (log-mel stats, VGGish, CLAP), FAD, KAD, CLAP score.

``evaluate_dirs`` scores a ``<Class>/*.wav`` folder per class against a reference folder or
the official DCASE 2023 Task 7 statistics. VGGish (torch) is imported only when used.
"""

from foley_core.metrics.distances import fad, fad_against_stats, frechet_distance, gaussian_stats, kad, median_bandwidth
from foley_core.metrics.embedders import (
    EMBEDDER_NAMES,
    ClapAudioEmbedder,
    Embedder,
    LogMelStatsEmbedder,
    clap_scores,
    make_embedder,
)
from foley_core.metrics.evaluate import OFFICIAL, class_files, discover_classes, evaluate_dirs
from foley_core.metrics.official import OFFICIAL_FOLDER_NAMES, official_folder_name, official_stats
from foley_core.metrics.vggish import VGGishEmbedder

__all__ = [
    "EMBEDDER_NAMES",
    "OFFICIAL",
    "OFFICIAL_FOLDER_NAMES",
    "ClapAudioEmbedder",
    "Embedder",
    "LogMelStatsEmbedder",
    "VGGishEmbedder",
    "clap_scores",
    "class_files",
    "discover_classes",
    "evaluate_dirs",
    "fad",
    "fad_against_stats",
    "frechet_distance",
    "gaussian_stats",
    "kad",
    "make_embedder",
    "median_bandwidth",
    "official_folder_name",
    "official_stats",
]


def __getattr__(name: str):
    # VGGishEmbedder pulls in torch; keep `import foley_core.metrics` light.
    if name == "VGGishEmbedder":
        return VGGishEmbedder
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
