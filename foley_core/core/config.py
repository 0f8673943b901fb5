"""Profiles: one YAML file per profile in ``configs/``, validated on load.

Every knob of the pipeline lives here, so the code paths are the same for the
``smoke`` (tests), ``cpu`` (embedded default) and ``paper`` (GPU) profiles.
An unknown key or a bad value fails with the key path and the reason.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from foley_core.core.hashing import json_hash

PROJECT_ROOT = Path(__file__).resolve().parent.parent.parent  # foley_core/core/config.py -> the project
CONFIG_DIR = PROJECT_ROOT / "configs"

# DCASE 2023 Task 7 class ids (fixed by the challenge).
DCASE_CLASS_IDS = {
    "DogBark": 0,
    "Footstep": 1,
    "GunShot": 2,
    "Keyboard": 3,
    "MovingMotorVehicle": 4,
    "Rain": 5,
    "Sneeze_Cough": 6,
}


class ConfigError(ValueError):
    """A profile could not be loaded; the message names the key and the reason."""


def plain_name_problem(name: str) -> str | None:
    """Why ``name`` cannot be a class name, or None: class names become folder names
    (``<dataset>/<Class>/``), so one must never climb out of, hide in or split a path."""
    if not name:
        return "must not be empty"
    if "/" in name or "\\" in name or "\0" in name:
        return "must not contain '/', '\\' or NUL: it is used as a folder name"
    if name.startswith("."):
        return "must not start with '.': it is used as a folder name (hidden names are ingest's own)"
    return None


def _check_plain_name(name: str) -> str:
    problem = plain_name_problem(name)
    if problem:
        raise ValueError(f"class name {name!r} {problem}")
    return name


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PathsConfig(_Strict):
    data_dir: Path = Path("data")  # DVC-tracked raw data (data.dvc)
    artifacts_dir: Path  # versioned pipeline artifacts (datasets, models, caches)
    outputs_dir: Path = Path("outputs")  # per-run reports and exports


class AudioConfig(_Strict):
    sample_rate: int = Field(16000, ge=8000, le=48000)
    clip_seconds: float = Field(4.0, gt=0, le=30)
    output_sample_rate: int = Field(22050, ge=8000, le=48000)
    n_fft: int = Field(1024, ge=64)
    win_length: int = Field(1024, ge=64)
    hop_length: int = Field(160, ge=16)
    n_mels: int = Field(64, ge=8, le=256)
    f_min: float = Field(0.0, ge=0)
    f_max: float = Field(8000.0, gt=0)

    @model_validator(mode="after")
    def _check_mel(self) -> "AudioConfig":
        if self.win_length > self.n_fft:
            raise ValueError(f"win_length ({self.win_length}) must be <= n_fft ({self.n_fft})")
        if self.f_max > self.sample_rate / 2:
            raise ValueError(f"f_max ({self.f_max}) must be <= sample_rate/2 ({self.sample_rate / 2})")
        if self.f_min >= self.f_max:
            raise ValueError(f"f_min ({self.f_min}) must be < f_max ({self.f_max})")
        return self

    @property
    def clip_samples(self) -> int:
        return int(round(self.clip_seconds * self.sample_rate))


class ClassConfig(_Strict):
    """One target class and its generation settings (the winners' per-class table, configs/cpu.yaml)."""

    name: str = Field(min_length=1)
    prompts: list[str] = Field(min_length=1)
    candidates: int = Field(3, ge=1, le=64)
    guidance: float = Field(2.5, ge=0)
    clap_floor: float | None = Field(None, ge=-1, le=1)
    model: Literal["small", "big"] = "small"
    # More prompts for the prompt search to try (class_prompts asset), beside ``prompts`` and the
    # held-out paraphrases; generation uses the winner (docs/prompts.md).
    extra_prompts: list[str] = Field(default_factory=list)

    @field_validator("name")
    @classmethod
    def _plain_name(cls, name: str) -> str:
        return _check_plain_name(name)

    @field_validator("prompts", "extra_prompts")
    @classmethod
    def _non_empty_prompts(cls, prompts: list[str]) -> list[str]:
        for prompt in prompts:
            if not prompt.strip():
                raise ValueError("prompts must not contain empty strings")
        return prompts


class SyntheticSource(_Strict):
    """The built-in procedural Foley synthesiser: written into ``path`` (DCASE layout + captions.csv)."""

    kind: Literal["synthetic"]
    path: Path
    clips_per_class: int = Field(ge=1)
    extra_types: list[str] = []  # non-DCASE sound types for a broader pre-training corpus
    clips_per_extra_type: int = Field(0, ge=0)


class FolderSource(_Strict):
    """DCASE dev-set layout ``<root>/<Class>/*.wav``; a ``captions.csv`` at the root is used if present."""

    kind: Literal["folder"]
    path: Path


class CaptionedCsvSource(_Strict):
    """A captioned corpus: CSV with columns ``path,caption[,class]`` (paths relative to the CSV)."""

    kind: Literal["captioned_csv"]
    path: Path


Source = Annotated[SyntheticSource | FolderSource | CaptionedCsvSource, Field(discriminator="kind")]


class DataConfig(_Strict):
    sources: list[Source] = Field(min_length=1)
    extra_classes: list[str] = []  # accepted class names besides the target classes (pre-training only)
    val_fraction: float = Field(0.15, ge=0, lt=1)
    max_windows_per_file: int = Field(4, ge=1)  # long recordings are cut into at most this many clips
    min_window_fraction: float = Field(0.5, gt=0, le=1)  # keep a trailing partial window if at least this long
    silence_threshold_db: float = Field(-60.0, le=0)  # peak below this -> "silent"
    target_peak: float = Field(0.9, gt=0, le=1)
    # Ingest decodes only the part of a file that can become kept windows (max_windows_per_file
    # clips, plus 1 s for the resampler), so length never costs memory; what is left is the
    # channel count (and rate): a file whose decoded part, as float32 x channels, exceeds this
    # is quarantined as "too_large" instead of being decoded. 256 MiB holds the 17 s the paper
    # profile decodes (4 windows of 4 s + 1 s) for 80 channels at 48 kHz or 10 at 384 kHz;
    # one file's peak memory is at most about twice this.
    max_decoded_bytes: int = Field(256 * 2**20, ge=2**20)

    @field_validator("extra_classes")
    @classmethod
    def _plain_names(cls, names: list[str]) -> list[str]:
        return [_check_plain_name(name) for name in names]


class DvcConfig(_Strict):
    enabled: bool = True
    remote: str = "local"
    auto_track: bool = True  # raw_foley_data runs `dvc add` + `dvc push` when data/ changed


class ClapConfig(_Strict):
    """CLAP stage (foley_core.clap): a pretrained LAION-CLAP checkpoint or a small CLAP trained here."""

    source: Literal["trained", "laion"] = "trained"
    # laion: official checkpoint (local .pt, e.g. 630k-audioset-best.pt) and a local RoBERTa tokenizer folder
    checkpoint: Path | None = None
    tokenizer_path: Path | None = None  # folder with roberta-base vocab.json + merges.txt
    download: bool = False  # fetch missing checkpoint/tokenizer from the hub (also needs HF_HUB_OFFLINE=0)
    trust_checkpoint: bool = False  # allow torch.load(weights_only=False) for a checkpoint that needs it
    text_tower: Literal["minilm", "transformer", "roberta"] = "minilm"
    audio_tower: str = "pann-lite"  # trained: pann-lite | Cnn6 | Cnn10 | Cnn14; laion: HTSAT-tiny | PANN-14 ...
    embed_dim: int = Field(512, ge=8)
    # trained audio tower: laion PANN ConvBlock widths and its log-mel front end
    audio_channels: list[int] = Field([16, 32, 64, 128], min_length=1)
    mel_bins: int = Field(64, ge=8)
    window_size: int = Field(512, ge=64)
    hop_size: int = Field(320, ge=16)
    crop_seconds: float = Field(2.0, gt=0)  # random training crops; whole clips at inference
    # trained text tower "transformer" (laion CLIP-BPE, from scratch)
    text_width: int = Field(128, ge=8)
    text_layers: int = Field(2, ge=1)
    text_heads: int = Field(4, ge=1)
    context_length: int = Field(32, ge=8, le=77)
    steps: int = Field(300, ge=0)
    batch_size: int = Field(32, ge=2)
    learning_rate: float = Field(1e-3, gt=0)
    # Lightning precision for this model's training (e.g. bf16-mixed, or auto: bf16 only where the
    # hardware runs it natively, foley_core/core/hardware.py); null = trainer.precision.
    precision: str | None = None

class VaeConfig(_Strict):
    block_out_channels: list[int] = Field([16, 32, 32], min_length=1)
    latent_channels: int = Field(8, ge=1)
    layers_per_block: int = Field(1, ge=1)
    steps: int = Field(500, ge=0)
    batch_size: int = Field(16, ge=1)
    learning_rate: float = Field(1e-3, gt=0)
    kl_weight: float = Field(1e-6, ge=0)
    crop_frames: int = Field(96, ge=0)  # train on random crops this many frames long; 0 = whole clips
    # constant | cosine: the learning rate falls to 0 at `steps` (converges in fewer steps, docs/benchmarks.md)
    lr_schedule: Literal["constant", "cosine"] = "constant"
    # Lightning precision for this model's training (e.g. bf16-mixed, or auto: bf16 only where the
    # hardware runs it natively, foley_core/core/hardware.py); null = trainer.precision.
    precision: str | None = None


class UnetConfig(_Strict):
    block_out_channels: list[int] = Field([32, 64, 64], min_length=1)
    layers_per_block: int = Field(1, ge=1)
    attention: bool = False
    attention_head_dim: int = Field(8, ge=1)  # only with attention
    steps: int = Field(1500, ge=0)
    batch_size: int = Field(16, ge=1)
    learning_rate: float = Field(1e-3, gt=0)
    condition_dropout: float = Field(0.1, ge=0, lt=1)
    ema_decay: float = Field(0.99, ge=0, lt=1)
    prediction_type: Literal["epsilon", "v_prediction"] = "v_prediction"
    train_timesteps: int = Field(1000, ge=10)
    beta_schedule: Literal["squaredcos_cap_v2", "scaled_linear", "linear"] = "squaredcos_cap_v2"
    frequency_channel: bool = True  # an extra input channel holding frequency position (cpu prototype: helped)
    # train on random time crops this many latent frames long (a multiple of the UNet's downsampling);
    # 0 = whole clips. Sampling always makes whole clips (docs/benchmarks.md: half the step time at 48 of 100)
    crop_frames: int = Field(0, ge=0)
    # constant | cosine: the learning rate falls to 0 at `steps` (converges in fewer steps, docs/benchmarks.md)
    lr_schedule: Literal["constant", "cosine"] = "constant"
    # Lightning precision for this model's training (e.g. bf16-mixed, or auto: bf16 only where the
    # hardware runs it natively, foley_core/core/hardware.py); null = trainer.precision.
    precision: str | None = None


class VocoderConfig(_Strict):
    """SpeechT5HifiGan generator; defaults are AudioLDM's vocoder (product of upsample_rates = hop 160)."""

    kind: Literal["hifigan", "griffinlim"] = "hifigan"
    upsample_initial_channel: int = Field(64, ge=8)
    upsample_rates: list[int] = Field([5, 4, 2, 2, 2], min_length=1)
    upsample_kernel_sizes: list[int] = Field([16, 16, 8, 4, 4], min_length=1)
    resblock_kernel_sizes: list[int] = Field([3, 7, 11], min_length=1)
    resblock_dilation_sizes: list[list[int]] = Field([[1, 3, 5], [1, 3, 5], [1, 3, 5]], min_length=1)
    segment_frames: int = Field(32, ge=4)  # training segment length in mel frames
    steps: int = Field(500, ge=0)
    batch_size: int = Field(8, ge=1)
    learning_rate: float = Field(2e-4, gt=0)
    griffinlim_iters: int = Field(16, ge=1)
    # constant | cosine: the learning rate falls to 0 at `steps` (converges in fewer steps, docs/benchmarks.md)
    lr_schedule: Literal["constant", "cosine"] = "constant"
    # Lightning precision for this model's training (e.g. bf16-mixed, or auto: bf16 only where the
    # hardware runs it natively, foley_core/core/hardware.py); null = trainer.precision.
    precision: str | None = None

    @model_validator(mode="after")
    def _check_layers(self) -> "VocoderConfig":
        if len(self.upsample_rates) != len(self.upsample_kernel_sizes):
            raise ValueError("upsample_rates and upsample_kernel_sizes must have the same length")
        if len(self.resblock_kernel_sizes) != len(self.resblock_dilation_sizes):
            raise ValueError("resblock_kernel_sizes and resblock_dilation_sizes must have the same length")
        if self.upsample_initial_channel // 2 ** len(self.upsample_rates) < 1:
            raise ValueError("upsample_initial_channel is too small for that many upsampling layers")
        return self


class LdmConfig(_Strict):
    pretrained_path: Path | None = None  # paper: a diffusers AudioLDM folder (cvssp/audioldm-s-full-v2 layout)
    mel_normalisation: Literal["global", "none"] = "global"  # VAE input: one global mean/std, or raw (AudioLDM)
    vae: VaeConfig = VaeConfig()
    unet: UnetConfig = UnetConfig()
    vocoder: VocoderConfig = VocoderConfig()
    # A model per class, as the winning system had: classes whose `model` is named here generate
    # with that AudioLDM folder (imported as it is, with its own text encoder); every other class
    # uses the main LDM above. Empty = one model for all classes.
    models: dict[Literal["small", "big"], Path] = {}


class FinetuneConfig(_Strict):
    train: Literal["adapter", "adapter+unet"] = "adapter"
    steps: int = Field(300, ge=0)
    batch_size: int = Field(16, ge=1)
    learning_rate: float = Field(1e-3, gt=0)
    crop_frames: int = Field(0, ge=0)  # random latent time crops, as ldm.unet.crop_frames; 0 = whole clips
    # Lightning precision for this model's training (e.g. bf16-mixed, or auto: bf16 only where the
    # hardware runs it natively, foley_core/core/hardware.py); null = trainer.precision.
    precision: str | None = None
    # Texts per batch through the conditioning text encoder when the fine-tunes embed their texts
    # (this adapter fine-tune and `foley finetune`): the paper's dev set gives ~8,700 texts, and one
    # batch of them through AudioLDM's RoBERTa would take tens of GB. Bounds memory, not results.
    text_batch_size: int = Field(64, ge=1)


class TransferConfig(_Strict):
    """`foley finetune SOURCE`: the accepted model fine-tuned on a user's own recordings (foley_core.transfer)."""

    source: str | None = None  # a <Class>/<file> folder: the graph fine-tunes on it after every promotion
    # Defaults measured on ../shared/data/real-foley with the cpu model (docs/finetune.md)
    train: Literal["adapter", "unet", "all"] = "all"  # all = adapter + UNet + vocoder
    steps: int = Field(1000, ge=0)
    batch_size: int = Field(16, ge=1)
    learning_rate: float = Field(1e-3, gt=0)  # the UNet's
    # null: the whole UNet trains; N: LoRA of rank N through peft, merged into the UNet after training
    unet_lora_rank: int | None = Field(None, ge=1)
    adapter_learning_rate: float = Field(1e-3, gt=0)
    condition_dropout: float = Field(0.1, ge=0, lt=1)
    vocoder_steps: int = Field(1000, ge=0)
    vocoder_learning_rate: float = Field(2e-4, gt=0)
    clap_steps: int = Field(300, ge=0)
    clap_learning_rate: float = Field(5e-4, gt=0)
    clap_batch_size: int = Field(32, ge=1)
    clap_max_drop: float = Field(0.05, ge=0, le=1)  # the adapted CLAP may lose this much on the profile's own val clips
    val_fraction: float = Field(0.25, gt=0, lt=1)  # of each class's clips, whole recordings held out for the gate
    eval_clips_per_class: int = Field(10, ge=2)


class TrainerConfig(_Strict):
    """Passed to Lightning's Trainer. ``devices: N`` > 1 (``strategy: ddp`` or ``auto``) trains on N
    processes of this host, started by ``foley_core.core.training.fit_on_ranks`` (docs/scaling.md);
    the batch sizes stay global batches, each rank taking its N-th."""

    accelerator: str = "cpu"
    devices: int | str = 1
    strategy: str = "auto"
    num_nodes: int = Field(1, ge=1)  # > 1 is refused at the first fit: the ranks are started on one host
    precision: str = "32-true"
    checkpoint_every_n_steps: int = Field(100, ge=1)
    num_workers: int = Field(0, ge=0)

    @field_validator("strategy")
    @classmethod
    def _ranks_started_by_foley(cls, strategy: str) -> str:
        # these start processes themselves, ignoring the ranks fit_on_ranks has already started
        if strategy.startswith(("ddp_spawn", "ddp_fork", "ddp_notebook")):
            raise ValueError(f"trainer.strategy {strategy!r} starts its own processes; foley starts one per device "
                             "itself (docs/scaling.md): use ddp")
        return strategy


class GenerationConfig(_Strict):
    # ddim | dpmsolver++ on the model's noise schedule, or native: the scheduler class its scheduler/ config names
    scheduler: Literal["ddim", "dpmsolver++", "native"] = "ddim"
    steps: int = Field(25, ge=1, le=1000)
    clips_per_class: int = Field(10, ge=1)
    # Candidates scoring at or above it are near-copies of their target and rejected; null = no ceiling.
    clap_ceiling: float | None = Field(0.99, ge=-1, le=1)
    max_regenerations: int = Field(2, ge=0)
    # Where generation and CLAP scoring run: auto (CUDA when torch sees a GPU) | cpu | cuda | cuda:N | mps.
    device: str = "auto"
    # The UNet's dtype while sampling (VAE, vocoder, text encoders and CLAP stay float32);
    # auto: bf16 where the hardware runs it natively, else fp32 (CPU) or fp16 (CUDA).
    precision: Literal["fp32", "bf16", "fp16", "auto"] = "fp32"
    # DDIM's eta, passed to every scheduler whose step takes one (as diffusers' pipelines do): 0 is
    # deterministic DDIM, 1 adds DDPM-like noise at each step, drawn from each clip's own generator.
    eta: float = Field(0.0, ge=0, le=1)
    # The prompt search (class_prompts asset): clips generated per candidate prompt of a class,
    # scored against the class's training clips; 0 = no search, every class uses its first prompt.
    prompt_search_clips: int = Field(2, ge=0, le=16)
    # Selection measured on each class's training clips under the CLAP that selects (class_prompts
    # asset, generation/calibration.py): whether selection is on, the floor, the copy ceiling.
    # Off: every class's configured candidates and clap_floor, and clap_ceiling above.
    calibrate_selection: bool = False

    @field_validator("device")
    @classmethod
    def _known_device(cls, device: str) -> str:
        if not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", device):
            raise ValueError(f"device must be auto, cpu, cuda, cuda:N or mps, got {device!r}")
        return device


class EvaluationConfig(_Strict):
    embedder: Literal["logmel", "vggish", "clap"] = "logmel"
    vggish_weights: Path | None = None  # torchvggish state dict; enables FAD against the official DCASE statistics
    regression_margin: float = Field(0.25, ge=0)  # a new model may be this much (relative) worse on mean KAD/FAD


class WandbConfig(_Strict):
    project: str = "foley-ldm"
    mode: Literal["offline", "online", "disabled"] = "offline"


class Profile(_Strict):
    name: str
    seed: int = 0
    paths: PathsConfig
    audio: AudioConfig = AudioConfig()
    classes: list[ClassConfig] = Field(min_length=1)
    data: DataConfig
    dvc: DvcConfig = DvcConfig()
    clap: ClapConfig = ClapConfig()
    ldm: LdmConfig = LdmConfig()
    finetune: FinetuneConfig = FinetuneConfig()
    transfer: TransferConfig = TransferConfig()
    trainer: TrainerConfig = TrainerConfig()
    generation: GenerationConfig = GenerationConfig()
    evaluation: EvaluationConfig = EvaluationConfig()
    wandb: WandbConfig = WandbConfig()
    # What each ``precision: auto`` resolved to on this machine, and why (filled on load, never
    # written in a profile): {"clap.precision": "bf16-mixed", ..., "reason": "...", "cpu": "..."}.
    # The resolved values replace ``auto`` in their sections, so they are part of every code
    # version and fingerprint: two kinds of CPU give two model versions.
    precision_resolved: dict[str, str] = Field(default_factory=dict, exclude=True)

    @model_validator(mode="before")
    @classmethod
    def _resolve_auto_precision(cls, data):
        if not isinstance(data, dict):
            return data
        if data.get("precision_resolved"):
            raise ValueError("precision_resolved is filled on load; set the sections' precision instead")
        return resolve_auto_precision(data)

    @model_validator(mode="after")
    def _check_classes(self) -> "Profile":
        names = [c.name for c in self.classes]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"duplicate class names: {duplicates}")
        overlap = sorted(set(names) & set(self.data.extra_classes))
        if overlap:
            raise ValueError(f"data.extra_classes repeats target classes: {overlap}")
        return self

    def precision_summary(self) -> dict[str, str]:
        """The precision each network trained and sampled in (``auto`` resolved), and, where ``auto``
        decided, why and on which CPU: what the model record and the report show."""
        trainer = self.trainer.precision
        summary = {"clap": self.clap.precision or trainer, "vae": self.ldm.vae.precision or trainer,
                   "vocoder": self.ldm.vocoder.precision or trainer, "unet": self.ldm.unet.precision or trainer,
                   "adapter": self.finetune.precision or trainer, "sampling": self.generation.precision}
        if self.precision_resolved:
            summary["auto"] = self.precision_resolved["reason"]
            summary["cpu"] = self.precision_resolved["cpu"]
        return summary

    @property
    def class_names(self) -> list[str]:
        return [c.name for c in self.classes]

    @property
    def dataset_classes(self) -> list[str]:
        """Every class a clip may carry: target classes first, then pre-training-only ones."""
        return self.class_names + list(self.data.extra_classes)

    def model_of(self, label: str) -> str | None:
        """The named LDM (``ldm.models``) a class generates with, or None for the main LDM."""
        name = self.class_config(label).model
        return name if name in self.ldm.models else None

    def named_models(self) -> list[str]:
        """The named LDMs some target class routes to."""
        return sorted({m for c in self.class_names if (m := self.model_of(c)) is not None})

    def classes_of(self, model: str | None) -> list[str]:
        """The target classes that generate with ``model`` (None: the main LDM)."""
        return [c for c in self.class_names if self.model_of(c) == model]

    def for_model(self, model: str | None) -> "Profile":
        """This profile as seen by one named LDM: ``ldm.pretrained_path`` is that model's folder (so
        importing, conditioning and sampling code reads it like the main one); None: unchanged."""
        if model is None:
            return self
        ldm = self.ldm.model_copy(update={"pretrained_path": self.ldm.models[model], "mel_normalisation": "none",
                                          "models": {}})
        return self.model_copy(update={"ldm": ldm})

    def class_config(self, name: str) -> ClassConfig:
        for c in self.classes:
            if c.name == name:
                return c
        raise KeyError(f"unknown class {name!r}; configured: {', '.join(self.class_names)}")

    def resolve(self, path: Path) -> Path:
        """Relative paths in a profile are relative to the project root."""
        return path if path.is_absolute() else PROJECT_ROOT / path

    def artifact_dir(self, *parts: str) -> Path:
        """Where a pipeline stage keeps its versioned outputs for this profile."""
        return self.resolve(self.paths.artifacts_dir).joinpath(*parts)

    def fingerprint(self, *sections: str) -> str:
        """Stable hash of the named config sections (for cache keys and code/data versions)."""
        dumped = self.model_dump(mode="json", include=set(sections) if sections else None)
        return json_hash(dumped)[:16]


# The training precisions ``auto`` may stand in (section path -> field), and the sampling one.
_TRAINING_PRECISIONS = ("clap", "ldm.vae", "ldm.unet", "ldm.vocoder", "finetune", "trainer")
_SAMPLING_PRECISION = "generation"


def _section(data: dict, path: str):
    node = data
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _get(section, key: str, default=None):
    if isinstance(section, dict):
        return section.get(key, default)
    return getattr(section, key, default) if section is not None else default


def _set(data: dict, path: str, value: str) -> None:
    """Replace ``<path>.precision`` in the raw profile (a dict, or a config model given directly)."""
    *parents, last = path.split(".")
    node = data
    for part in parents:
        node = node[part]
    section = node[last]
    node[last] = {**section, "precision": value} if isinstance(section, dict) else \
        section.model_copy(update={"precision": value})


def resolve_auto_precision(data: dict) -> dict:
    """``precision: auto`` replaced by what this machine runs fast (foley_core.core.hardware), with
    the choices in ``precision_resolved``. A profile without ``auto`` is returned unchanged."""
    wanted = [p for p in (*_TRAINING_PRECISIONS, _SAMPLING_PRECISION) if _get(_section(data, p), "precision") == "auto"]
    if not wanted:
        return data
    # hardware imports torch: only a profile that asks for auto needs it (docs/architecture.md)
    from foley_core.core import hardware

    data = dict(data)
    if data.get("ldm") is not None:  # a dict or an LdmConfig: a shallow dict either way, the caller's left as it was
        data["ldm"] = dict(data["ldm"])
    accelerator = _get(data.get("trainer"), "accelerator", "cpu")
    device = _get(data.get("generation"), "device", "auto")
    resolved, reasons = {}, set()
    for path in wanted:
        if path == _SAMPLING_PRECISION:
            value, why = hardware.resolve_sampling_precision("auto", device)
        else:
            value, why = hardware.resolve_training_precision("auto", accelerator)
        _set(data, path, value)
        resolved[f"{path}.precision"] = value
        reasons.add(why)
    resolved["reason"] = "; ".join(sorted(reasons))
    resolved["cpu"] = hardware.describe_cpu()
    data["precision_resolved"] = resolved
    return data


def _format_errors(error: ValidationError, source: str) -> str:
    lines = [f"invalid profile {source}:"]
    for item in error.errors():
        key = ".".join(str(p) for p in item["loc"]) or "<root>"
        lines.append(f"  {key}: {item['msg']}")
    return "\n".join(lines)


def profile_path(name_or_path: str | Path) -> Path:
    candidate = Path(name_or_path)
    if candidate.suffix in {".yaml", ".yml"}:
        return candidate
    return CONFIG_DIR / f"{name_or_path}.yaml"


def load_profile(name_or_path: str | Path, overrides: dict | None = None) -> Profile:
    """Load and validate a profile by name (``configs/<name>.yaml``) or path.

    ``overrides`` is deep-merged over the file (tests use it to point paths at a tmp dir).
    """
    path = profile_path(name_or_path)
    if not path.is_file():
        available = sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))
        raise ConfigError(f"no profile {str(name_or_path)!r} (looked for {path}); available: {', '.join(available)}")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"profile {path} is not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"profile {path} must be a mapping at the top level")
    if overrides:
        raw = _deep_merge(raw, overrides)
    try:
        return Profile.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_format_errors(exc, str(path))) from None


def _deep_merge(base: dict, override: dict) -> dict:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged
