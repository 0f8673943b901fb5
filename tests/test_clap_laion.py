"""LAION-CLAP loader without real weights: a tiny random laion CLAP saved in the official layout."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from laion_fixtures import make_tiny_laion
from laion_fixtures import released_layout as _released_layout

from foley_core.clap import load_clap
from foley_core.clap.laion import LaionClapEncoder, load_tokenizer, read_laion_state_dict
from foley_core.core.config import load_profile


@pytest.fixture(scope="module")
def tiny_laion(tmp_path_factory):
    """A random HTSAT-tiny + 1-layer RoBERTa laion CLAP, its byte-level tokenizer, and a profile using them."""
    root = tmp_path_factory.mktemp("laion")
    checkpoint, tokenizer_dir, model = make_tiny_laion(root)
    profile = load_profile("paper", {
        "paths": {"artifacts_dir": str(root / "artifacts")},
        "clap": {"checkpoint": str(checkpoint), "tokenizer_path": str(tokenizer_dir)},
    })
    return profile, model, tokenizer_dir


def test_official_layout_round_trip(tiny_laion):
    profile, model, tokenizer_dir = tiny_laion
    encoder = load_clap(profile)
    assert isinstance(encoder, LaionClapEncoder)
    assert (encoder.embed_dim, encoder.sample_rate, encoder.model_rate) == (512, 16000, 48000)
    loaded = encoder.model.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in model.state_dict().items())

    reference = LaionClapEncoder(model, load_tokenizer(tokenizer_dir, len(encoder.tokenizer), False), "ref", 16000)
    texts = ["a dog bark", "rain"]
    text = encoder.encode_text(texts)
    assert text.shape == (2, 512)
    assert torch.allclose(text.norm(dim=1), torch.ones(2), atol=1e-5)
    assert torch.allclose(text, reference.encode_text(texts), atol=1e-6)
    rng = np.random.default_rng(0)
    clips = (0.1 * rng.standard_normal((2, 16000))).astype(np.float32)
    audio = encoder.encode_audio(clips, 16000)
    assert audio.shape == (2, 512)
    assert torch.allclose(audio.norm(dim=1), torch.ones(2), atol=1e-5)
    assert torch.allclose(audio, reference.encode_audio(clips, 16000), atol=1e-5)
    assert not torch.allclose(audio[0], audio[1])
    assert load_clap(profile).version == encoder.version


def test_tokenizer_must_match_the_checkpoint_vocabulary(tiny_laion, tmp_path):
    _, _, tokenizer_dir = tiny_laion
    with pytest.raises(RuntimeError, match="vocabulary of .* tokens, expected 50265"):
        load_tokenizer(tokenizer_dir, 50265, download=False)
    with pytest.raises(FileNotFoundError, match="tokenizer folder"):
        load_tokenizer(tmp_path / "missing", 50265, download=False)


def test_missing_checkpoint_is_a_clear_error(tmp_path):
    profile = load_profile("paper", {"paths": {"artifacts_dir": str(tmp_path)}, "clap": {"checkpoint": str(tmp_path / "nope.pt")}})
    with pytest.raises(FileNotFoundError, match="nope.pt not found"):
        load_clap(profile)


class _NotATensor:
    pass


def test_unsafe_checkpoint_needs_trust(tmp_path):
    path = tmp_path / "odd.pt"
    torch.save({"state_dict": {"module.w": torch.zeros(1)}, "args": _NotATensor()}, path)
    profile = load_profile("paper", {"paths": {"artifacts_dir": str(tmp_path)}, "clap": {"checkpoint": str(path)}})
    with pytest.raises(RuntimeError, match="trust_checkpoint"):
        load_clap(profile)


class _RunsACommand:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def _tiny_state() -> dict:
    return {"module.audio_projection.0.weight": torch.randn(4, 4), "module.logit_scale_a": torch.tensor(1.0)}


def test_numpy_scalars_load_with_weights_only(tmp_path):
    path = tmp_path / "630k-audioset-best.pt"
    state = _tiny_state()
    torch.save(_released_layout(state), path)
    before = set(torch.serialization.get_safe_globals())
    with pytest.raises(Exception, match="numpy"):  # what plain weights_only=True says about these files
        torch.load(path, weights_only=True)
    loaded = read_laion_state_dict(path)  # no trust needed
    assert loaded.keys() == {"audio_projection.0.weight", "logit_scale_a"}
    assert torch.equal(loaded["audio_projection.0.weight"], state["module.audio_projection.0.weight"])
    assert set(torch.serialization.get_safe_globals()) == before  # the allow-list is scoped to the read


def test_arbitrary_objects_are_still_refused(tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    before = set(torch.serialization.get_safe_globals())
    torch.save({**_released_layout(_tiny_state()), "hook": _RunsACommand(marker)}, evil)
    with pytest.raises(RuntimeError, match=r"(?s)globals outside the allow-list: .*system.*trust_checkpoint"):
        read_laion_state_dict(evil)
    assert not marker.exists()  # refused before anything ran
    arrays = tmp_path / "arrays.pt"  # numpy arrays are not on the list either: only numeric scalars are
    torch.save({"state_dict": _tiny_state(), "history": np.arange(3.0)}, arrays)
    with pytest.raises(RuntimeError, match="trust_checkpoint"):
        read_laion_state_dict(arrays)
    odd = tmp_path / "odd.pt"
    torch.save({"state_dict": _tiny_state(), "args": _NotATensor()}, odd)
    with pytest.raises(RuntimeError, match="_NotATensor"):
        read_laion_state_dict(odd)
    assert set(torch.serialization.get_safe_globals()) == before


def test_numpy2_written_scalars_load_too(tmp_path):
    """numpy 2 pickles the scalar constructor as ``numpy._core.multiarray.scalar``: same allow-list entry."""
    import zipfile

    numpy1 = tmp_path / "numpy1.pt"
    torch.save(_released_layout(_tiny_state()), numpy1)
    numpy2 = tmp_path / "numpy2.pt"
    with zipfile.ZipFile(numpy1) as source, zipfile.ZipFile(numpy2, "w", zipfile.ZIP_STORED) as target:
        for info in source.infolist():
            data = source.read(info)
            if info.filename.endswith("data.pkl"):
                assert b"numpy.core.multiarray\nscalar" in data
                data = data.replace(b"numpy.core.multiarray\nscalar", b"numpy._core.multiarray\nscalar")
            target.writestr(info.filename, data)
    assert read_laion_state_dict(numpy2).keys() == {"audio_projection.0.weight", "logit_scale_a"}
