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

import json
import tempfile
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Literal, Sequence

import torch
import torch.nn.functional as F
from transformers import AutoTokenizer, ClapTextModelWithProjection

from foley_core.clap import load_clap
from foley_core.clap.encoder import ClapEncoder, validate_texts
from foley_core.clap.towers import check_vocabulary
from foley_core.core.fsutil import staged_dir, write_text_atomic
from foley_core.core.hashing import new_digest
from foley_core.core.layout import layout
from foley_core.ldm.importing import convert_bin_to_safetensors

Unconditional = Literal["zero", "empty_prompt"]
CONDITIONER_CONFIG = "conditioner.json"
TEXT_ENCODER, TOKENIZER = "text_encoder", "tokenizer"
TEXT_ENCODER_BIN, TEXT_ENCODER_WEIGHTS = "pytorch_model.bin", "model.safetensors"
CONVERTED = "converted.json"  # in a converted text encoder's folder: the .bin it was made from


class Conditioner(ABC):
    """Text -> conditioning vectors ``(n, dim)`` and the guidance's "no condition" vector ``(dim,)``."""

    kind: str
    dim: int
    unconditional_mode: Unconditional
    # Texts per text-encoder batch in ``encode`` (``finetune.text_batch_size``, set by ``load_conditioner``):
    # bounds the memory of embedding thousands of texts. The CLAP conditioner batches by its CLAP's own size.
    text_batch_size: int = 64

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

    Prompts are truncated at ``tokenizer.model_max_length`` and embedded ``text_batch_size`` at a
    time, each batch padded to its longest text rather than to ``model_max_length`` as diffusers
    pads (RoBERTa's 512 tokens x thousands of texts is tens of GB): the encoder masks padding
    (``attention_mask``) and pools the first token, so the padding length changes an embedding
    only in its last bits (the order of the sums changes; on the tiny test encoders not even
    that). The negative prompt ``""`` is padded to the *embedding* width, as diffusers does (its
    ``max_length`` is ``prompt_embeds.shape[1]``): copying it keeps the two bit-comparable."""

    kind = "audioldm_text"
    unconditional_mode: Unconditional = "empty_prompt"

    def __init__(self, text_encoder, tokenizer, version: str = ""):
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
    def _embed(self, texts: list[str], max_length: int, padding: str = "max_length") -> torch.Tensor:
        tokens = self.tokenizer(texts, padding=padding, max_length=max_length, truncation=True, return_tensors="pt")
        out = self.text_encoder(tokens.input_ids.to(self.device), attention_mask=tokens.attention_mask.to(self.device))
        return F.normalize(out.text_embeds, dim=-1).float()

    def encode(self, texts: Sequence[str]) -> torch.Tensor:
        texts = validate_texts(texts)
        if not texts:
            return torch.zeros(0, self.dim, device=self.device)
        size, longest = self.text_batch_size, self.tokenizer.model_max_length
        return torch.cat([self._embed(texts[start : start + size], longest, padding="longest")
                          for start in range(0, len(texts), size)])

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
    def from_pretrained(cls, source: str | Path, converted_dir: Path | None = None) -> "AudioLdmTextConditioner":
        """From a folder holding ``text_encoder/`` + ``tokenizer/`` (an AudioLDM folder, or a saved
        pipeline's ``conditioner/``), or a hub repo id when online. Never unpickles: a ``text_encoder/``
        holding only ``pytorch_model.bin`` is converted to safetensors first (``convert_text_encoder``)
        into ``converted_dir``, once (None: a temporary folder, converted at every load)."""
        def load(folder) -> "ClapTextModelWithProjection":
            return ClapTextModelWithProjection.from_pretrained(str(folder), subfolder=TEXT_ENCODER,
                                                               use_safetensors=True, local_files_only=local)

        local = Path(source).exists()
        if local:
            missing = [name for name in (TEXT_ENCODER, TOKENIZER) if not (Path(source) / name).is_dir()]
            if missing:
                raise FileNotFoundError(f"{source} has no {' or '.join(f'{m}/' for m in missing)}: an AudioLDM folder "
                                        "(cvssp/audioldm-s-full-v2 layout) holds the text encoder it was trained with")
        if local and needs_conversion(Path(source)):
            if converted_dir is None:
                with tempfile.TemporaryDirectory() as scratch:
                    text_encoder = load(convert_text_encoder(Path(source), Path(scratch) / "converted"))
            else:
                text_encoder = load(convert_text_encoder(Path(source), Path(converted_dir)))
        else:
            text_encoder = load(source)
        if local:
            tokenizer = AutoTokenizer.from_pretrained(str(Path(source) / TOKENIZER), local_files_only=True)
        else:
            tokenizer = AutoTokenizer.from_pretrained(str(source), subfolder=TOKENIZER)
        version = _folder_version(Path(source)) if local else ""
        return cls(text_encoder, tokenizer, version)


def needs_conversion(folder: Path) -> bool:
    """The folder's ``text_encoder/`` holds only ``pytorch_model.bin`` (released AudioLDM folders may)."""
    encoder = Path(folder) / TEXT_ENCODER
    return not (encoder / TEXT_ENCODER_WEIGHTS).is_file() and (encoder / TEXT_ENCODER_BIN).is_file()


def convert_text_encoder(source: Path, out_dir: Path) -> Path:
    """``source/text_encoder/pytorch_model.bin`` as ``out_dir/text_encoder/model.safetensors`` (+ its
    config.json), converted as the import converts the VAE, UNet and vocoder: ``torch.load(weights_only=True)``
    through ``convert_bin_to_safetensors``, which refuses a file holding anything but tensors. Converted
    once: ``out_dir`` records the .bin it was made from (path, size, mtime) and is reused while that holds.
    The source folder is never modified. Returns ``out_dir``."""
    binary = Path(source) / TEXT_ENCODER / TEXT_ENCODER_BIN
    stat = binary.stat()
    made_from = {"source": str(binary.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    record = Path(out_dir) / CONVERTED
    if record.is_file() and json.loads(record.read_text()) == made_from:
        return Path(out_dir)
    with staged_dir(out_dir) as staging:  # a kill leaves no folder or a whole one
        (staging / TEXT_ENCODER).mkdir()
        (staging / TEXT_ENCODER / "config.json").write_bytes((binary.parent / "config.json").read_bytes())
        convert_bin_to_safetensors(binary, staging / TEXT_ENCODER / TEXT_ENCODER_WEIGHTS)
        write_text_atomic(staging / CONVERTED, json.dumps(made_from, sort_keys=True))
    return Path(out_dir)


def _module_version(module: torch.nn.Module) -> str:
    digest = new_digest(json.dumps(module.config.to_dict(), sort_keys=True, default=str))
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(name.encode() + tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


def _folder_version(folder: Path) -> str:
    """Content hash of the text encoder's and tokenizer's files."""
    digest = new_digest()
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
        conditioner = AudioLdmTextConditioner.from_pretrained(source, layout(profile).converted_text_encoder(source))
        conditioner.text_batch_size = profile.finetune.text_batch_size
        return conditioner
    if clap is None:
        clap = load_clap(profile)
    return ClapConditioner(clap, "zero")


def is_audioldm_folder(folder: Path) -> bool:
    """A diffusers AudioLDM folder (``cvssp/audioldm-s-full-v2`` layout) rather than a saved FoleyPipeline."""
    folder = Path(folder)
    return all((folder / sub).is_dir() for sub in ("unet", "vae", "vocoder", TEXT_ENCODER, TOKENIZER))
