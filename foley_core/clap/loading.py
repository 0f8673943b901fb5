"""``load_clap(profile)``: the profile's CLAP encoder, trained here or a pretrained LAION checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

from foley_core.clap.encoder import ClapEncoder, TrainedClapEncoder
from foley_core.clap.laion import load_laion_clap
from foley_core.core.config import Profile
from foley_core.core.layout import layout

# A pipeline run asks for the LAION CLAP once per embedding partition, per generated class and per
# stage (26 times for the paper profile); each load rebuilds HTSAT + RoBERTa and reads and hashes
# a 2 GB checkpoint. The CLAP is frozen, so one loaded copy per (checkpoint file, settings) serves
# the whole process; a changed file (size or mtime) is loaded again.
_LAION_CACHE: dict[tuple, ClapEncoder] = {}
_LAION_CACHE_SIZE = 2


def load_clap(profile: Profile) -> ClapEncoder:
    if profile.clap.source == "trained":
        return TrainedClapEncoder.load(layout(profile).clap)
    key = _laion_key(profile)
    if key is None:  # a checkpoint not on disk yet (a download, or an error to report): no caching
        return load_laion_clap(profile)
    if key not in _LAION_CACHE:
        while len(_LAION_CACHE) >= _LAION_CACHE_SIZE:
            _LAION_CACHE.pop(next(iter(_LAION_CACHE)))
        _LAION_CACHE[key] = load_laion_clap(profile)
    return _LAION_CACHE[key]


def _laion_key(profile: Profile) -> tuple | None:
    checkpoint = profile.resolve(Path(profile.clap.checkpoint)) if profile.clap.checkpoint else None
    if checkpoint is None or not checkpoint.is_file():
        return None
    stat = checkpoint.stat()
    settings = json.dumps(profile.clap.model_dump(mode="json"), sort_keys=True)
    return str(checkpoint.resolve()), stat.st_size, stat.st_mtime_ns, settings, str(profile.audio.sample_rate)
