"""The inference pipeline, in the diffusers manner: components as attributes, one ``__call__``,
``save_pretrained`` / ``from_pretrained`` to a folder.

prompt -> conditioner (the text encoder the UNet was trained with) -> adapter -> UNet sampling
with classifier-free guidance -> VAE decode -> vocoder -> CLAP audio embedding -> best candidate.

The conditioner (``foley_core.generation.conditioning``) is the profile's CLAP text tower for
models trained here, or an imported AudioLDM folder's own CLAP text encoder; the profile's CLAP
(LAION for the paper profile) only *scores* candidates. With one candidate and no scoring target
nothing needs scoring, so a pipeline may have no CLAP at all (a plain AudioLDM folder).

All candidates of all prompts go through the UNet as one batch. Every candidate has its own
seeded ``torch.Generator``, so a clip can be regenerated alone with the same seed and model:

- convention ``"foley"`` (models trained here): candidate ``c`` of attempt ``a`` of a prompt with
  seed ``s`` draws from ``candidate_seed(s, a, c)``;
- convention ``"diffusers"`` (imported AudioLDM): candidate 0 of attempt 0 draws from
  ``torch.Generator().manual_seed(s)`` itself, every other candidate from ``candidate_seed``.
  With the folder's own scheduler (sampler ``"native"``), length, guidance rule and decoding as
  ``AudioLDMPipeline`` (see ``foley_core.ldm.sampling``), one candidate gives exactly the waveform
  ``AudioLDMPipeline(prompt, num_inference_steps=K, guidance_scale=g, audio_length_in_s=s,
  generator=torch.Generator().manual_seed(seed))`` gives.

Device and precision: ``to(device, precision)`` moves every model (conditioner, adapter, LDM,
CLAP) to one device; ``precision`` (fp32 | bf16 | fp16) is the UNet's dtype while sampling. The
profile's ``generation.device`` / ``generation.precision`` are applied by ``place``.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal, Sequence

import numpy as np
import torch
from diffusers import UNet2DConditionModel
from transformers import SpeechT5HifiGanConfig

from foley_core.clap import load_clap
from foley_core.clap.encoder import ClapEncoder, TrainedClapEncoder
from foley_core.clap.similarity import cosine_scores
from foley_core.core.audio import write_text_atomic
from foley_core.core.config import AudioConfig
from foley_core.core.hashing import stable_seed
from foley_core.core.layout import PIPELINE_CONFIG, layout
from foley_core.generation.adapter import EmbeddingAdapter
from foley_core.generation.conditioning import (
    AudioLdmTextConditioner,
    ClapConditioner,
    Conditioner,
    Unconditional,
    is_audioldm_folder,
    load_conditioner,
    pretrained_audioldm_source,
)  # fmt: skip
from foley_core.ldm.components import LdmComponents
from foley_core.ldm.sampling import Convention, SamplerName, generate_waveforms, make_sampler

CONDITIONER_DIR = "conditioner"  # in a saved pipeline with an AudioLDM text encoder
Precision = Literal["fp32", "bf16", "fp16"]
PRECISIONS: dict[str, torch.dtype] = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
ClapSource = Literal["trained", "laion", "none"]

__all__ = ["FoleyPipeline", "GenerationOutput", "ScoringUnavailable", "Unconditional", "assemble_pipeline",
           "candidate_seed", "place", "resolve_device"]  # fmt: skip


def candidate_seed(seed: int, attempt: int, candidate: int) -> int:
    """A stable 63-bit seed per (clip seed, regeneration attempt, candidate)."""
    return stable_seed(seed, attempt, candidate, bits=63)


def generator_seed(seed: int, attempt: int, candidate: int, convention: Convention = "foley") -> int:
    """The seed of one candidate's generator (see the module notes)."""
    if convention == "diffusers" and attempt == 0 and candidate == 0:
        return int(seed)
    return candidate_seed(seed, attempt, candidate)


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` = CUDA when torch sees a GPU, else the CPU; ``cuda`` without a GPU is an error, not a fallback."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"generation.device is {name!r} but torch sees no CUDA device (use 'auto' or 'cpu')")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ValueError(f"generation.device is {name!r} but torch sees {torch.cuda.device_count()} CUDA device(s)")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"generation.device is {name!r} but torch sees no MPS device")
    return device


def precision_dtype(precision: str) -> torch.dtype:
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; use one of {', '.join(PRECISIONS)}")
    return PRECISIONS[precision]


class ScoringUnavailable(ValueError):
    """Scoring was needed (several candidates, or targets) but the pipeline has no CLAP to score with."""


@dataclass
class GenerationOutput:
    waveforms: np.ndarray  # (n_prompts, samples): the selected candidate of each prompt
    candidates: np.ndarray  # (n_prompts, n_candidates, samples)
    scores: np.ndarray  # (n_prompts, n_candidates): cosine(CLAP audio, CLAP text or target); NaN: not scored
    best: np.ndarray  # (n_prompts,) index of the best candidate
    sample_rate: int

    @property
    def scored(self) -> bool:
        return not bool(np.isnan(self.scores).all())


class FoleyPipeline:
    def __init__(self, clap: ClapEncoder | None, adapter: EmbeddingAdapter, ldm: LdmComponents, *,
                 sampler: SamplerName = "ddim", steps: int = 25, clap_source: ClapSource = "trained",
                 unconditional: Unconditional = "zero", conditioner: Conditioner | None = None,
                 convention: Convention = "foley", clap_loader: Callable[[], ClapEncoder] | None = None,
                 eta: float = 0.0):
        """``conditioner`` None: the CLAP's own text tower, guiding against ``unconditional`` (a zero
        vector, or the CLAP embedding of ""). ``clap`` None: no scoring until ``clap_loader`` (if
        given) supplies a CLAP, which happens only when scoring is needed. ``eta``: DDIM's
        (``generation.eta``), passed to the scheduler's step as diffusers' pipelines pass theirs."""
        if conditioner is None:
            if clap is None:
                raise ValueError("a pipeline without a conditioner conditions through its CLAP: give one of them")
            conditioner = ClapConditioner(clap, unconditional)
        if adapter.dim != conditioner.dim:
            raise ValueError(f"adapter dim {adapter.dim} != conditioner dim {conditioner.dim}")
        if conditioner.dim != ldm.condition_dim:
            raise ValueError(f"the {conditioner.kind} conditioner embeds {conditioner.dim}-d but the UNet is "
                             f"conditioned on {ldm.condition_dim}-d")
        if convention not in ("foley", "diffusers"):
            raise ValueError(f"convention must be 'foley' or 'diffusers', got {convention!r}")
        self.clap, self.adapter, self.ldm, self.conditioner = clap, adapter.eval(), ldm, conditioner
        self.sampler, self.steps, self.clap_source, self.convention = sampler, steps, clap_source, convention
        self.eta = float(eta)
        self._clap_loader = clap_loader
        self.device, self.precision = torch.device("cpu"), "fp32"

    @property
    def sample_rate(self) -> int:
        return self.ldm.audio.sample_rate

    @property
    def unconditional(self) -> Unconditional:
        """What the guidance's "no condition" is: a zero vector or the encoder's embedding of ""."""
        return self.conditioner.unconditional_mode

    @torch.no_grad()
    def conditions(self, prompts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """(raw conditioner embeddings, adapted conditioning vectors) for the prompts, on the pipeline's device."""
        raw = self.conditioner.encode(list(prompts))
        weight = self.adapter.linear.weight
        return raw, self.adapter(raw.to(weight.device, weight.dtype))

    @torch.no_grad()
    def unconditional_embedding(self) -> torch.Tensor:
        """The guidance's "no condition" vector, as the UNet was trained (not adapted)."""
        return self.conditioner.unconditional()

    def scoring_clap(self) -> ClapEncoder:
        """The CLAP that scores candidates, loading it on first use when the pipeline was made without one."""
        if self.clap is None and self._clap_loader is not None:
            try:
                clap = self._clap_loader()
            except (OSError, ValueError, RuntimeError, ImportError) as exc:
                raise ScoringUnavailable(f"scoring candidates needs the profile's CLAP, which did not load: {exc}") from exc
            self.clap = clap.to(self.device)
        if self.clap is None:
            raise ScoringUnavailable("this pipeline has no CLAP to score candidates with: generate one candidate, "
                                     "or give it a CLAP (a profile whose CLAP is trained or downloaded)")
        return self.clap

    @torch.no_grad()
    def __call__(self, prompts: Sequence[str], *, n_candidates: int = 1, guidance_scale: float | Sequence[float] = 2.5,
                 seeds: int | Sequence[int] = 0, attempt: int = 0, steps: int | None = None,
                 sampler: SamplerName | None = None, targets: np.ndarray | None = None,
                 seconds: float | None = None) -> GenerationOutput:
        """Generate ``n_candidates`` per prompt in one batch and pick the best of each by CLAP score.

        ``seeds``: one per prompt (an int means seed, seed+1, ...). ``targets`` (n_prompts, d):
        score against these embeddings instead of the prompts' text embeddings (multi-target).
        ``seconds``: clip length (None: the model's); see ``foley_core.ldm.sampling`` for how each
        convention makes it. With one candidate and no targets, a pipeline without a CLAP returns
        NaN scores instead of scoring.
        """
        prompts = list(prompts)
        if not prompts:
            raise ValueError("no prompts given")
        if n_candidates < 1:
            raise ValueError(f"n_candidates must be >= 1, got {n_candidates}")
        seeds = [seeds + i for i in range(len(prompts))] if isinstance(seeds, int) else list(seeds)
        if len(seeds) != len(prompts):
            raise ValueError(f"{len(seeds)} seeds for {len(prompts)} prompts")
        score = n_candidates > 1 or targets is not None or self.clap is not None
        clap = self.scoring_clap() if score else None  # before minutes of sampling: fail early
        scales = np.broadcast_to(np.asarray(guidance_scale, dtype=np.float32), (len(prompts),))
        raw, conditions = self.conditions(prompts)
        rows = conditions.repeat_interleave(n_candidates, dim=0)
        generators = [torch.Generator().manual_seed(generator_seed(s, attempt, c, self.convention))
                      for s in seeds for c in range(n_candidates)]
        waves = generate_waveforms(
            self.ldm, rows, self.unconditional_embedding(), guidance_scale=torch.from_numpy(np.repeat(scales, n_candidates)),
            generators=generators, steps=steps or self.steps, sampler=sampler or self.sampler, seconds=seconds,
            convention=self.convention, eta=self.eta,
        )
        candidates = waves.numpy().reshape(len(prompts), n_candidates, -1)
        if clap is None:
            scores = np.full((len(prompts), n_candidates), np.nan, dtype=np.float32)
            return GenerationOutput(candidates[:, 0], candidates, scores, np.zeros(len(prompts), dtype=int), self.sample_rate)
        audio = clap.encode_audio(waves.numpy(), self.sample_rate).numpy()
        if targets is not None:
            reference = np.asarray(targets, dtype=np.float32)
        elif isinstance(self.conditioner, ClapConditioner) and self.conditioner.clap is clap:
            reference = raw.cpu().numpy()  # the same CLAP text embeddings: no second pass
        else:
            reference = clap.encode_text(prompts).cpu().numpy()
        scores = cosine_scores(audio.reshape(len(prompts), n_candidates, -1), reference[:, None, :])
        best = scores.argmax(axis=1)
        return GenerationOutput(candidates[np.arange(len(prompts)), best], candidates, scores, best, self.sample_rate)

    def describe(self) -> dict:
        """What ``pipeline.json`` records about how the pipeline conditions, samples and scores."""
        return {"sampler": self.sampler, "steps": self.steps, "eta": self.eta, "clap_source": self.clap_source,
                "unconditional": self.unconditional, "clap_version": self.clap.version if self.clap else None,
                "conditioner": self.conditioner.describe(), "convention": self.convention}

    def save_pretrained(self, folder: Path, *, clap_folder: Path | None = None, extra: dict | None = None) -> Path:
        """Write ``ldm/``, ``adapter/``, ``clap/`` (trained CLAP only), ``conditioner/`` (an AudioLDM
        text encoder + tokenizer) and ``pipeline.json``."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.ldm.save(folder / "ldm")
        if self.sampler == "native":  # LdmComponents.save writes a DDIM config; keep the class the model names
            make_sampler(self.ldm.scheduler_config, "native").save_pretrained(folder / "ldm" / "scheduler")
        self.adapter.save(folder / "adapter")
        if self.clap_source == "trained":
            if clap_folder is None:
                raise ValueError("save_pretrained needs clap_folder for a CLAP trained in the pipeline")
            shutil.copytree(clap_folder, folder / "clap", dirs_exist_ok=True)
        if isinstance(self.conditioner, AudioLdmTextConditioner):
            self.conditioner.save(folder / CONDITIONER_DIR)
        config = {**self.describe(), **(extra or {})}
        write_text_atomic(folder / PIPELINE_CONFIG, json.dumps(config, indent=2, sort_keys=True))
        return folder

    @classmethod
    def from_pretrained(cls, folder: Path, profile=None) -> "FoleyPipeline":
        """A saved pipeline, or a plain diffusers AudioLDM folder (``from_audioldm``). Loads on the CPU in float32."""
        folder = Path(folder)
        if not (folder / PIPELINE_CONFIG).is_file():
            if is_audioldm_folder(folder):
                return cls.from_audioldm(folder, profile)
            missing = [f"{sub}/" for sub in ("vae", "vocoder", "text_encoder", "tokenizer") if not (folder / sub).is_dir()]
            if (folder / "unet").is_dir():
                raise FileNotFoundError(f"no pipeline in {folder}: it looks like a diffusers AudioLDM folder but has no "
                                        f"{', '.join(missing)} (the UNet is conditioned through the text encoder it "
                                        "was trained with: download text_encoder/ and tokenizer/ too)")
            raise FileNotFoundError(f"no pipeline in {folder} (expected {PIPELINE_CONFIG}, or a diffusers AudioLDM "
                                    "folder with unet/ vae/ vocoder/ text_encoder/ tokenizer/)")
        config = json.loads((folder / PIPELINE_CONFIG).read_text())
        conditioner_kind = config.get("conditioner", {}).get("kind", "clap")
        clap, loader = None, None
        if config["clap_source"] == "trained":
            clap = TrainedClapEncoder.load(folder / "clap")
        elif conditioner_kind == "clap":  # a LAION CLAP that conditions: needed now
            if profile is None:
                raise ValueError("a pipeline with a LAION CLAP needs the profile that names the checkpoint")
            clap = load_clap(profile)
        if clap is None and profile is not None:  # a CLAP that only scores: loaded when scoring is needed
            loader = lambda: load_clap(profile)  # noqa: E731
        conditioner = None
        if conditioner_kind == "audioldm_text":
            conditioner = AudioLdmTextConditioner.from_pretrained(folder / CONDITIONER_DIR)
        return cls(clap, EmbeddingAdapter.load(folder / "adapter"), LdmComponents.load(folder / "ldm"),
                   sampler=config["sampler"], steps=config["steps"], clap_source=config["clap_source"],
                   unconditional=config.get("unconditional", "zero"), conditioner=conditioner,
                   convention=config.get("convention", "foley"), clap_loader=loader,
                   eta=config.get("eta", 0.0))  # saved before eta was recorded: DDIM's deterministic 0

    @classmethod
    def from_audioldm(cls, source: str | Path, profile=None, *, steps: int | None = None,
                      clap: ClapEncoder | None = None) -> "FoleyPipeline":
        """A plain diffusers AudioLDM folder (``cvssp/audioldm-s-full-v2`` layout; a hub repo id when
        online) as a pipeline: its own text encoder conditions, an identity adapter, its own scheduler
        (``native``) and diffusers' conventions, so one candidate reproduces ``AudioLDMPipeline``.

        The audio front end follows the folder's vocoder (rate, hop, mel bins); the profile, if given,
        supplies the clip length, the default steps, DDIM's eta (``generation.eta``; without a profile
        AudioLDMPipeline's default 0), the folder for a ``.bin`` text encoder's one-time conversion
        and, only when scoring is needed, its CLAP."""
        vocoder = SpeechT5HifiGanConfig.from_pretrained(str(source), subfolder="vocoder")
        rate, hop = int(vocoder.sampling_rate), int(np.prod(vocoder.upsample_rates))
        audio = AudioConfig(  # AudioLDM's STFT: 1024 / hop / n_mels, 0..8 kHz
            sample_rate=rate, hop_length=hop, n_mels=int(vocoder.model_in_dim), n_fft=1024, win_length=1024,
            f_min=0.0, f_max=min(8000.0, rate / 2),
            clip_seconds=profile.audio.clip_seconds if profile is not None else 4.0,
            output_sample_rate=profile.audio.output_sample_rate if profile is not None else 22050,
        )  # fmt: skip
        ldm = LdmComponents.from_audioldm(source, audio=audio)
        converted = layout(profile).converted_text_encoder(source) if profile is not None else None
        conditioner = AudioLdmTextConditioner.from_pretrained(source, converted)
        loader = None
        if clap is None and profile is not None:
            loader = lambda: load_clap(profile)  # noqa: E731
        if clap is not None:
            clap_source: ClapSource = "trained" if isinstance(clap, TrainedClapEncoder) else "laion"
        else:
            clap_source = profile.clap.source if profile is not None else "none"
        steps = steps or (profile.generation.steps if profile is not None else 10)  # 10: AudioLDMPipeline's default
        return cls(clap, EmbeddingAdapter(conditioner.dim), ldm, sampler="native", steps=steps, clap_source=clap_source,
                   conditioner=conditioner, convention="diffusers", clap_loader=loader,
                   eta=profile.generation.eta if profile is not None else 0.0)

    def to(self, device, precision: Precision | None = None) -> "FoleyPipeline":
        """Every model to ``device``; ``precision`` (fp32 | bf16 | fp16) sets the UNet's dtype for sampling.

        The conditioner, adapter, VAE, vocoder and CLAP stay float32: they run once per clip, the
        UNet runs once per step."""
        device = torch.device(device)
        if self.clap is not None:
            self.clap.to(device)
        self.conditioner.to(device)
        self.adapter.to(device)
        self.ldm.to(device)
        if precision is not None:
            if self.ldm.unet.dtype != precision_dtype(precision):
                # torch's own cast: diffusers' ModelMixin.to warns on every dtype cast ("modules that should be
                # kept in float32: []"), even with no such module, once per class in a bf16 `foley run`
                torch.nn.Module.to(self.ldm.unet, precision_dtype(precision))
            self.precision = precision
        self.device = device
        return self


def place(pipeline: FoleyPipeline, generation) -> FoleyPipeline:
    """Apply a profile's ``generation.device`` and ``generation.precision`` (a ``GenerationConfig``)."""
    return pipeline.to(resolve_device(generation.device), generation.precision)


def assemble_pipeline(profile, variant: str = "adapter", model: str | None = None) -> FoleyPipeline:
    """The profile's trained components: conditioner + fine-tuned adapter (``variant`` = adapter | identity)
    + LDM (with the fine-tuned UNet when fine-tuning trained it) + CLAP for scoring, placed on the
    profile's generation device and precision.

    A profile with ``ldm.pretrained_path`` (an imported AudioLDM) conditions through that folder's
    own text encoder, guides against its embedding of "" and samples in diffusers' convention.
    ``model`` names one of ``ldm.models`` (a model per class): that LDM, its own text encoder and
    its own adapter; the profile's CLAP still scores."""
    where = layout(profile)
    finetune_dir = where.finetune(variant, model)
    ldm = LdmComponents.load(where.ldm_for(model))
    if (finetune_dir / "unet").is_dir():
        ldm.unet = UNet2DConditionModel.from_pretrained(finetune_dir / "unet", use_safetensors=True).eval()
    clap = load_clap(profile)
    model_profile = profile.for_model(model)
    conditioner = load_conditioner(model_profile, clap=clap)
    convention: Convention = "diffusers" if pretrained_audioldm_source(model_profile) is not None else "foley"
    pipeline = FoleyPipeline(clap, EmbeddingAdapter.load(finetune_dir), ldm, sampler=profile.generation.scheduler,
                             steps=profile.generation.steps, clap_source=profile.clap.source, conditioner=conditioner,
                             convention=convention, eta=profile.generation.eta)  # fmt: skip
    return place(pipeline, profile.generation)
