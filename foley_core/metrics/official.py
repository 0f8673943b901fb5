"""The official DCASE 2023 Task 7 evaluation statistics (VGGish mu/sigma per class).

Copied into ``foley_core/data/dcase_stats/`` (see the README there for the source).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np

STATS_DIR = Path(__file__).resolve().parent.parent / "data" / "dcase_stats"

# DCASE class name -> folder name used by the official FAD repository.
OFFICIAL_FOLDER_NAMES = {
    "DogBark": "dog_bark",
    "Footstep": "footstep",
    "GunShot": "gunshot",
    "Keyboard": "keyboard",
    "MovingMotorVehicle": "moving_motor_vehicle",
    "Rain": "rain",
    "Sneeze_Cough": "sneeze_cough",
}
_BY_FOLDER = {folder: name for name, folder in OFFICIAL_FOLDER_NAMES.items()}


def official_folder_name(class_name: str) -> str:
    """``DogBark`` or ``dog_bark`` -> ``dog_bark``; anything else raises KeyError naming the choices."""
    if class_name in OFFICIAL_FOLDER_NAMES:
        return OFFICIAL_FOLDER_NAMES[class_name]
    if class_name in _BY_FOLDER:
        return class_name
    raise KeyError(
        f"no official DCASE statistics for class {class_name!r}; known: {', '.join(OFFICIAL_FOLDER_NAMES)}"
    )


def dcase_class_name(name: str) -> str:
    """``dog_bark`` or ``DogBark`` -> ``DogBark``."""
    return _BY_FOLDER.get(name, name)


def official_stats_path(class_name: str) -> Path:
    return STATS_DIR / f"{official_folder_name(class_name)}.vggish_mu_sigma.npz"


@lru_cache(maxsize=None)
def _load(path: Path) -> tuple[np.ndarray, np.ndarray]:
    if not path.is_file():
        raise FileNotFoundError(f"official statistics file missing: {path} (is the package installed with its data?)")
    with np.load(path) as data:
        mu, sigma = data["mu"].astype(np.float64), data["sigma"].astype(np.float64)
    if mu.shape != (128,) or sigma.shape != (128, 128):
        raise ValueError(f"{path}: expected mu (128,) and sigma (128, 128), got {mu.shape} and {sigma.shape}")
    mu.setflags(write=False)
    sigma.setflags(write=False)
    return mu, sigma


def official_stats(class_name: str) -> tuple[np.ndarray, np.ndarray]:
    """(mu (128,), sigma (128, 128)) of the hidden evaluation set's VGGish embeddings for a class."""
    return _load(official_stats_path(class_name))
