"""Conditioners: text -> the vector the UNet was trained on (before the adapter).

The paper's chain is ``prompt -> frozen text encoder -> trainable linear adapter -> UNet``; the
text encoder must be the one the UNet was trained with. Two kinds:

- ``ClapConditioner``: the profile's own CLAP text tower (models trained here: the UNet learned
  CLAP *audio* embeddings, inference swaps in CLAP *text* embeddings). "No condition" is what
  condition dropout trained: a zero vector (or, on request, the CLAP embedding of ``""``).
- ``AudioLdmTextConditioner``: an imported AudioLDM folder's own ``text_encoder/``
  (``ClapTextModelWithProjection``) and ``tokenizer/`` (RoBERTa), used exactly as diffusers'
  ``AudioLDMPipeline._encode_prompt`` uses them: ``text_embeds`` L2-normalised; "no condition" is
  the embedding of the empty prompt ``""``.

The profile's CLAP (LAION for the paper profile) then only *scores* candidates; it never
conditions an imported AudioLDM. ``load_conditioner(profile)`` picks the kind: a profile with
``ldm.pretrained_path`` (an AudioLDM folder) conditions through that folder's text encoder.

Every conditioner returns float32 tensors on its own device (``to(device)`` moves it).
"""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Literal, Sequence

import torch
import torch.nn.functional as F

from foley_core.fsutil import write_text_atomic
from foley_core.clap.encoder import ClapEncoder, validate_texts

Unconditional = Literal["zero", "empty_prompt"]
CONDITIONER_CONFIG = "conditioner.json"
TEXT_ENCODER, TOKENIZER = "text_encoder", "tokenizer"


class Conditioner(ABC):
    """Text -> conditioning vectors ``(n, dim)`` and the guidance's "no condition" vector ``(dim,)``."""

    kind: str
    dim: int
    unconditional_mode: Unconditional

    @property
    @abstractmethod
    def version(self) -> str:
        """Identifies the weights (part of a pipeline's lineage)."""

    @property
    @abstractmethod
    def device(self) -> torch.device: ...

    @abstractmethod
    def encode(self, texts: Sequence[str]) -> torch.Tensor:
        """``(n, dim)`` float32 on ``self.device``; blank texts are refused (from a user they are a mistake)."""

    @abstractmethod
    def unconditional(self) -> torch.Tensor:
        """``(dim,)`` float32 on ``self.device``: what the UNet saw as "no condition"."""

    @abstractmethod
    def to(self, device) -> "Conditioner": ...

    def describe(self) -> dict:
        return {"kind": self.kind, "version": self.version, "dim": self.dim, "unconditional": self.unconditional_mode}


class ClapConditioner(Conditioner):
    """The profile's CLAP text tower (own trained models)."""

    kind = "clap"

    def __init__(self, clap: ClapEncoder, unconditional: Unconditional = "zero"):
        if unconditional not in ("zero", "empty_prompt"):
            raise ValueError(f"unconditional must be 'zero' or 'empty_prompt', got {unconditional!r}")
        self.clap, self.unconditional_mode, self.dim = clap, unconditional, int(clap.embed_dim)

    @property
    def version(self) -> str:
        return self.clap.version

    @property
    def device(self) -> torch.device:
        return self.clap.device

    def encode(self, texts: Sequence[str]) -> torch.Tensor:
        return self.clap.encode_text(list(texts)).to(self.device, torch.float32)  # encode_text hands back CPU tensors

    def unconditional(self) -> torch.Tensor:
        if self.unconditional_mode == "empty_prompt":
            return self.clap.encode_empty_text().to(self.device, torch.float32)
        return torch.zeros(self.dim, device=self.device)

    def to(self, device) -> "ClapConditioner":
        self.clap.to(device)
        return self


class AudioLdmTextConditioner(Conditioner):
    """An AudioLDM folder's CLAP text encoder + RoBERTa tokenizer, as ``AudioLDMPipeline._encode_prompt``.

    Prompts are padded to ``tokenizer.model_max_length`` (truncated beyond it); the negative
    prompt ``""`` is padded to the *embedding* width, as diffusers does (its ``max_length`` is
    ``prompt_embeds.shape[1]``): padding is masked, so only rounding could differ, and copying
    it keeps the two bit-comparable."""

    kind = "audioldm_text"
    unconditional_mode: Unconditional = "empty_prompt"

    def __init__(self, text_encoder, tokenizer, version: str = ""):
        from foley_core.clap.towers import check_vocabulary

        check_vocabulary(tokenizer, "AudioLDM tokenizer")  # offline transformers may hand back an empty one
        vocab = int(text_encoder.config.vocab_size)
        if len(tokenizer) > vocab:
            raise ValueError(f"the tokenizer has {len(tokenizer)} tokens but the text encoder embeds only {vocab}: "
                             "they are not from the same AudioLDM folder")
        self.text_encoder = text_encoder.eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.dim = int(text_encoder.config.projection_dim)
        self._version = version or _module_version(text_encoder)
        self._empty: torch.Tensor | None = None

    @property
    def version(self) -> str:
        return self._version

    @property
    def device(self) -> torch.device:
        return self.text_encoder.device

    @torch.no_grad()
    def _embed(self, texts: list[str], max_length: int) -> torch.Tensor:
        tokens = self.tokenizer(texts, padding="max_length", max_length=max_length, truncation=True, return_tensors="pt")
        out = self.text_encoder(tokens.input_ids.to(self.device), attention_mask=tokens.attention_mask.to(self.device))
        return F.normalize(out.text_embeds, dim=-1).float()

    def encode(self, texts: Sequence[str]) -> torch.Tensor:
        texts = validate_texts(texts)
        if not texts:
            return torch.zeros(0, self.dim, device=self.device)
        return self._embed(texts, self.tokenizer.model_max_length)

    def unconditional(self) -> torch.Tensor:
        if self._empty is None or self._empty.device != self.device:
            self._empty = self._embed([""], self.dim)[0]
        return self._empty

    def to(self, device) -> "AudioLdmTextConditioner":
        self.text_encoder.to(device)
        return self

    def save(self, folder: Path) -> None:
        folder = Path(folder)
        self.text_encoder.save_pretrained(folder / TEXT_ENCODER, safe_serialization=True)
        self.tokenizer.save_pretrained(str(folder / TOKENIZER))
        write_text_atomic(folder / CONDITIONER_CONFIG, json.dumps(self.describe(), indent=2, sort_keys=True))

    @classmethod
    def from_pretrained(cls, source: str | Path) -> "AudioLdmTextConditioner":
        """From a folder holding ``text_encoder/`` + ``tokenizer/`` (an AudioLDM folder, or a saved
        pipeline's ``conditioner/``), or a hub repo id when online. Never unpickles."""
        from transformers import AutoTokenizer, ClapTextModelWithProjection

        local = Path(source).exists()
        if local:
            missing = [name for name in (TEXT_ENCODER, TOKENIZER) if not (Path(source) / name).is_dir()]
            if missing:
                raise FileNotFoundError(f"{source} has no {' or '.join(f'{m}/' for m in missing)}: an AudioLDM folder "
                                        "(cvssp/audioldm-s-full-v2 layout) holds the text encoder it was trained with")
        text_encoder = ClapTextModelWithProjection.from_pretrained(str(source), subfolder=TEXT_ENCODER,
                                                                   use_safetensors=True, local_files_only=local)
        if local:
            tokenizer = AutoTokenizer.from_pretrained(str(Path(source) / TOKENIZER), local_files_only=True)
        else:
            tokenizer = AutoTokenizer.from_pretrained(str(source), subfolder=TOKENIZER)
        version = _folder_version(Path(source)) if local else ""
        return cls(text_encoder, tokenizer, version)


def _module_version(module: torch.nn.Module) -> str:
    digest = hashlib.sha256(json.dumps(module.config.to_dict(), sort_keys=True, default=str).encode())
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(name.encode() + tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


def _folder_version(folder: Path) -> str:
    """Content hash of the text encoder's and tokenizer's files."""
    digest = hashlib.sha256()
    for sub in (TEXT_ENCODER, TOKENIZER):
        for path in sorted(p for p in (folder / sub).rglob("*") if p.is_file()):
            digest.update(f"{sub}/{path.relative_to(folder / sub).as_posix()}".encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def pretrained_audioldm_source(profile) -> str | None:
    """The profile's AudioLDM folder (a local path, else the value as a hub repo id), or None."""
    if profile.ldm.pretrained_path is None:
        return None
    path = profile.resolve(profile.ldm.pretrained_path)
    return str(path if path.exists() else profile.ldm.pretrained_path)


def load_conditioner(profile, clap: ClapEncoder | None = None) -> Conditioner:
    """The conditioner the profile's UNet was trained with: an imported AudioLDM folder's own text
    encoder (``ldm.pretrained_path``), else the profile's CLAP text tower with a zero "no condition".

    Fine-tuning the adapter must embed its texts with this too (``conditioner.encode``)."""
    source = pretrained_audioldm_source(profile)
    if source is not None:
        return AudioLdmTextConditioner.from_pretrained(source)
    if clap is None:
        from foley_core.clap import load_clap

        clap = load_clap(profile)
    return ClapConditioner(clap, "zero")


def is_audioldm_folder(folder: Path) -> bool:
    """A diffusers AudioLDM folder (``cvssp/audioldm-s-full-v2`` layout) rather than a saved FoleyPipeline."""
    folder = Path(folder)
    return all((folder / sub).is_dir() for sub in ("unet", "vae", "vocoder", TEXT_ENCODER, TOKENIZER))
