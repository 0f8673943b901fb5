"""Pretrained LAION-CLAP (``paper`` profile): an official checkpoint through laion-clap's own ``CLAP`` class.

Official files (``630k-audioset-best.pt``: HTSAT-tiny + RoBERTa, 512-d) are torch-saved
dicts whose ``state_dict`` keys carry a ``module.`` prefix. Everything is read from local
paths; the hub is used only when ``clap.download`` is set AND ``HF_HUB_OFFLINE=0``.

laion's ``CLAP`` builds its RoBERTa with ``RobertaModel.from_pretrained('roberta-base')``
(a download). The checkpoint holds every RoBERTa weight, so we build the same
architecture from a config read off the checkpoint's tensors and load the weights over it.
"""

from __future__ import annotations

import logging
import os
import pickle
from contextlib import contextmanager
from copy import deepcopy
from pathlib import Path
from typing import Sequence
from unittest import mock

import numpy as np
import soxr
import torch
import torch.nn.functional as F
from huggingface_hub import hf_hub_download
from transformers import RobertaConfig, RobertaModel, RobertaTokenizer

try:
    from numpy._core.multiarray import scalar  # numpy >= 2; numpy 1.26 ships this name as a shim
except ImportError:  # pragma: no cover - numpy < 1.26
    from numpy.core.multiarray import scalar

from foley_core.clap._laion import submodule
from foley_core.clap.encoder import ClapEncoder
from foley_core.clap.towers import check_vocabulary
from foley_core.core.config import Profile
from foley_core.core.hashing import file_hash, sha256_hex

HUB_REPO = "lukewys/laion_clap"
TOKENIZER_MAX_LENGTH = 77  # laion's hook.py tokenizes to 77 tokens
log = logging.getLogger(__name__)


def numpy_scalar_globals() -> list:
    """What ``torch.load(weights_only=True)`` must additionally accept to read numpy *scalars*
    (a checkpoint's ``epoch`` / metric entries saved as ``numpy.int64`` / ``numpy.float64``).

    A pickled numpy scalar is ``numpy.core.multiarray.scalar(numpy.dtype('f8'), raw bytes)`` plus a
    BUILD of the dtype's state, so torch needs: the ``scalar`` function (under both the numpy 1 and
    numpy 2 module names, whichever numpy wrote the file), ``numpy.dtype``, and the dtype class of
    each plain numeric type (``numpy.dtypes.Float64DType``, ...), as torch's weights_only notes
    advise. Nothing else: no arrays (``ndarray`` / ``_reconstruct``), no object, string, void
    (structured) or datetime dtypes, so a numpy scalar can only ever be a number made of bytes.
    """
    numeric = (np.bool_, np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64,
               np.float16, np.float32, np.float64)  # fmt: skip
    return [
        (scalar, "numpy.core.multiarray.scalar"),  # name numpy 1 pickles it under
        (scalar, "numpy._core.multiarray.scalar"),  # name numpy 2 pickles it under
        np.dtype,
        *sorted({type(np.dtype(t)) for t in numeric}, key=lambda c: c.__name__),
    ]


def _numpy_scalars_allowed():
    """``safe_globals`` for the entries not already allowed, so leaving it never removes a caller's own."""
    present = set(torch.serialization.get_safe_globals())
    return torch.serialization.safe_globals([g for g in numpy_scalar_globals() if g not in present])


def load_weights_only(path: Path):
    """``torch.load(path, weights_only=True)`` that also reads numpy scalars (``numpy_scalar_globals``)."""
    with _numpy_scalars_allowed():
        return torch.load(path, map_location="cpu", weights_only=True)


def _unsafe_globals(path: Path) -> str:
    """The pickle globals of ``path`` that even the numpy-scalar allow-list does not accept (for messages)."""
    try:
        with _numpy_scalars_allowed():
            return ", ".join(torch.serialization.get_unsafe_globals_in_checkpoint(path)) or "none found statically"
    except Exception:  # noqa: BLE001 - only for the message (e.g. a legacy, non-zip torch.save file)
        return "unknown"


def read_laion_state_dict(path: Path, trust_checkpoint: bool = False) -> dict[str, torch.Tensor]:
    """The model weights of an official checkpoint, without the DDP ``module.`` prefix.

    Read with ``torch.load(weights_only=True)`` plus an allow-list of exactly numpy's numeric
    scalars (the released files keep e.g. ``epoch`` and metrics as numpy scalars). Anything else
    (a class, a reduce to ``os.system``, numpy arrays) is refused with the offending globals
    named, unless ``clap.trust_checkpoint: true`` (an explicit, documented opt-in to unpickling)."""
    try:
        checkpoint = load_weights_only(path)
    except pickle.UnpicklingError as exc:
        if not trust_checkpoint:
            unsafe = _unsafe_globals(path)
            raise RuntimeError(
                f"{path} holds objects other than tensors, plain values and numpy numeric scalars, so it cannot be "
                f"read with torch.load(weights_only=True) (globals outside the allow-list: {unsafe}). Nothing in it "
                f"was executed. If you trust the file, set clap.trust_checkpoint: true. ({exc})"
            ) from exc
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    state = checkpoint.get("state_dict", checkpoint) if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict) or not state:
        raise ValueError(f"{path} is not a laion-clap checkpoint (no state_dict of tensors)")
    state = {(k[len("module."):] if k.startswith("module.") else k): v for k, v in state.items()}
    # A buffer older transformers saved; transformers >= 4.31 no longer has it (laion drops it too).
    state.pop("text_branch.embeddings.position_ids", None)
    return state


def roberta_config_from_state(state: dict[str, torch.Tensor]):
    """The RoBERTa architecture the checkpoint was trained with, read off its tensor shapes."""
    words = state["text_branch.embeddings.word_embeddings.weight"]
    layers = {int(k.split(".")[3]) for k in state if k.startswith("text_branch.encoder.layer.")}
    hidden = words.shape[1]
    return RobertaConfig(
        vocab_size=words.shape[0], hidden_size=hidden, num_hidden_layers=len(layers),
        num_attention_heads=max(1, hidden // 64),  # roberta-base: 768 / 12 heads
        intermediate_size=state["text_branch.encoder.layer.0.intermediate.dense.weight"].shape[0],
        max_position_embeddings=state["text_branch.embeddings.position_embeddings.weight"].shape[0],
        type_vocab_size=state["text_branch.embeddings.token_type_embeddings.weight"].shape[0],
        pad_token_id=1, bos_token_id=0, eos_token_id=2, layer_norm_eps=1e-5,
    )


@contextmanager
def _roberta_from_config(config):
    """Make laion's ``RobertaModel.from_pretrained('roberta-base')`` build ``config`` locally instead."""
    class LocalRoberta:
        @staticmethod
        def from_pretrained(*_args, **_kwargs):
            return RobertaModel(config)

    with mock.patch.object(submodule("model"), "RobertaModel", LocalRoberta):
        yield


def build_laion_clap(audio_model: str, roberta_config, enable_fusion: bool = False) -> torch.nn.Module:
    """laion's ``CLAP`` with model config ``audio_model`` (e.g. HTSAT-tiny) and a RoBERTa text branch."""
    factory = submodule("factory")
    if audio_model not in factory.list_models():
        raise ValueError(f"unknown laion audio model {audio_model!r}; available: {factory.list_models()}")
    if enable_fusion:
        raise ValueError("fusion checkpoints are not supported: use a non-fusion one (630k-audioset-best.pt)")
    cfg = deepcopy(factory._MODEL_CONFIGS[audio_model])
    cfg["text_cfg"]["model_type"] = "roberta"
    with _roberta_from_config(roberta_config):
        return submodule("model").CLAP(**cfg, enable_fusion=False, fusion_type="None")


class LaionClapEncoder(ClapEncoder):
    """A laion ``CLAP`` + RoBERTa tokenizer behind the common interface.

    Audio at ``sample_rate`` (the pipeline's rate) is resampled to the model's rate,
    int16-quantised, and repeat-padded (or cut to its first window) as laion does for
    non-fusion models.
    """

    batch_size = 16

    def __init__(self, model, tokenizer, version: str, sample_rate: int):
        super().__init__(model)
        self.tokenizer = tokenizer
        self.version = version
        self.sample_rate = sample_rate
        self.embed_dim = model.joint_embed_shape
        self.model_rate = model.audio_cfg.sample_rate
        self.window = model.audio_cfg.clip_samples

    def _text_batch(self, texts):
        tokens = self.tokenizer(texts, padding="max_length", truncation=True, max_length=TOKENIZER_MAX_LENGTH,
                                return_tensors="pt")
        return self.model.get_text_embedding({k: tokens[k] for k in ("input_ids", "attention_mask")})

    def _audio_batch(self, waveforms):
        items = [self._fit_window(soxr.resample(w, self.sample_rate, self.model_rate)) for w in waveforms]
        batch = {"waveform": torch.from_numpy(np.stack(items)).to(self.device),
                 "longer": torch.zeros(len(items), dtype=torch.bool, device=self.device)}
        embedding = self.model.encode_audio(batch, device=self.device)["embedding"]
        return F.normalize(self.model.audio_projection(embedding), dim=-1)

    def _fit_window(self, wave: np.ndarray) -> np.ndarray:
        wave = (np.clip(wave, -1, 1) * 32767).astype(np.int16).astype(np.float32) / 32767  # laion's int16 round trip
        if wave.shape[0] >= self.window:
            return wave[: self.window]
        repeated = np.tile(wave, self.window // wave.shape[0])
        return np.pad(repeated, (0, self.window - repeated.shape[0])).astype(np.float32)


def load_tokenizer(path: Path | None, expected_vocab: int, download: bool, fallbacks: Sequence[Path] = ()):
    """The RoBERTa tokenizer from ``path`` (``clap.tokenizer_path``), else from the first of ``fallbacks``
    that holds one, else (``download`` and the hub allowed) roberta-base from the hub, saved to ``path``.

    The released LAION checkpoints hold no tokenizer. An AudioLDM folder's ``tokenizer/`` holds
    roberta-base's vocabulary and merges (its text encoder is LAION's CLAP text tower), so
    ``load_laion_clap`` passes it as a fallback: the paper profile needs no separate download.
    ``check_vocabulary`` still checks the tokenizer against the checkpoint's embedding rows."""
    looked = [Path(p) for p in (path, *fallbacks) if p is not None]
    found = next((p for p in looked if _holds_tokenizer(p)), None)
    if found is not None:
        tokenizer = RobertaTokenizer.from_pretrained(str(found), local_files_only=True)
        name = str(found)
        if path is not None and found != Path(path):
            log.info("RoBERTa tokenizer: %s has none, using %s", path, found)
    elif download and _hub_allowed():
        tokenizer = RobertaTokenizer.from_pretrained("roberta-base")
        name = "roberta-base"
        if path is not None:
            tokenizer.save_pretrained(str(path))
    else:
        places = ", ".join(str(p) for p in looked) or "nowhere: clap.tokenizer_path and ldm.pretrained_path are not set"
        raise FileNotFoundError(
            f"no RoBERTa tokenizer folder (vocab.json + merges.txt, or tokenizer.json) found; looked in {places}. "
            "The LAION checkpoint holds none: put roberta-base's vocab.json + merges.txt in clap.tokenizer_path, "
            "or keep the AudioLDM folder's tokenizer/ (ldm.pretrained_path), or set clap.download: true with "
            "HF_HUB_OFFLINE=0."
        )
    check_vocabulary(tokenizer, name, expected=expected_vocab)
    return tokenizer


def _holds_tokenizer(folder: Path) -> bool:
    """roberta-base's vocab.json + merges.txt, or the tokenizer.json newer transformers save instead."""
    files = {name: (folder / name).is_file() for name in ("vocab.json", "merges.txt", "tokenizer.json")}
    return (files["vocab.json"] and files["merges.txt"]) or files["tokenizer.json"]


def audioldm_tokenizer_folders(profile: Profile) -> list[Path]:
    """The ``tokenizer/`` folders of the profile's AudioLDM folders (``ldm.pretrained_path``, then
    ``ldm.models``): where a LAION CLAP finds its RoBERTa tokenizer when ``clap.tokenizer_path`` has none."""
    folders = [profile.ldm.pretrained_path, *(profile.ldm.models[name] for name in sorted(profile.ldm.models))]
    return [profile.resolve(Path(folder)) / "tokenizer" for folder in folders if folder is not None]


def _hub_allowed() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "1") in {"0", "false", "False"}


def _checkpoint_path(profile: Profile) -> Path:
    if profile.clap.checkpoint is None:
        raise ValueError("clap.source is laion but clap.checkpoint is not set (a local .pt file)")
    path = profile.resolve(profile.clap.checkpoint)
    if path.is_file():
        return path
    if profile.clap.download and _hub_allowed():
            return Path(hf_hub_download(HUB_REPO, path.name, local_dir=str(path.parent)))
    raise FileNotFoundError(
        f"LAION-CLAP checkpoint {path} not found. Download {path.name} from huggingface.co/{HUB_REPO} to that path, "
        "or set clap.download: true with HF_HUB_OFFLINE=0."
    )




def load_laion_clap(profile: Profile) -> LaionClapEncoder:
    clap = profile.clap
    path = _checkpoint_path(profile)
    state = read_laion_state_dict(path, clap.trust_checkpoint)
    roberta = roberta_config_from_state(state)
    model = build_laion_clap(clap.audio_tower, roberta)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(
            f"{path} does not match laion CLAP {clap.audio_tower} + RoBERTa: "
            f"{len(missing)} missing (e.g. {missing[:3]}), {len(unexpected)} unexpected (e.g. {unexpected[:3]})"
        )
    tokenizer_dir = profile.resolve(clap.tokenizer_path) if clap.tokenizer_path else None
    tokenizer = load_tokenizer(tokenizer_dir, roberta.vocab_size, clap.download, audioldm_tokenizer_folders(profile))
    version = sha256_hex(f"{file_hash(path)}|{clap.audio_tower}|{len(tokenizer)}")[:16]
    return LaionClapEncoder(model, tokenizer, version, profile.audio.sample_rate)
