"""The inference pipeline, in the diffusers manner: components as attributes, one ``__call__``,
``save_pretrained`` / ``from_pretrained`` to a folder.

prompt -> CLAP text encoder -> adapter -> UNet sampling with classifier-free guidance
(DDIM or DPM-Solver++) -> VAE decode -> vocoder -> CLAP audio embedding -> best candidate.

All candidates of all prompts go through the UNet as one batch. Every candidate has its own
seeded ``torch.Generator`` (seed derived from the prompt's seed, the attempt and the
candidate index), so a clip can be regenerated alone with the same seed and model.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Sequence

import numpy as np
import torch

from foley_core.audio import write_text_atomic
from foley_core.clap.encoder import ClapEncoder, TrainedClapEncoder
from foley_core.evaluation import gate_problems
from foley_core.fsutil import exclusive_lock, replace_symlink, staged_dir
from foley_core.generation.adapter import EmbeddingAdapter
from foley_core.ldm.components import LdmComponents
from foley_core.ldm.sampling import SamplerName, generate_waveforms

PIPELINE_CONFIG = "pipeline.json"
METRICS = "metrics.json"
LOCK = ".lock"  # in pipelines/: held while a model is promoted
ACCEPTED = "accepted_metrics.json"  # in pipelines/: the metrics of the model `latest` points at

# What the UNet saw as "no condition" in training: our own models drop the condition to a zero
# vector; AudioLDM's released models (and diffusers' AudioLDMPipeline) use the CLAP embedding of "".
Unconditional = Literal["zero", "empty_prompt"]


def candidate_seed(seed: int, attempt: int, candidate: int) -> int:
    """A stable 63-bit seed per (clip seed, regeneration attempt, candidate)."""
    digest = hashlib.sha256(f"{seed}|{attempt}|{candidate}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


@dataclass
class GenerationOutput:
    waveforms: np.ndarray  # (n_prompts, samples): the selected candidate of each prompt
    candidates: np.ndarray  # (n_prompts, n_candidates, samples)
    scores: np.ndarray  # (n_prompts, n_candidates): cosine(CLAP audio, CLAP text or target)
    best: np.ndarray  # (n_prompts,) index of the best candidate
    sample_rate: int


class FoleyPipeline:
    def __init__(self, clap: ClapEncoder, adapter: EmbeddingAdapter, ldm: LdmComponents, *,
                 sampler: SamplerName = "ddim", steps: int = 25, clap_source: str = "trained",
                 unconditional: Unconditional = "zero"):
        if adapter.dim != ldm.condition_dim:
            raise ValueError(f"adapter dim {adapter.dim} != UNet condition dim {ldm.condition_dim}")
        if clap.embed_dim != ldm.condition_dim:
            raise ValueError(f"CLAP embeds {clap.embed_dim}-d but the UNet is conditioned on {ldm.condition_dim}-d")
        if unconditional not in ("zero", "empty_prompt"):
            raise ValueError(f"unconditional must be 'zero' or 'empty_prompt', got {unconditional!r}")
        self.clap, self.adapter, self.ldm = clap, adapter.eval(), ldm
        self.sampler, self.steps, self.clap_source = sampler, steps, clap_source
        self.unconditional = unconditional

    @property
    def sample_rate(self) -> int:
        return self.ldm.audio.sample_rate

    @torch.no_grad()
    def conditions(self, prompts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """(raw CLAP text embeddings, adapted conditioning vectors) for the prompts."""
        text = self.clap.encode_text(list(prompts))
        return text, self.adapter(text)

    @torch.no_grad()
    def unconditional_embedding(self) -> torch.Tensor:
        """The guidance's "no condition" vector, as the UNet was trained (raw CLAP, not adapted)."""
        if self.unconditional == "empty_prompt":
            return self.clap.encode_empty_text()
        return self.ldm.unconditional_embedding()

    @torch.no_grad()
    def __call__(self, prompts: Sequence[str], *, n_candidates: int = 1, guidance_scale: float | Sequence[float] = 2.5,
                 seeds: int | Sequence[int] = 0, attempt: int = 0, steps: int | None = None,
                 sampler: SamplerName | None = None, targets: np.ndarray | None = None) -> GenerationOutput:
        """Generate ``n_candidates`` per prompt in one batch and pick the best of each by CLAP score.

        ``seeds``: one per prompt (an int means seed, seed+1, ...). ``targets`` (n_prompts, d):
        score against these embeddings instead of the prompts' text embeddings (multi-target).
        """
        prompts = list(prompts)
        if not prompts:
            raise ValueError("no prompts given")
        if n_candidates < 1:
            raise ValueError(f"n_candidates must be >= 1, got {n_candidates}")
        seeds = [seeds + i for i in range(len(prompts))] if isinstance(seeds, int) else list(seeds)
        if len(seeds) != len(prompts):
            raise ValueError(f"{len(seeds)} seeds for {len(prompts)} prompts")
        scales = np.broadcast_to(np.asarray(guidance_scale, dtype=np.float32), (len(prompts),))
        text, conditions = self.conditions(prompts)
        rows = conditions.repeat_interleave(n_candidates, dim=0)
        generators = [torch.Generator().manual_seed(candidate_seed(s, attempt, c)) for s in seeds for c in range(n_candidates)]
        waves = generate_waveforms(
            self.ldm, rows, self.unconditional_embedding(), guidance_scale=torch.from_numpy(np.repeat(scales, n_candidates)),
            generators=generators, steps=steps or self.steps, sampler=sampler or self.sampler,
        )
        audio = self.clap.encode_audio(waves.numpy(), self.sample_rate).numpy()
        reference = np.asarray(targets, dtype=np.float32) if targets is not None else text.numpy()
        reference = reference / np.linalg.norm(reference, axis=-1, keepdims=True).clip(1e-12)
        scores = np.einsum("pcd,pd->pc", audio.reshape(len(prompts), n_candidates, -1), reference)
        candidates = waves.numpy().reshape(len(prompts), n_candidates, -1)
        best = scores.argmax(axis=1)
        return GenerationOutput(candidates[np.arange(len(prompts)), best], candidates, scores, best, self.sample_rate)

    def save_pretrained(self, folder: Path, *, clap_folder: Path | None = None, extra: dict | None = None) -> Path:
        """Write ``ldm/``, ``adapter/``, ``clap/`` (trained CLAP only) and ``pipeline.json``."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.ldm.save(folder / "ldm")
        self.adapter.save(folder / "adapter")
        if self.clap_source == "trained":
            if clap_folder is None:
                raise ValueError("save_pretrained needs clap_folder for a CLAP trained in the pipeline")
            shutil.copytree(clap_folder, folder / "clap", dirs_exist_ok=True)
        config = {"sampler": self.sampler, "steps": self.steps, "clap_source": self.clap_source,
                  "unconditional": self.unconditional, "clap_version": self.clap.version, **(extra or {})}
        write_text_atomic(folder / PIPELINE_CONFIG, json.dumps(config, indent=2, sort_keys=True))
        return folder

    @classmethod
    def from_pretrained(cls, folder: Path, profile=None) -> "FoleyPipeline":
        folder = Path(folder)
        if not (folder / PIPELINE_CONFIG).is_file():
            raise FileNotFoundError(f"no pipeline in {folder} (expected {PIPELINE_CONFIG})")
        config = json.loads((folder / PIPELINE_CONFIG).read_text())
        if config["clap_source"] == "trained":
            clap = TrainedClapEncoder.load(folder / "clap")
        else:
            if profile is None:
                raise ValueError("a pipeline with a LAION CLAP needs the profile that names the checkpoint")
            from foley_core.clap import load_clap

            clap = load_clap(profile)
        return cls(clap, EmbeddingAdapter.load(folder / "adapter"), LdmComponents.load(folder / "ldm"),
                   sampler=config["sampler"], steps=config["steps"], clap_source=config["clap_source"],
                   unconditional=config.get("unconditional", "zero"))

    def to(self, device) -> "FoleyPipeline":
        self.clap.to(device)
        self.ldm.to(device)
        self.adapter.to(device)
        return self


def assemble_pipeline(profile, variant: str = "adapter") -> FoleyPipeline:
    """The profile's trained components: CLAP + fine-tuned adapter (``variant`` = adapter | identity) + LDM
    (with the fine-tuned UNet when fine-tuning trained it)."""
    from diffusers import UNet2DConditionModel

    from foley_core.clap import load_clap

    finetune_dir = profile.artifact_dir("finetune", variant)
    ldm = LdmComponents.load(profile.artifact_dir("ldm"))
    if (finetune_dir / "unet").is_dir():
        ldm.unet = UNet2DConditionModel.from_pretrained(finetune_dir / "unet", use_safetensors=True).eval()
    return FoleyPipeline(load_clap(profile), EmbeddingAdapter.load(finetune_dir), ldm,
                         sampler=profile.generation.scheduler, steps=profile.generation.steps,
                         clap_source=profile.clap.source,
                         unconditional="empty_prompt" if profile.ldm.pretrained_path is not None else "zero")


def pipelines_dir(profile) -> Path:
    return profile.artifact_dir("pipelines")


class PromotionRefused(ValueError):
    """The quality gate rejected the model: ``latest`` and the accepted metrics did not move."""


def accepted_metrics(profile) -> dict | None:
    path = pipelines_dir(profile) / ACCEPTED
    return json.loads(path.read_text()) if path.is_file() else None


def promote(pipeline: FoleyPipeline, profile, metrics: dict, *, export_problems: int) -> Path:
    """Save the pipeline as ``pipelines/<model_version>/``, record its metrics as the accepted
    ones, and point ``pipelines/latest`` at it.

    The gate is re-applied here, under the lock, against the accepted metrics on disk: however
    promotion is launched (a later run, a click in the UI), a model that fails it, or whose
    metrics are NaN, raises ``PromotionRefused`` and nothing moves.

    The version folder is written aside and renamed in whole, so a kill leaves no folder or a
    complete one (a complete one is reused: the version is a hash of the weights). Promotions
    take the pipelines folder's lock, so two runs never interleave their writes to ``latest``.
    """
    root = pipelines_dir(profile)
    folder = root / metrics["model_version"]
    with exclusive_lock(root / LOCK):
        problems = gate_problems(metrics, accepted_metrics(profile), profile.evaluation.regression_margin, export_problems)
        if problems:
            raise PromotionRefused(f"model {metrics.get('model_version')} not promoted: {'; '.join(problems)}")
        if not _is_complete(folder):
            clap_folder = profile.artifact_dir("clap") if pipeline.clap_source == "trained" else None
            with staged_dir(folder) as staging:  # replaces a half folder an older version left
                pipeline.save_pretrained(staging, clap_folder=clap_folder,
                                         extra={"model_version": metrics["model_version"], "profile": profile.name})
                write_text_atomic(staging / METRICS, json.dumps(metrics, indent=2))
        write_text_atomic(root / ACCEPTED, json.dumps(metrics, indent=2))
        replace_symlink(root / "latest", folder.name)
    return folder


def _is_complete(folder: Path) -> bool:
    # metrics.json is written last; a folder renamed in from staging always has it
    return (folder / PIPELINE_CONFIG).is_file() and (folder / METRICS).is_file()


def latest_pipeline_dir(profile) -> Path:
    latest = pipelines_dir(profile) / "latest"
    if not latest.exists():
        raise FileNotFoundError(f"no trained model for profile {profile.name!r} yet: run `foley run --profile {profile.name}`")
    folder = latest.resolve()
    if not _is_complete(folder):  # only folders written in place before staging existed can be half-made
        raise FileNotFoundError(f"the latest model {folder} is incomplete (no {PIPELINE_CONFIG} or {METRICS}): "
                                f"run `foley run --profile {profile.name}` again")
    return folder
