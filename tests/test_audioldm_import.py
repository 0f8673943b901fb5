"""Importing a pretrained AudioLDM folder: validated, hashed once, installed as it is, corpus untouched."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from audioldm_fixtures import make_tiny_audioldm_folder
from safetensors.torch import load_file

import foley_core.ldm.importing as importing
import foley_core.ldm.training as training
from foley_core.core.config import load_profile
from foley_core.ldm import LdmComponents, MelNormalisation, train_ldm
from foley_core.ldm.importing import AudioLdmFolderError, import_audioldm, imports_pretrained_as_is, recorded_version
from foley_core.ldm.models import parameter_count


def _profile(tmp_path: Path, source: Path, **audio) -> "Profile":  # noqa: F821
    return load_profile("smoke", {
        "paths": {"data_dir": str(tmp_path / "no-data"), "artifacts_dir": str(tmp_path / "artifacts")},
        "wandb": {"mode": "disabled"},
        "audio": audio,
        "ldm": {"pretrained_path": str(source), "mel_normalisation": "none",
                "vae": {"steps": 0}, "unet": {"steps": 0}, "vocoder": {"steps": 0}},
    })  # fmt: skip


@pytest.fixture
def no_corpus(monkeypatch):
    """Fail loudly if anything decodes a clip or computes a mel of the corpus."""

    def refuse(*_args, **_kwargs):
        raise AssertionError("the import touched the corpus")

    for name in ("load_waveforms", "compute_log_mels", "reconstruction_report"):
        monkeypatch.setattr(training, name, refuse)


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_import_installs_the_folder_without_the_corpus(tmp_path, no_corpus, monkeypatch):
    source = tmp_path / "audioldm-s-full-v2"
    profile = _profile(tmp_path, source)
    originals = make_tiny_audioldm_folder(source, n_mels=profile.audio.n_mels)
    before = sorted(p.relative_to(source) for p in source.rglob("*"))
    assert imports_pretrained_as_is(profile)

    out = tmp_path / "artifacts/ldm"
    metrics = import_audioldm(profile, out)
    assert len(metrics["version"]) == 16 and metrics["imported"] and metrics["unet"]["steps"] == 0
    assert set(metrics["files"]) == {"vae/config.json", "vae/diffusion_pytorch_model.safetensors",
                                     "unet/config.json", "unet/diffusion_pytorch_model.safetensors",
                                     "vocoder/config.json", "vocoder/model.safetensors",
                                     "scheduler/scheduler_config.json"}  # fmt: skip
    assert metrics["converted_from_bin"] == []
    for name in ("vae", "unet", "vocoder"):
        assert metrics["parameters"][name] == parameter_count(originals[name]), name

    loaded = LdmComponents.load(out)
    for name in ("vae", "unet", "vocoder"):
        assert _same_weights(getattr(loaded, name), originals[name]), name
    assert loaded.normalisation == MelNormalisation()  # AudioLDM's VAE sees the raw log-mel
    assert loaded.scheduler_config["beta_schedule"] == "scaled_linear"
    described = json.loads((out / "ldm_config.json").read_text())
    assert described["imported_from"]["path"] == str(source) and described["version"] == metrics["version"]
    assert sorted(p.relative_to(source) for p in source.rglob("*")) == before  # the source is never written
    assert recorded_version(out) == metrics["version"] and recorded_version(tmp_path) is None

    hashed: list[Path] = []
    real_hash = importing.file_hash
    monkeypatch.setattr(importing, "file_hash", lambda p: hashed.append(Path(p)) or real_hash(p))
    # train_ldm on the same profile is the same import: no corpus (manifest/conditioning unused), no re-hash
    again = train_ldm(profile, None, None, out)
    assert again == metrics
    assert not [p for p in hashed if source in p.parents]


def test_version_is_the_content_not_the_place(tmp_path):
    source = tmp_path / "a" / "audioldm"
    profile = _profile(tmp_path, source)
    make_tiny_audioldm_folder(source, n_mels=profile.audio.n_mels)
    first = import_audioldm(profile, tmp_path / "ldm-a")

    moved = tmp_path / "b" / "audioldm"
    shutil.copytree(source, moved)
    assert import_audioldm(_profile(tmp_path, moved), tmp_path / "ldm-b")["version"] == first["version"]

    weights = moved / "unet/diffusion_pytorch_model.safetensors"
    state = load_file(str(weights))
    state["conv_in.bias"] = state["conv_in.bias"] + 1
    from safetensors.torch import save_file

    save_file(state, str(weights))
    changed = import_audioldm(_profile(tmp_path, moved), tmp_path / "ldm-b")  # new content: imported again
    assert changed["version"] != first["version"]
    assert torch.equal(load_file(str(tmp_path / "ldm-b/unet/diffusion_pytorch_model.safetensors"))["conv_in.bias"],
                       state["conv_in.bias"])  # fmt: skip


def test_profile_mismatches_are_listed_and_nothing_is_written(tmp_path):
    source = tmp_path / "audioldm"
    make_tiny_audioldm_folder(source, n_mels=32, sample_rate=22050, hop_length=256)
    profile = _profile(tmp_path, source, n_mels=64)  # smoke: 16 kHz, hop 160
    out = tmp_path / "ldm"
    with pytest.raises(AudioLdmFolderError) as caught:
        import_audioldm(profile, out)
    message = str(caught.value)
    assert "22050 Hz" in message and "audio.sample_rate" in message
    assert "expects 32 mel bins" in message and "audio.n_mels" in message
    assert "256 samples" in message and "audio.hop_length" in message
    assert not out.exists()


def test_missing_parts_are_clear_errors(tmp_path):
    source = tmp_path / "audioldm"
    profile = _profile(tmp_path, source)
    with pytest.raises(FileNotFoundError, match="snapshot_download"):
        import_audioldm(profile, tmp_path / "ldm")
    make_tiny_audioldm_folder(source, n_mels=profile.audio.n_mels)
    (source / "vocoder/config.json").unlink()
    with pytest.raises(FileNotFoundError, match="vocoder/config.json"):
        import_audioldm(profile, tmp_path / "ldm")
    shutil.rmtree(source / "vocoder")
    with pytest.raises(FileNotFoundError, match="no vocoder/"):
        import_audioldm(profile, tmp_path / "ldm")


def test_weights_must_match_their_config(tmp_path):
    source = tmp_path / "audioldm"
    profile = _profile(tmp_path, source)
    make_tiny_audioldm_folder(source, n_mels=profile.audio.n_mels)
    config = json.loads((source / "vae/config.json").read_text())
    config["block_out_channels"] = [12, 16]  # the weights were saved with 8 channels in the first block
    (source / "vae/config.json").write_text(json.dumps(config))
    with pytest.raises(AudioLdmFolderError, match=r"encoder.conv_in.weight has shape \[8, 1, 3, 3\]"):
        import_audioldm(profile, tmp_path / "ldm")


def test_text_encoder_must_fit_the_unet(tmp_path):
    source = tmp_path / "audioldm"
    profile = _profile(tmp_path, source)
    make_tiny_audioldm_folder(source, n_mels=profile.audio.n_mels)
    config = json.loads((source / "text_encoder/config.json").read_text())
    config["projection_dim"] = 512
    (source / "text_encoder/config.json").write_text(json.dumps(config))
    with pytest.raises(AudioLdmFolderError, match="text_encoder projects to 512"):
        import_audioldm(profile, tmp_path / "ldm")


def _to_bin(folder: Path, stem: str, bin_name: str) -> None:
    weights = folder / f"{stem}.safetensors"
    torch.save(load_file(str(weights)), folder / bin_name)
    weights.unlink()


def test_bin_only_folders_are_converted_once(tmp_path, monkeypatch):
    source = tmp_path / "audioldm"
    profile = _profile(tmp_path, source)
    originals = make_tiny_audioldm_folder(source, n_mels=profile.audio.n_mels)
    _to_bin(source / "unet", "diffusion_pytorch_model", "diffusion_pytorch_model.bin")
    _to_bin(source / "vocoder", "model", "pytorch_model.bin")
    out = tmp_path / "ldm"
    metrics = import_audioldm(profile, out)
    assert metrics["converted_from_bin"] == ["unet/diffusion_pytorch_model.bin", "vocoder/pytorch_model.bin"]
    assert "unet/diffusion_pytorch_model.bin" in metrics["files"]  # the version hashes the file as found
    assert not (source / "unet/diffusion_pytorch_model.safetensors").exists()  # the source is left as it was
    assert not list(out.rglob("*.bin"))
    loaded = LdmComponents.load(out)  # use_safetensors=True everywhere
    for name in ("vae", "unet", "vocoder"):
        assert _same_weights(getattr(loaded, name), originals[name]), name

    def no_second_conversion(*_args):
        raise AssertionError("converted twice")

    monkeypatch.setattr(importing, "convert_bin_to_safetensors", no_second_conversion)
    assert import_audioldm(profile, out) == metrics


class _RunsACommand:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_a_bin_holding_objects_is_refused(tmp_path):
    source = tmp_path / "audioldm"
    profile = _profile(tmp_path, source)
    make_tiny_audioldm_folder(source, n_mels=profile.audio.n_mels)
    unet = source / "unet"
    state = load_file(str(unet / "diffusion_pytorch_model.safetensors"))
    marker = tmp_path / "pwned"
    torch.save({**state, "hook": _RunsACommand(marker)}, unet / "diffusion_pytorch_model.bin")
    (unet / "diffusion_pytorch_model.safetensors").unlink()
    out = tmp_path / "ldm"
    with pytest.raises(AudioLdmFolderError, match="objects other than tensors"):
        import_audioldm(profile, out)
    assert not marker.exists() and not out.exists()
