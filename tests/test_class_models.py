"""A model per class (``ldm.models``): each class's `model: small|big` routes it to a named LDM,
as the winning system did; with no models named, one LDM serves every class."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from audioldm_fixtures import make_tiny_audioldm_folder

from foley_core import stages
from foley_core.core.config import load_profile
from foley_core.core.layout import layout
from foley_core.generation.pipeline import FoleyPipeline
from foley_core.generation.submission import pipeline_for_class
from foley_core.ldm import LdmComponents
from foley_core.registry import CLASS_MODELS

AUDIO = {"clip_seconds": 1.0, "n_mels": 64, "n_fft": 1024, "win_length": 1024}


def _profile(tmp_path: Path, small: Path, big: Path | None):
    return load_profile("smoke", {
        "paths": {"data_dir": str(tmp_path / "no-data"), "artifacts_dir": str(tmp_path / "artifacts")},
        "wandb": {"mode": "disabled"}, "audio": AUDIO,
        "ldm": {"pretrained_path": str(small), "mel_normalisation": "none", "models": {"big": str(big)} if big else {},
                "vae": {"steps": 0}, "unet": {"steps": 0}, "vocoder": {"steps": 0}},
    })  # fmt: skip


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("class_models")
    make_tiny_audioldm_folder(root / "small", seed=0)
    make_tiny_audioldm_folder(root / "big", seed=1)
    make_tiny_audioldm_folder(root / "big-retrained", seed=2)
    return root


def _same(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_classes_route_to_their_named_model_and_one_model_is_a_config_choice(tmp_path, folders):
    two = _profile(tmp_path, folders / "small", folders / "big")
    # configs/smoke.yaml names MovingMotorVehicle and Rain `big`, as the winning submission did
    assert two.classes_of("big") == ["MovingMotorVehicle", "Rain"]
    assert two.model_of("DogBark") is None and two.model_of("Rain") == "big"
    assert two.for_model("big").ldm.pretrained_path == folders / "big"
    assert two.for_model(None) is two
    one = _profile(tmp_path, folders / "small", None)
    assert one.named_models() == [] and one.classes_of(None) == one.class_names


def test_the_ldm_stage_imports_every_named_model_and_versions_them_all(tmp_path, folders):
    profile = _profile(tmp_path, folders / "small", folders / "big")
    where = layout(profile)
    result = stages.build_ldm(profile)
    small, big = LdmComponents.load(where.ldm), LdmComponents.load(where.ldm_for("big"))
    assert not _same(small.unet, big.unet)
    reference = FoleyPipeline.from_pretrained(folders / "big")
    assert _same(big.unet, reference.ldm.unet)
    assert result.metadata["model big"]["classes"] == ["MovingMotorVehicle", "Rain"]
    # another big model is another version of the stage (and so of everything after it)
    other = _profile(tmp_path / "other", folders / "small", folders / "big-retrained")
    assert stages.build_ldm(other).version != result.version
    assert stages.build_ldm(_profile(tmp_path / "one", folders / "small", None)).version != result.version


def test_a_promoted_folder_carries_the_class_models_and_each_class_gets_its_own(tmp_path, folders):
    profile = _profile(tmp_path, folders / "small", folders / "big")
    main, big = FoleyPipeline.from_pretrained(folders / "small"), FoleyPipeline.from_pretrained(folders / "big")
    promoted = tmp_path / "promoted"
    main.save_pretrained(promoted)
    big.save_pretrained(promoted / CLASS_MODELS / "big")
    loaded: dict = {}
    assert pipeline_for_class(main, promoted, profile, "DogBark", loaded) is main
    rain = pipeline_for_class(main, promoted, profile, "Rain", loaded)
    assert _same(rain.ldm.unet, big.ldm.unet) and not _same(rain.ldm.unet, main.ldm.unet)
    assert pipeline_for_class(main, promoted, profile, "MovingMotorVehicle", loaded) is rain  # loaded once
    out = rain(["rain falling"], n_candidates=1, seeds=[3], steps=2)
    assert out.waveforms.shape[0] == 1 and torch.isfinite(torch.from_numpy(out.waveforms)).all()
    with pytest.raises(FileNotFoundError, match="models/big"):
        pipeline_for_class(main, tmp_path / "no-class-models", profile, "Rain")
