"""``load_clap(profile)``: the profile's CLAP encoder, trained here or a pretrained LAION checkpoint."""

from __future__ import annotations

from foley_core.clap.encoder import ClapEncoder, TrainedClapEncoder
from foley_core.config import Profile
from foley_core.layout import layout


def load_clap(profile: Profile) -> ClapEncoder:
    if profile.clap.source == "trained":
        return TrainedClapEncoder.load(layout(profile).clap)
    from foley_core.clap.laion import load_laion_clap

    return load_laion_clap(profile)
