"""Generation speed at the paper's model size: seconds per *selected* 4 s clip, per class, and the
hours a 700-clip DCASE submission (7 classes x 100) takes, for the paper's settings and a fast one.

    .venv/bin/python benchmarks/bench_paper_size.py --size paper --device cpu --clips 1      # slow: the lead's run
    .venv/bin/python benchmarks/bench_paper_size.py --size tiny --steps-paper 4 --steps-fast 2   # seconds (tests)
    python3 benchmarks/bench_paper_size.py --size paper --device cuda --clips 10 --json out.json  # GPU box

Components (random weights unless ``--model DIR`` names a real diffusers AudioLDM folder):

- ``--size paper``: AudioLDM-S as diffusers converts it (``cvssp/audioldm-s-full-v2``): UNet2DConditionModel
  [128, 256, 384, 640], 2 layers per block, cross-attention blocks at the three lower resolutions (self-attention
  only: AudioLDM passes no encoder states), attention_head_dim 8, ``simple_projection`` class embedding of the
  512-d CLAP vector concatenated to the time embedding (185.0M); AutoencoderKL [128, 256, 512], 8 latent channels
  (55.4M); SpeechT5HifiGan, 64 mel, rates [5, 4, 2, 2, 2], 1024 initial channels (55.3M); the CLAP text encoder
  ``ClapTextModelWithProjection`` at laion/clap-htsat-unfused's size (RoBERTa-base, 125.3M), tokens padded to 512
  as AudioLDMPipeline does. 421M in all, the published size of AudioLDM-S. DDIM schedule of the released folder.
- ``--size tiny``: the same classes of network at toy widths (attention only at the lowest resolution): seconds.

Scoring (every candidate is scored, as in the pipeline), ``--scorer``:
- ``htsat`` (default at paper size): a *random-weight* LAION-CLAP-sized scorer from transformers (HTSAT-tiny audio
  tower 28.2M + RoBERTa-base text tower 125.3M), fed as laion feeds it (48 kHz, int16 round trip, repeat-padded to
  a 10 s window, 64-mel log spectrogram): the right *cost*, meaningless scores. The 16 -> 48 kHz resampling is
  linear interpolation here (laion's encoder uses soxr), a negligible part of the cost.
- ``cheap`` (default at tiny size): a log-mel statistics projection; costs ~nothing, scores meaningless.
- ``laion --clap-checkpoint 630k-audioset-best.pt --clap-tokenizer DIR``: the real LAION-CLAP through
  foley_core's loader (needs the foley engine and laion-clap installed).
The output says which scorer ran.

Settings timed (``--settings``, default ``paper,fast``):
- ``paper``: DDIM, ``--steps-paper`` (200) steps, fp32, each class's candidates and guidance from configs/paper.yaml
  (3 candidates, 10 for MovingMotorVehicle);
- ``fast``: DPM-Solver++ (2nd-order multistep), ``--steps-fast`` (25) steps, UNet in bf16 on CPU / fp16 on CUDA
  (``--precision-fast``), same candidates and guidance;
- ``fast-fp32``: DPM-Solver++ at ``--steps-fast`` steps in fp32 (separates the sampler's gain from precision's).
Each class's candidates and the unconditional pass go through the UNet as one batch per step, slots chunked as
``foley_core.generation.generate`` chunks them (at most 32 candidate rows per call); the script checks the
batching with a hook on the UNet and prints what it saw. Classes with the same workload (candidates, whether
guided: AudioLDM's convention guides only where guidance > 1) are timed once and share the number unless
``--all-classes``. Regenerations (CLAP floors) are not counted: the projection is a lower bound by their share.

Engines (``--engine``): ``foley`` runs our ``FoleyPipeline`` (foley_core); ``mirror`` runs a self-contained copy
of its inference path (conditioner -> adapter -> ``sample_latents`` -> VAE -> vocoder -> scoring, diffusers
convention), for machines where foley_core's imports (soundfile, librosa, pydantic, ...) are missing;
tests/test_benchmarks.py checks the mirror gives FoleyPipeline's waveforms and scores. ``auto`` (default) takes
``foley`` when it imports. At module level this file imports only the standard library, numpy and torch;
transformers and diffusers are imported when components are built, foley_core only by the foley engine.
"""

from __future__ import annotations

import argparse
import hashlib
import inspect
import json
import math
import os
import platform
import resource
import sys
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parent.parent
CLIP_SECONDS = 4.0
SUBMISSION_CLIPS_PER_CLASS = 100
MAX_BATCH_ROWS = 32  # foley_core.generation.generate.MAX_BATCH_ROWS (the foley engine reads the real one)

# configs/paper.yaml's classes (the winning submission's settings); read from the YAML when PyYAML is there.
PAPER_CLASSES = [
    {"name": "DogBark", "prompt": "a dog bark", "candidates": 3, "guidance": 2.5},
    {"name": "Footstep", "prompt": "foot steps", "candidates": 3, "guidance": 2.5},
    {"name": "GunShot", "prompt": "gun shot", "candidates": 3, "guidance": 1.0},
    {"name": "Keyboard", "prompt": "someone using keyboard", "candidates": 3, "guidance": 1.0},
    {"name": "MovingMotorVehicle", "prompt": "a moving motor", "candidates": 10, "guidance": 3.0},
    {"name": "Rain", "prompt": "rain", "candidates": 3, "guidance": 1.0},
    {"name": "Sneeze_Cough", "prompt": "a man cough", "candidates": 3, "guidance": 2.5},
]

# AudioLDM's released scheduler (cvssp/audioldm-s-full-v2 scheduler/scheduler_config.json)
AUDIOLDM_SCHEDULER = {"beta_start": 0.0015, "beta_end": 0.0195, "beta_schedule": "scaled_linear",
                      "num_train_timesteps": 1000, "clip_sample": False, "set_alpha_to_one": False, "steps_offset": 1,
                      "prediction_type": "epsilon"}  # fmt: skip


def paper_classes() -> tuple[list[dict], str]:
    """The 7 classes' first prompt, candidates and guidance, from configs/paper.yaml when readable."""
    path = REPO / "configs" / "paper.yaml"
    try:
        import yaml

        raw = yaml.safe_load(path.read_text())
        classes = [{"name": c["name"], "prompt": c["prompts"][0], "candidates": int(c["candidates"]),
                    "guidance": float(c["guidance"])} for c in raw["classes"]]  # fmt: skip
        return classes, str(path.relative_to(REPO))
    except (ImportError, OSError, KeyError, TypeError):
        return [dict(c) for c in PAPER_CLASSES], "built-in copy of configs/paper.yaml"


# ----------------------------------------------------------------------------------------------- components


def byte_level_alphabet() -> list[str]:
    """GPT-2/RoBERTa's byte-to-unicode table."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    chars, extra = [], 0
    for b in range(256):
        if b in keep:
            chars.append(chr(b))
        else:
            chars.append(chr(256 + extra))
            extra += 1
    return chars


def offline_roberta_tokenizer(model_max_length: int):
    """A byte-level BPE RoBERTa tokenizer built offline (no roberta-base download): the same code path and
    padding as the real one; only the vocabulary (and so the token count per prompt) is smaller."""
    from transformers import RobertaTokenizer

    with tempfile.TemporaryDirectory() as scratch:
        vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3}
        for char in byte_level_alphabet():
            vocab[char] = len(vocab)
        merges = ["Ġ d", "Ġ r", "o g", "a i", "Ġd og", "r ai", "Ġ m", "o t", "Ġm ot"]
        for merge in merges:
            vocab["".join(merge.split())] = len(vocab)
        vocab["<mask>"] = len(vocab)
        (Path(scratch) / "vocab.json").write_text(json.dumps(vocab))
        (Path(scratch) / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
        return RobertaTokenizer(str(Path(scratch) / "vocab.json"), str(Path(scratch) / "merges.txt"),
                                model_max_length=model_max_length)


@dataclass
class Components:
    """AudioLDM's pieces (what ``AudioLDMPipeline`` holds) plus the audio geometry."""

    unet: torch.nn.Module
    vae: torch.nn.Module
    vocoder: torch.nn.Module
    text_encoder: torch.nn.Module
    tokenizer: object
    scheduler_config: dict
    source: str  # "random <size>" or the folder
    sample_rate: int = 16000
    hop_length: int = 160
    n_mels: int = 64

    @property
    def condition_dim(self) -> int:
        return int(self.unet.config.projection_class_embeddings_input_dim)

    def parameters(self) -> dict[str, float]:
        return {name: sum(p.numel() for p in getattr(self, name).parameters()) / 1e6
                for name in ("unet", "vae", "vocoder", "text_encoder")}  # fmt: skip


def build_components(size: str, seed: int = 0) -> Components:
    """Random AudioLDM-S-shaped (``paper``) or toy (``tiny``) components, in float32 on the CPU."""
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import ClapTextConfig, ClapTextModelWithProjection, SpeechT5HifiGan, SpeechT5HifiGanConfig

    torch.manual_seed(seed)
    scheduler_config = dict(DDIMScheduler(**AUDIOLDM_SCHEDULER).config)
    if size == "paper":
        # diffusers' scripts/convert_original_audioldm_to_diffusers.py with AudioLDM-S's original config:
        # model_channels 128 x channel_mult [1, 2, 3, 5], attention at resolutions [8, 4, 2], num_res_blocks 2,
        # extra_film_condition_dim 512 + extra_film_use_concat; cross_attention_dim = block_out_channels
        unet = UNet2DConditionModel(
            sample_size=128, in_channels=8, out_channels=8, block_out_channels=(128, 256, 384, 640), layers_per_block=2,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
            cross_attention_dim=(128, 256, 384, 640), attention_head_dim=8, class_embed_type="simple_projection",
            projection_class_embeddings_input_dim=512, class_embeddings_concat=True,
        )  # fmt: skip
        vae = AutoencoderKL(
            sample_size=512, in_channels=1, out_channels=1, latent_channels=8, block_out_channels=(128, 256, 512),
            down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3, layers_per_block=2,
            scaling_factor=0.9227914,
        )  # fmt: skip
        vocoder = SpeechT5HifiGan(SpeechT5HifiGanConfig(
            model_in_dim=64, sampling_rate=16000, upsample_initial_channel=1024, upsample_rates=[5, 4, 2, 2, 2],
            upsample_kernel_sizes=[16, 16, 8, 4, 4], resblock_kernel_sizes=[3, 7, 11],
            resblock_dilation_sizes=[[1, 3, 5], [1, 3, 5], [1, 3, 5]], normalize_before=False,
        ))  # fmt: skip
        tokenizer = offline_roberta_tokenizer(512)  # laion/clap-htsat-unfused's tokenizer: model_max_length 512
        text_encoder = ClapTextModelWithProjection(ClapTextConfig())  # laion/clap-htsat-unfused = the defaults
    elif size == "tiny":
        # the same block kinds at toy widths; attention only at the lowest resolution (25 x 4 latent cells)
        unet = UNet2DConditionModel(
            sample_size=16, in_channels=8, out_channels=8, block_out_channels=(16, 32, 32), layers_per_block=1,
            down_block_types=("DownBlock2D", "DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D", "UpBlock2D"), cross_attention_dim=(16, 32, 32),
            attention_head_dim=4, norm_num_groups=8, class_embed_type="simple_projection",
            projection_class_embeddings_input_dim=32, class_embeddings_concat=True,
        )  # fmt: skip
        vae = AutoencoderKL(
            in_channels=1, out_channels=1, latent_channels=8, block_out_channels=(8, 16, 16),
            down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3,
            layers_per_block=1, norm_num_groups=8, scaling_factor=0.9,
        )  # fmt: skip
        vocoder = SpeechT5HifiGan(SpeechT5HifiGanConfig(
            model_in_dim=64, sampling_rate=16000, upsample_initial_channel=16, upsample_rates=[10, 16],
            upsample_kernel_sizes=[20, 32], resblock_kernel_sizes=[3], resblock_dilation_sizes=[[1, 3]],
            normalize_before=False,
        ))  # fmt: skip
        tokenizer = offline_roberta_tokenizer(77)
        text_encoder = ClapTextModelWithProjection(ClapTextConfig(
            vocab_size=len(tokenizer), hidden_size=16, intermediate_size=37, num_attention_heads=2, num_hidden_layers=2,
            layer_norm_eps=1e-5, projection_dim=32, bos_token_id=0, eos_token_id=2, pad_token_id=1,
            max_position_embeddings=81,
        ))  # fmt: skip
    else:
        raise ValueError(f"unknown size {size!r}; use tiny or paper")
    for model in (unet, vae, vocoder, text_encoder):
        model.eval().requires_grad_(False)
    return Components(unet, vae, vocoder, text_encoder, tokenizer, scheduler_config, f"random weights, {size} size")


def load_audioldm_folder(folder: Path) -> Components:
    """A real diffusers AudioLDM folder (unet/ vae/ vocoder/ scheduler/ text_encoder/ tokenizer/), safetensors only."""
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import AutoTokenizer, ClapTextModelWithProjection, SpeechT5HifiGan

    folder = Path(folder)
    vocoder = SpeechT5HifiGan.from_pretrained(folder / "vocoder", use_safetensors=True)
    parts = Components(
        unet=UNet2DConditionModel.from_pretrained(folder / "unet", use_safetensors=True),
        vae=AutoencoderKL.from_pretrained(folder / "vae", use_safetensors=True),
        vocoder=vocoder,
        text_encoder=ClapTextModelWithProjection.from_pretrained(folder / "text_encoder", use_safetensors=True),
        tokenizer=AutoTokenizer.from_pretrained(str(folder / "tokenizer"), local_files_only=True),
        scheduler_config=dict(DDIMScheduler.load_config(folder / "scheduler")),
        source=str(folder), sample_rate=int(vocoder.config.sampling_rate),
        hop_length=int(np.prod(vocoder.config.upsample_rates)), n_mels=int(vocoder.config.model_in_dim),
    )  # fmt: skip
    for model in (parts.unet, parts.vae, parts.vocoder, parts.text_encoder):
        model.eval().requires_grad_(False)
    return parts


# ------------------------------------------------------------------------------------------------- scorers


class CheapScorer(torch.nn.Module):
    """Log-mel mean/std -> fixed random projection (audio); a seeded random vector per prompt (text).
    Costs next to nothing; its scores mean nothing. Stands in where no CLAP weights exist."""

    name = "cheap (log-mel statistics projection; scores meaningless)"
    batch_size = 16

    def __init__(self, sample_rate: int, dim: int = 512, n_mels: int = 64, n_fft: int = 1024, hop: int = 160):
        super().__init__()
        self.sample_rate, self.dim, self.n_fft, self.hop = sample_rate, dim, n_fft, hop
        mel = lambda f: 2595.0 * np.log10(1.0 + f / 700.0)  # noqa: E731
        edges = 700.0 * (10 ** (np.linspace(mel(0.0), mel(sample_rate / 2), n_mels + 2) / 2595.0) - 1.0)
        freqs = np.linspace(0, sample_rate / 2, n_fft // 2 + 1)
        lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
        bank = np.maximum(0, np.minimum((freqs - lower) / (centre - lower), (upper - freqs) / (upper - centre)))
        self.register_buffer("mel_basis", torch.tensor(bank, dtype=torch.float32))
        self.register_buffer("window", torch.hann_window(n_fft))
        generator = torch.Generator().manual_seed(1234)
        self.proj = torch.nn.Linear(2 * n_mels, dim)
        with torch.no_grad():
            self.proj.weight.copy_(torch.randn(dim, 2 * n_mels, generator=generator) / math.sqrt(2 * n_mels))
            self.proj.bias.zero_()

    @torch.no_grad()
    def audio(self, waves: torch.Tensor) -> torch.Tensor:
        spec = torch.stft(waves.float(), self.n_fft, self.hop, window=self.window, return_complex=True).abs() ** 2
        log_mel = torch.log(torch.clamp(self.mel_basis @ spec, min=1e-10))  # (n, mels, frames)
        return F.normalize(self.proj(torch.cat([log_mel.mean(-1), log_mel.std(-1)], dim=-1)), dim=-1)

    @torch.no_grad()
    def text(self, texts: list[str]) -> torch.Tensor:
        rows = [torch.randn(self.dim, generator=torch.Generator().manual_seed(
            int.from_bytes(hashlib.sha256(t.encode()).digest()[:7], "big"))) for t in texts]  # fmt: skip
        return F.normalize(torch.stack(rows), dim=-1).to(self.mel_basis.device)


class HtsatScorer(torch.nn.Module):
    """A random-weight LAION-CLAP-sized scorer (transformers' port of laion's HTSAT-tiny + RoBERTa towers).

    Audio is fed as laion feeds it: resampled to 48 kHz (linear interpolation here), int16 round trip,
    repeat-padded to the 10 s window, 1024-point STFT with hop 480 -> 64-mel (50-14,000 Hz) dB spectrogram,
    (n, 1, 1001, 64). Same cost per candidate as the real scorer; scores meaningless."""

    batch_size = 16  # foley_core.clap.laion.LaionClapEncoder.batch_size
    model_rate, window_seconds, n_fft, hop, n_mels = 48000, 10, 1024, 480, 64

    def __init__(self, sample_rate: int, size: str = "paper"):
        super().__init__()
        from transformers import (
            ClapAudioConfig,
            ClapAudioModelWithProjection,
            ClapTextConfig,
            ClapTextModelWithProjection,
        )
        from transformers.audio_utils import mel_filter_bank

        self.sample_rate = sample_rate
        self.tokenizer = offline_roberta_tokenizer(77)  # laion's text length
        if size == "paper":
            audio_cfg, text_cfg = ClapAudioConfig(), ClapTextConfig()  # laion/clap-htsat-unfused = the defaults
            self.name = "htsat (random-weight LAION-CLAP size: HTSAT-tiny + RoBERTa-base; scores meaningless)"
        else:
            audio_cfg = ClapAudioConfig(patch_embeds_hidden_size=8, depths=[1, 1], num_attention_heads=[1, 2],
                                        hidden_size=16, projection_dim=32)  # fmt: skip
            text_cfg = ClapTextConfig(vocab_size=len(self.tokenizer), hidden_size=16, intermediate_size=37,
                                      num_attention_heads=2, num_hidden_layers=1, projection_dim=32,
                                      max_position_embeddings=81, bos_token_id=0, eos_token_id=2, pad_token_id=1)  # fmt: skip
            self.name = "htsat (random-weight, tiny widths; scores meaningless)"
        self.audio_model = ClapAudioModelWithProjection(audio_cfg).eval().requires_grad_(False)
        self.text_model = ClapTextModelWithProjection(text_cfg).eval().requires_grad_(False)
        bank = mel_filter_bank(num_frequency_bins=self.n_fft // 2 + 1, num_mel_filters=self.n_mels, min_frequency=50,
                               max_frequency=14000, sampling_rate=self.model_rate, norm=None, mel_scale="htk")  # fmt: skip
        self.register_buffer("mel_basis", torch.tensor(bank.T, dtype=torch.float32))
        self.register_buffer("window", torch.hann_window(self.n_fft))

    @torch.no_grad()
    def audio(self, waves: torch.Tensor) -> torch.Tensor:
        length = int(round(waves.shape[-1] * self.model_rate / self.sample_rate))
        waves = F.interpolate(waves.float()[:, None], size=length, mode="linear", align_corners=False)[:, 0]
        waves = torch.round(waves.clamp(-1, 1) * 32767) / 32767
        window = self.model_rate * self.window_seconds
        if length < window:
            waves = waves.repeat(1, window // length)
            waves = F.pad(waves, (0, window - waves.shape[-1]))
        waves = waves[:, :window]
        spec = torch.stft(waves, self.n_fft, self.hop, window=self.window, return_complex=True).abs() ** 2
        mel = 10 * torch.log10(torch.clamp(self.mel_basis @ spec, min=1e-10))  # (n, 64, 1001)
        return F.normalize(self.audio_model(input_features=mel.transpose(1, 2)[:, None]).audio_embeds, dim=-1)

    @torch.no_grad()
    def text(self, texts: list[str]) -> torch.Tensor:
        tokens = self.tokenizer(texts, padding="max_length", truncation=True, max_length=77, return_tensors="pt")
        device = self.mel_basis.device
        out = self.text_model(input_ids=tokens.input_ids.to(device), attention_mask=tokens.attention_mask.to(device))
        return F.normalize(out.text_embeds, dim=-1)


def build_scorer(kind: str, size: str, sample_rate: int):
    if kind == "cheap":
        return CheapScorer(sample_rate)
    if kind == "htsat":
        return HtsatScorer(sample_rate, size)
    raise ValueError(f"unknown scorer {kind!r}")


# ------------------------------------------------------------------------------------------------- seeds


def candidate_seed(seed: int, attempt: int, candidate: int) -> int:
    """foley_core.generation.pipeline.candidate_seed."""
    digest = hashlib.sha256(f"{seed}|{attempt}|{candidate}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def generator_seed(seed: int, candidate: int, convention: str) -> int:
    """foley_core.generation.pipeline.generator_seed at attempt 0."""
    return int(seed) if convention == "diffusers" and candidate == 0 else candidate_seed(seed, 0, candidate)


# ------------------------------------------------------------------------------------------------- engines


@dataclass
class Result:
    waveforms: np.ndarray  # (n_prompts, samples): the selected candidate of each prompt
    scores: np.ndarray  # (n_prompts, n_candidates)
    best: np.ndarray


class MirrorEngine:
    """A self-contained copy of FoleyPipeline's inference path for an imported AudioLDM (diffusers convention):
    AudioLdmTextConditioner -> identity EmbeddingAdapter -> sample_latents -> decode_latents -> vocoder ->
    CLAP scoring -> best candidate. Mirrors foley_core at the time of writing; tests/test_benchmarks.py checks it
    against FoleyPipeline on tiny components."""

    name = "mirror (self-contained copy of FoleyPipeline's inference loop)"
    convention = "diffusers"

    def __init__(self, parts: Components, scorer):
        self.parts, self.scorer = parts, scorer
        dim = parts.condition_dim
        self.adapter = torch.nn.Linear(dim, dim)  # EmbeddingAdapter: identity at start
        with torch.no_grad():
            self.adapter.weight.copy_(torch.eye(dim))
            self.adapter.bias.zero_()
        self.adapter.eval().requires_grad_(False)
        self.device, self._empty = torch.device("cpu"), None
        self.unet = parts.unet
        self.scorer_dim = int(scorer.text(["x"]).shape[-1])

    def to(self, device, precision: str) -> "MirrorEngine":
        device = torch.device(device)
        for module in (self.parts.unet, self.parts.vae, self.parts.vocoder, self.parts.text_encoder, self.adapter,
                       self.scorer):  # fmt: skip
            module.to(device)
        self.parts.unet.to(DTYPES[precision])
        self.device, self._empty = device, None
        return self

    @torch.no_grad()
    def _embed(self, texts: list[str], max_length: int, padding: str = "max_length") -> torch.Tensor:
        # AudioLdmTextConditioner: prompts padded to the longest of the batch, "" to the embedding width
        tok = self.parts.tokenizer(texts, padding=padding, max_length=max_length, truncation=True, return_tensors="pt")
        out = self.parts.text_encoder(tok.input_ids.to(self.device), attention_mask=tok.attention_mask.to(self.device))
        return F.normalize(out.text_embeds, dim=-1).float()

    @torch.no_grad()
    def _score_audio(self, waves: np.ndarray) -> np.ndarray:
        out = torch.zeros(len(waves), self.scorer_dim)
        size = self.scorer.batch_size
        for start in range(0, len(waves), size):  # ClapEncoder.encode_audio: equal lengths, batch_size at a time
            batch = torch.from_numpy(np.ascontiguousarray(waves[start : start + size])).to(self.device)
            out[start : start + size] = self.scorer.audio(batch).float().cpu()
        return out.numpy()

    @torch.no_grad()
    def __call__(self, prompts: list[str], *, n_candidates: int, guidance_scale: float, seeds: list[int], steps: int,
                 sampler: str) -> Result:  # fmt: skip
        from diffusers import DDIMScheduler, DPMSolverMultistepScheduler

        parts, device = self.parts, self.device
        unet, dtype = parts.unet, parts.unet.dtype
        raw = self._embed(prompts, parts.tokenizer.model_max_length, padding="longest")
        conditions = self.adapter(raw).repeat_interleave(n_candidates, dim=0)
        rows = len(conditions)
        generators = [torch.Generator().manual_seed(generator_seed(s, c, "diffusers")) for s in seeds
                      for c in range(n_candidates)]  # fmt: skip
        if self._empty is None:
            self._empty = self._embed([""], parts.condition_dim)[0]  # the negative prompt, padded as diffusers does
        # sampling_plan / latent_shape, diffusers convention
        frames = int(CLIP_SECONDS / (parts.hop_length / parts.sample_rate))
        samples = int(CLIP_SECONDS * parts.sample_rate)
        vae_down = 2 ** (len(parts.vae.config.block_out_channels) - 1)
        padded = frames + (-frames) % vae_down
        shape = (parts.vae.config.latent_channels, padded // vae_down, parts.n_mels // vae_down)
        if sampler == "ddim":
            scheduler = DDIMScheduler.from_config(parts.scheduler_config, clip_sample=False, set_alpha_to_one=False)
        elif sampler == "dpmsolver++":
            scheduler = DPMSolverMultistepScheduler.from_config(parts.scheduler_config, algorithm_type="dpmsolver++",
                                                                solver_order=2)  # fmt: skip
        else:
            raise ValueError(f"the mirror engine runs ddim or dpmsolver++, not {sampler!r}")
        scheduler.set_timesteps(steps, device=device)
        latents = torch.stack([torch.randn(shape, generator=g) for g in generators]).to(device) * scheduler.init_noise_sigma
        scales = torch.full((rows,), float(guidance_scale)).to(device).view(-1, 1, 1, 1)
        guide = scales > 1
        guided = bool(guide.any())
        labels = torch.cat([self._empty.expand_as(conditions), conditions]) if guided else conditions
        labels = labels.to(dtype)
        accepted = inspect.signature(scheduler.step).parameters
        extra = {"eta": 0.0} if "eta" in accepted else {}
        if "generator" in accepted:
            extra["generator"] = generators if len(generators) != 1 else generators[0]
        for t in scheduler.timesteps:
            model_in = scheduler.scale_model_input(latents, t)
            model_in = torch.cat([model_in, model_in]) if guided else model_in
            prediction = unet(model_in.to(dtype), t, encoder_hidden_states=None, class_labels=labels).sample.float()
            if guided:
                uncond, cond = prediction.chunk(2)
                prediction = torch.where(guide, uncond + scales * (cond - uncond), cond)
            latents = scheduler.step(prediction, t, latents, **extra).prev_sample
        vae = parts.vae
        mel = vae.decode(((1 / float(vae.config.scaling_factor)) * latents).to(vae.device, vae.dtype)).sample.float()
        waves = parts.vocoder(mel[:, 0].to(parts.vocoder.device, parts.vocoder.dtype)).float().cpu()[:, :samples]
        candidates = waves.numpy().reshape(len(prompts), n_candidates, -1)
        audio = self._score_audio(waves.numpy())
        reference = self.scorer.text(list(prompts)).float().cpu().numpy()
        # foley_core.clap.similarity.cosine_scores: both sides normalised, then the row-wise dot product
        audio = audio.reshape(len(prompts), n_candidates, -1)
        audio = audio / np.linalg.norm(audio, axis=-1, keepdims=True).clip(1e-12)
        reference = reference[:, None, :] / np.linalg.norm(reference[:, None, :], axis=-1, keepdims=True).clip(1e-12)
        scores = np.sum(audio * reference, axis=-1)
        best = scores.argmax(axis=1)
        return Result(candidates[np.arange(len(prompts)), best], scores, best)


class FoleyEngine:
    """Our FoleyPipeline (foley_core), built from the same components: the measured code path."""

    name = "foley (foley_core FoleyPipeline)"

    def __init__(self, parts: Components | None, scorer, model: Path | None = None):
        from foley_core.clap.encoder import ClapEncoder
        from foley_core.core.config import AudioConfig
        from foley_core.generation.adapter import EmbeddingAdapter
        from foley_core.generation.conditioning import AudioLdmTextConditioner
        from foley_core.generation.pipeline import FoleyPipeline
        from foley_core.ldm.components import LdmComponents

        clap = None
        if scorer is not None and not isinstance(scorer, ClapEncoder):
            class BenchClap(ClapEncoder):  # the bench scorer behind foley_core's CLAP interface
                batch_size = scorer.batch_size

                def __init__(self):
                    super().__init__(scorer)
                    self.embed_dim = int(scorer.text(["x"]).shape[-1])
                    self.version, self.sample_rate = "bench-scorer", scorer.sample_rate

                def _text_batch(self, texts):
                    return scorer.text(texts)

                def _audio_batch(self, waveforms):
                    return scorer.audio(torch.from_numpy(waveforms).to(self.device))

            clap = BenchClap()
        elif scorer is not None:
            clap = scorer
        if model is not None:
            if (Path(model) / "pipeline.json").is_file():  # a saved FoleyPipeline: its own CLAP scores
                self.pipeline = FoleyPipeline.from_pretrained(Path(model))
            else:
                self.pipeline = FoleyPipeline.from_audioldm(Path(model), None, clap=clap)
        else:
            audio = AudioConfig(sample_rate=parts.sample_rate, hop_length=parts.hop_length, n_mels=parts.n_mels, n_fft=1024,
                                win_length=1024, f_min=0.0, f_max=min(8000.0, parts.sample_rate / 2),
                                clip_seconds=CLIP_SECONDS)  # as FoleyPipeline.from_audioldm makes it  # fmt: skip
            ldm = LdmComponents(vae=parts.vae, unet=parts.unet, vocoder=parts.vocoder,
                                scheduler_config=parts.scheduler_config, audio=audio)  # fmt: skip
            conditioner = AudioLdmTextConditioner(parts.text_encoder, parts.tokenizer, version="bench")
            self.pipeline = FoleyPipeline(clap, EmbeddingAdapter(conditioner.dim), ldm, sampler="native", steps=10,
                                          clap_source="laion", conditioner=conditioner, convention="diffusers")  # fmt: skip
        self.convention = self.pipeline.convention
        self.unet = self.pipeline.ldm.unet

    def to(self, device, precision: str) -> "FoleyEngine":
        self.pipeline.to(device, precision)
        return self

    def __call__(self, prompts, *, n_candidates, guidance_scale, seeds, steps, sampler) -> Result:
        out = self.pipeline(prompts, n_candidates=n_candidates, guidance_scale=guidance_scale, seeds=seeds, steps=steps,
                            sampler=sampler, seconds=CLIP_SECONDS)  # fmt: skip
        return Result(out.waveforms, out.scores, out.best)


def foley_importable() -> str | None:
    """None when foley_core's pipeline imports here, else why not."""
    try:
        import foley_core.generation.pipeline  # noqa: F401
    except (ImportError, OSError) as exc:  # OSError: e.g. soundfile present without its libsndfile
        return f"{type(exc).__name__}: {exc}"
    return None


def laion_scorer(checkpoint: Path, tokenizer: Path | None):
    """The real LAION-CLAP through foley_core (paper profile's loader, pointed at the given files)."""
    from foley_core.clap.laion import load_laion_clap
    from foley_core.core.config import load_profile

    overrides = {"clap": {"checkpoint": str(Path(checkpoint).resolve()),
                          "tokenizer_path": str(Path(tokenizer).resolve()) if tokenizer else None}}  # fmt: skip
    return load_laion_clap(load_profile("paper", overrides))


# ------------------------------------------------------------------------------------------------- measuring

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


class UnetProbe:
    """Counts UNet calls and the rows and dtype of each (to check cond + uncond share one batch)."""

    def __init__(self, unet: torch.nn.Module):
        self.calls: list[tuple[int, str]] = []
        self.handle = unet.register_forward_pre_hook(self._hook)

    def _hook(self, module, args):
        self.calls.append((int(args[0].shape[0]), str(args[0].dtype).replace("torch.", "")))

    def reset(self) -> None:
        self.calls.clear()


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()} ({os.cpu_count()} CPUs, torch threads {torch.get_num_threads()})"
    except OSError:
        pass
    return f"{platform.processor() or platform.machine()} ({os.cpu_count()} CPUs, torch threads {torch.get_num_threads()})"


def reset_peak(device: torch.device) -> str:
    """Reset the peak-memory counter; returns what the peak will mean."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        return "torch.cuda.max_memory_allocated"
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM (peak RSS) to the current RSS
        return "peak RSS (VmHWM, reset per setting)"
    except OSError:
        return "peak RSS of the process so far (ru_maxrss; could not reset per setting)"


def peak_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        return int(torch.cuda.max_memory_allocated(device))
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass
class Setting:
    name: str
    sampler: str
    steps: int
    precision: str


@dataclass
class Workload:
    classes: list[dict]  # the classes sharing it (first one is timed)
    candidates: int
    guidance: float
    guided: bool
    results: dict = field(default_factory=dict)


def workloads(classes: list[dict], convention: str, every_class: bool) -> list[Workload]:
    """Group classes whose generation costs the same (candidates, guided or not)."""
    out: dict[tuple, Workload] = {}
    for c in classes:
        guided = c["guidance"] > 1 if convention == "diffusers" else c["guidance"] != 1
        key = (c["name"],) if every_class else (c["candidates"], guided)
        if key not in out:
            out[key] = Workload([], c["candidates"], c["guidance"], guided)
        out[key].classes.append(c)
    return list(out.values())


def time_workload(engine, work: Workload, setting: Setting, clips: int, device: torch.device, chunk_rows: int,
                  class_index: int) -> dict:  # fmt: skip
    """``clips`` selected clips of the workload's first class, chunked as generate_class chunks slots."""
    cls = work.classes[0]
    chunk = max(1, chunk_rows // work.candidates)
    seeds = [1000 * class_index + slot for slot in range(clips)]
    scores, finite = [], True
    sync(device)
    started = time.perf_counter()
    for start in range(0, clips, chunk):
        part = seeds[start : start + chunk]
        out = engine([cls["prompt"]] * len(part), n_candidates=work.candidates, guidance_scale=work.guidance, seeds=part,
                     steps=setting.steps, sampler=setting.sampler)  # fmt: skip
        finite = finite and bool(np.isfinite(out.waveforms).all())
        scores.append(out.scores[np.arange(len(part)), out.best])
    sync(device)
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "clips": clips, "s_per_clip": seconds / clips,
            "s_per_candidate": seconds / (clips * work.candidates), "selected_score_mean": float(np.mean(np.concatenate(scores))),
            "finite_audio": finite}  # fmt: skip


def projected_workload(engine, work: Workload, setting: Setting, args, device: torch.device, class_index: int) -> dict:
    """The paper setting timed at two small step counts and extrapolated to ``setting.steps``: seconds per clip
    are a fixed part (decoding, vocoder, scoring) plus one UNet batch per step, so two points fix the line.
    For a CPU where 200 steps of the 10-candidate class take most of an hour."""
    low, high = args.paper_from_steps
    at = {n: time_workload(engine, work, replace(setting, steps=n), args.clips, device, MAX_BATCH_ROWS, class_index)
          for n in (low, high)}  # fmt: skip
    per_step = (at[high]["s_per_clip"] - at[low]["s_per_clip"]) / (high - low)
    fixed = at[low]["s_per_clip"] - low * per_step
    s_per_clip = fixed + setting.steps * per_step
    return {**at[high], "s_per_clip": s_per_clip, "s_per_candidate": s_per_clip / work.candidates,
            "seconds": s_per_clip * args.clips, "projected_from_steps": [low, high], "s_per_step": per_step,
            "s_fixed": fixed, "measured_s_per_clip": {str(n): at[n]["s_per_clip"] for n in at}}  # fmt: skip


def check_batching(engine, probe: UnetProbe, setting: Setting) -> dict:
    """A 2-step, 2-candidate guided call: one UNet call per step with 4 rows means cond and uncond are batched."""
    probe.reset()
    engine(["a dog bark"], n_candidates=2, guidance_scale=2.5, seeds=[7], steps=2, sampler=setting.sampler)
    calls = list(probe.calls)
    batched = len(calls) == 2 and all(rows == 4 for rows, _ in calls)
    return {"unet_calls": len(calls), "rows_per_call": [r for r, _ in calls], "dtype": calls[0][1] if calls else None,
            "cond_uncond_one_batch": batched}  # fmt: skip


def run(args) -> dict:
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda but torch sees no CUDA device")
    classes, classes_source = paper_classes()
    if args.classes:
        wanted = set(args.classes.split(","))
        unknown = wanted - {c["name"] for c in classes}
        if unknown:
            raise SystemExit(f"unknown classes {sorted(unknown)}; known: {[c['name'] for c in classes]}")
        classes = [c for c in classes if c["name"] in wanted]
    reason = foley_importable() if args.engine in ("auto", "foley") else "--engine mirror"
    engine_kind = args.engine if args.engine != "auto" else ("foley" if reason is None else "mirror")
    if engine_kind == "foley" and reason is not None:
        raise SystemExit(f"--engine foley but foley_core does not import here ({reason}); use --engine mirror")
    scorer_kind = args.scorer if args.scorer != "auto" else ("htsat" if args.size == "paper" else "cheap")
    if scorer_kind == "laion" and engine_kind != "foley":
        raise SystemExit("--scorer laion needs the foley engine (foley_core + laion-clap)")
    if scorer_kind == "laion" and not args.clap_checkpoint:
        raise SystemExit("--scorer laion needs --clap-checkpoint (630k-audioset-best.pt) and --clap-tokenizer (roberta-base dir)")

    from diffusers.utils import logging as diffusers_logging

    diffusers_logging.set_verbosity_error()  # the UNet's dtype cast warns on every to(); nothing to act on here
    notes = []
    built = time.perf_counter()
    parts = None
    if args.model is None:
        parts = build_components(args.size, args.seed)
        rate = parts.sample_rate
    elif engine_kind == "mirror":
        parts = load_audioldm_folder(args.model)
        rate = parts.sample_rate
    else:
        rate = 16000
    if scorer_kind == "laion":
        scorer = laion_scorer(Path(args.clap_checkpoint), Path(args.clap_tokenizer) if args.clap_tokenizer else None)
        scorer_name = f"laion ({args.clap_checkpoint})"
    else:
        scorer = build_scorer(scorer_kind, args.size, rate)
        scorer_name = scorer.name
    if engine_kind == "foley":
        engine = FoleyEngine(parts, scorer, args.model)
        if args.model is not None and (Path(args.model) / "pipeline.json").is_file():
            scorer_name = "the saved pipeline's own CLAP"
    else:
        engine = MirrorEngine(parts, scorer)
        notes.append(f"foley_core not used ({reason}): the mirror loop in this file, tested equal to FoleyPipeline")
    params = parts.parameters() if parts is not None else {
        "unet": sum(p.numel() for p in engine.unet.parameters()) / 1e6}
    if scorer_kind != "laion" and hasattr(scorer, "parameters"):
        params["scorer"] = sum(p.numel() for p in scorer.parameters()) / 1e6
    build_seconds = time.perf_counter() - built

    fast_precision = args.precision_fast or ("fp16" if device.type == "cuda" else "bf16")
    catalogue = {
        "paper": Setting("paper", "ddim", args.steps_paper, "fp32"),
        "fast": Setting("fast", "dpmsolver++", args.steps_fast, fast_precision),
        "fast-fp32": Setting("fast-fp32", "dpmsolver++", args.steps_fast, "fp32"),
    }
    settings = [catalogue[name] for name in args.settings.split(",")]
    probe = UnetProbe(engine.unet)
    groups = workloads(classes, engine.convention, args.all_classes)
    report = {
        "device": str(device), "device_name": device_name(device), "torch": torch.__version__,
        "size": args.size if args.model is None else "folder", "components": parts.source if parts else str(args.model),
        "parameters_m": params, "engine": engine.name, "scorer": scorer_name, "classes_from": classes_source,
        "convention": engine.convention, "clips_per_setting_and_class": args.clips, "build_seconds": build_seconds,
        "settings": [], "notes": notes,
    }  # fmt: skip
    if device.type == "cuda":
        report["tf32"] = {"matmul": torch.backends.cuda.matmul.allow_tf32, "cudnn": torch.backends.cudnn.allow_tf32}
    for setting in settings:
        engine.to(device, setting.precision)
        batching = check_batching(engine, probe, setting)  # also the warm-up
        memory_kind = reset_peak(device)
        rows = []
        for index, work in enumerate(groups):
            probe.reset()
            if setting.name == "paper" and args.paper_from_steps:
                timed = projected_workload(engine, work, setting, args, device, index)
            else:
                timed = time_workload(engine, work, setting, args.clips, device, MAX_BATCH_ROWS, index)
            timed["unet_calls"], timed["max_rows_per_unet_call"] = len(probe.calls), max(r for r, _ in probe.calls)
            for c in work.classes:
                rows.append({"class": c["name"], "candidates": work.candidates, "guidance": c["guidance"],
                             "guided": work.guided, "timed_as": work.classes[0]["name"], **timed})  # fmt: skip
            print(f"  {setting.name}: {work.classes[0]['name']} ({work.candidates} candidates, "
                  f"{'guided' if work.guided else 'unguided'}): {timed['s_per_clip']:.2f} s/clip", file=sys.stderr)
        order = [c["name"] for c in classes]
        rows.sort(key=lambda r: order.index(r["class"]))
        per_class = {r["class"]: r["s_per_clip"] for r in rows}
        mean = float(np.mean(list(per_class.values())))
        report["settings"].append({
            "name": setting.name, "sampler": setting.sampler, "steps": setting.steps, "precision": setting.precision,
            "batching": batching, "classes": rows, "mean_s_per_clip": mean,
            "projected_hours_700": mean * SUBMISSION_CLIPS_PER_CLASS * 7 / 3600,
            "projection_from_classes": len(per_class), "peak_memory_bytes": peak_bytes(device), "memory": memory_kind,
        })  # fmt: skip
    probe.handle.remove()
    if report["settings"] and report["settings"][0]["name"] == "paper":
        base = report["settings"][0]["mean_s_per_clip"]
        for s in report["settings"]:
            s["speedup_vs_paper"] = base / s["mean_s_per_clip"]
    return report


def render(report: dict) -> str:
    lines = [
        f"device: {report['device']} - {report['device_name']}, torch {report['torch']}",
        f"components: {report['components']}; parameters (M): "
        + ", ".join(f"{k} {v:.1f}" for k, v in report["parameters_m"].items()),
        f"engine: {report['engine']}; convention: {report['convention']}; classes: {report['classes_from']}",
        f"scorer: {report['scorer']}",
        f"clips timed per setting and class: {report['clips_per_setting_and_class']} "
        f"(4 s each; seconds per *selected* clip include all its candidates, decoding, vocoder and scoring)",
    ]
    for s in report["settings"]:
        b = s["batching"]
        lines.append(f"{s['name']}: cond+uncond in one UNet batch: {'yes' if b['cond_uncond_one_batch'] else 'NO'} "
                     f"(2 guided candidates x 2 steps -> {b['unet_calls']} UNet calls of {b['rows_per_call']} rows, "
                     f"UNet dtype {b['dtype']})")  # fmt: skip
    if "tf32" in report:
        lines.append(f"TF32 allowed: matmul {report['tf32']['matmul']}, cuDNN {report['tf32']['cudnn']} (torch defaults)")
    bad = sorted({r["class"] for s in report["settings"] for r in s["classes"] if not r["finite_audio"]})
    if bad:
        lines.append(f"WARNING: non-finite audio in {', '.join(bad)} (random weights in half precision can overflow)")
    lines += [*(f"note: {n}" for n in report["notes"]), ""]
    names = [s["name"] for s in report["settings"]]
    lines.append("| class | candidates | guidance | " + " | ".join(f"{n} s/clip" for n in names) + " |")
    lines.append("|---|---|---|" + "---|" * len(names))
    first = report["settings"][0]["classes"] if report["settings"] else []
    for i, row in enumerate(first):
        shared = "" if row["timed_as"] == row["class"] else f" (= {row['timed_as']})"
        cells = [f"{s['classes'][i]['s_per_clip']:.2f}" for s in report["settings"]]
        guided = "" if row["guided"] else ", no uncond pass"
        lines.append(f"| {row['class']}{shared} | {row['candidates']} | {row['guidance']}{guided} | " + " | ".join(cells) + " |")
    lines += ["", "| setting | sampler | steps | UNet precision | mean s/clip | 700 clips (h) | speed-up | peak memory |",
              "|---|---|---|---|---|---|---|---|"]
    for s in report["settings"]:
        speed = f"{s['speedup_vs_paper']:.1f}x" if "speedup_vs_paper" in s else "-"
        projected = s["classes"][0].get("projected_from_steps") if s["classes"] else None
        steps = f"{s['steps']} (projected from {projected[0]} and {projected[1]})" if projected else s["steps"]
        lines.append(f"| {s['name']} | {s['sampler']} | {steps} | {s['precision']} | {s['mean_s_per_clip']:.2f} | "
                     f"{s['projected_hours_700']:.2f} | {speed} | {s['peak_memory_bytes'] / 2**30:.2f} GiB |")
    if report["settings"]:
        lines.append(f"peak memory: {report['settings'][0]['memory']}; 700 clips = 7 classes x 100, the mean over "
                     f"{report['settings'][0]['projection_from_classes']} class(es) x 700, no regenerations")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--size", choices=["tiny", "paper"], default="paper")
    parser.add_argument("--model", type=Path, help="a real diffusers AudioLDM folder (or, with the foley engine, a saved pipeline)")
    parser.add_argument("--clips", type=int, default=2, help="selected clips timed per setting and class (default 2)")
    parser.add_argument("--steps-paper", type=int, default=200)
    parser.add_argument("--steps-fast", type=int, default=25)
    parser.add_argument("--paper-from-steps", type=lambda v: tuple(int(x) for x in v.split(",")),
                        help="LOW,HIGH: time the paper setting at these step counts and extrapolate to --steps-paper "
                             "(linear in steps; for a CPU, where 200 steps take hours)")
    parser.add_argument("--precision-fast", choices=list(DTYPES), help="default: bf16 on CPU, fp16 on CUDA")
    parser.add_argument("--settings", default="paper,fast", help="comma list of paper, fast, fast-fp32")
    parser.add_argument("--classes", help="comma list (default: all 7)")
    parser.add_argument("--all-classes", action="store_true", help="time every class, not one per distinct workload")
    parser.add_argument("--engine", choices=["auto", "foley", "mirror"], default="auto")
    parser.add_argument("--scorer", choices=["auto", "cheap", "htsat", "laion"], default="auto")
    parser.add_argument("--clap-checkpoint", help="LAION-CLAP 630k-audioset-best.pt (--scorer laion)")
    parser.add_argument("--clap-tokenizer", help="roberta-base tokenizer folder (--scorer laion)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="write the report here")
    args = parser.parse_args(argv)
    if args.clips < 1 or args.steps_paper < 1 or args.steps_fast < 1:
        parser.error("--clips, --steps-paper and --steps-fast must be >= 1")
    if args.paper_from_steps and (len(args.paper_from_steps) != 2 or not 1 <= args.paper_from_steps[0] < args.paper_from_steps[1]):
        parser.error("--paper-from-steps takes LOW,HIGH with 1 <= LOW < HIGH")
    unknown = set(args.settings.split(",")) - {"paper", "fast", "fast-fp32"}
    if unknown:
        parser.error(f"unknown settings {sorted(unknown)}")
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    report = run(args)
    print(render(report))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
