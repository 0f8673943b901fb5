"""The trained (or imported) LDM as one object, saved as safetensors + JSON in an AudioLDM-like layout.

Folder layout (same subfolder names as a diffusers AudioLDM folder)::

    ldm_config.json          audio front end, mel normalisation, vocoder kind, code_version
    vae/        config.json + diffusion_pytorch_model.safetensors
    unet/       config.json + diffusion_pytorch_model.safetensors   (EMA weights)
    vocoder/    config.json + model.safetensors                     (absent with Griffin-Lim)
    scheduler/  scheduler_config.json

Loading never unpickles: every ``from_pretrained`` runs with ``use_safetensors=True``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
from transformers import SpeechT5HifiGan

from foley_core.core.audio import write_text_atomic
from foley_core.core.code_version import package_version
from foley_core.core.config import AudioConfig
from foley_core.ldm.mel import MelFrontEnd, MelNormalisation
from foley_core.ldm.models import parameter_count

LDM_CONFIG = "ldm_config.json"
FORMAT = "foley-ldm/1"


def ldm_code_version() -> str:
    """The version of this package's source (recorded with a model): changes whenever model,
    training or sampling code changes."""
    return package_version("foley_core.ldm")


def describe_ldm(audio: AudioConfig, normalisation: MelNormalisation, vocoder: str, griffinlim_iters: int,
                 parameter_counts: dict[str, int], **extra) -> dict:  # fmt: skip
    """The content of ``ldm_config.json`` (what ``LdmComponents.load`` reads back); ``extra`` adds
    keys such as ``imported_from`` (written by ``foley_core.ldm.importing``)."""
    return {
        "format": FORMAT,
        "audio": audio.model_dump(mode="json"),
        "mel_normalisation": normalisation.to_dict(),
        "vocoder": vocoder,
        "griffinlim_iters": griffinlim_iters,
        "parameter_counts": parameter_counts,
        "code_version": ldm_code_version(),
        **extra,
    }


@dataclass
class LdmComponents:
    vae: AutoencoderKL
    unet: UNet2DConditionModel
    vocoder: SpeechT5HifiGan | None  # None: Griffin-Lim fallback
    scheduler_config: dict
    audio: AudioConfig
    normalisation: MelNormalisation = MelNormalisation()
    griffinlim_iters: int = 16
    front_end: MelFrontEnd = field(init=False)

    def __post_init__(self) -> None:
        self.front_end = MelFrontEnd(self.audio)
        if self.vae.config.in_channels != 1:
            raise ValueError(f"the VAE must take a 1-channel mel image, got in_channels={self.vae.config.in_channels}")
        if self.vocoder is not None and self.vocoder.config.model_in_dim != self.audio.n_mels:
            raise ValueError(f"vocoder expects {self.vocoder.config.model_in_dim} mel bins, the front end makes {self.audio.n_mels}")
        for model in self.models():
            model.eval().requires_grad_(False)

    def models(self) -> list[torch.nn.Module]:
        return [m for m in (self.vae, self.unet, self.vocoder) if m is not None]

    @property
    def latent_scale(self) -> float:
        return float(self.vae.config.scaling_factor)

    @property
    def condition_dim(self) -> int:
        return int(self.unet.config.projection_class_embeddings_input_dim)

    def unconditional_embedding(self) -> torch.Tensor:
        """What condition dropout trained as 'no condition' for models trained here (a zero vector).

        Imported AudioLDM was trained differently: use the CLAP text embedding of "" there."""
        return torch.zeros(self.condition_dim)

    def to(self, device: torch.device | str) -> "LdmComponents":
        for model in self.models():
            model.to(device)
        self.front_end.to(device)
        return self

    def parameter_counts(self) -> dict[str, int]:
        counts = {"vae": parameter_count(self.vae), "unet": parameter_count(self.unet)}
        if self.vocoder is not None:
            counts["vocoder"] = parameter_count(self.vocoder)
        return counts

    def save(self, folder: Path, weights: bool = True) -> None:
        """Write the components; ``weights=False`` writes only the scheduler and ``ldm_config.json``
        (the trainers have already swapped each model's folder in whole: rewriting it in place
        would reopen the window in which a kill leaves a half-written model)."""
        folder = Path(folder)
        if weights:
            self.vae.save_pretrained(folder / "vae", safe_serialization=True)
            self.unet.save_pretrained(folder / "unet", safe_serialization=True)
            if self.vocoder is not None:
                self.vocoder.save_pretrained(folder / "vocoder", safe_serialization=True)
        DDIMScheduler.from_config(self.scheduler_config).save_pretrained(folder / "scheduler")
        write_text_atomic(folder / LDM_CONFIG, json.dumps(self._describe(), indent=2, sort_keys=True))

    def _describe(self) -> dict:
        return describe_ldm(self.audio, self.normalisation, "hifigan" if self.vocoder is not None else "griffinlim",
                            self.griffinlim_iters, self.parameter_counts())  # fmt: skip

    @classmethod
    def load(cls, folder: Path) -> "LdmComponents":
        folder = Path(folder)
        if not (folder / LDM_CONFIG).is_file():
            raise FileNotFoundError(f"{folder} holds no {LDM_CONFIG}; for an AudioLDM folder use LdmComponents.from_audioldm")
        described = json.loads((folder / LDM_CONFIG).read_text())
        if described.get("format") != FORMAT:
            raise ValueError(f"{folder / LDM_CONFIG}: unsupported format {described.get('format')!r} (expected {FORMAT})")
        vocoder = None
        if described["vocoder"] == "hifigan":
            vocoder = SpeechT5HifiGan.from_pretrained(folder / "vocoder", use_safetensors=True, low_cpu_mem_usage=False)
        return cls(
            vae=AutoencoderKL.from_pretrained(folder / "vae", use_safetensors=True, low_cpu_mem_usage=False),
            unet=UNet2DConditionModel.from_pretrained(folder / "unet", use_safetensors=True, low_cpu_mem_usage=False),
            vocoder=vocoder,
            scheduler_config=dict(DDIMScheduler.load_config(folder / "scheduler")),
            audio=AudioConfig.model_validate(described["audio"]),
            normalisation=MelNormalisation(**described["mel_normalisation"]),
            griffinlim_iters=described["griffinlim_iters"],
        )

    @classmethod
    def from_audioldm(cls, path: str | Path, audio: AudioConfig | None = None) -> "LdmComponents":
        """Read a diffusers AudioLDM folder (``cvssp/audioldm-s-full-v2`` layout) from a local path,
        or from the hub by repo id when online. ``text_encoder/`` and ``tokenizer/`` condition the UNet
        and are read by ``foley_core.generation.conditioning.AudioLdmTextConditioner``, not here.
        AudioLDM's VAE sees the raw log-mel (identity normalisation)."""
        source = str(path)
        if Path(source).exists() and not (Path(source) / "unet").is_dir():
            raise FileNotFoundError(f"{source} is not an AudioLDM folder (no unet/ subfolder)")
        audio = audio or AudioConfig()
        vocoder = SpeechT5HifiGan.from_pretrained(source, subfolder="vocoder", use_safetensors=True, low_cpu_mem_usage=False)
        if vocoder.config.sampling_rate != audio.sample_rate:
            raise ValueError(f"AudioLDM vocoder runs at {vocoder.config.sampling_rate} Hz, profile audio at {audio.sample_rate} Hz")
        if math.prod(vocoder.config.upsample_rates) != audio.hop_length:
            raise ValueError(f"AudioLDM vocoder makes {math.prod(vocoder.config.upsample_rates)} samples per mel frame, "
                             f"profile audio hops {audio.hop_length}")
        return cls(
            vae=AutoencoderKL.from_pretrained(source, subfolder="vae", use_safetensors=True, low_cpu_mem_usage=False),
            unet=UNet2DConditionModel.from_pretrained(source, subfolder="unet", use_safetensors=True, low_cpu_mem_usage=False),
            vocoder=vocoder,
            scheduler_config=dict(DDIMScheduler.load_config(source, subfolder="scheduler")),
            audio=audio,
        )
