"""Training entry points: one Lightning run per network, seeded, checkpointed, resumable.

Each ``train_*`` writes the finished model to ``out_dir`` (``save_pretrained``: safetensors +
config.json) plus ``metrics.json``; Lightning checkpoints and logs go to ``work_dir``
(default: a ``training/<name>`` folder beside ``out_dir``), keyed by a fingerprint of what
the run depends on, so a killed run resumes from its last readable checkpoint (to the same
weights as an uninterrupted run: see ``foley_core.core.resume``) and a changed config starts afresh.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path
from typing import Sequence

import pandas as pd
import pytorch_lightning as pl
import torch
from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
from pytorch_lightning.callbacks import Callback, ModelCheckpoint
from pytorch_lightning.loggers import CSVLogger, WandbLogger
from transformers import SpeechT5HifiGan

from foley_core.core.audio import write_text_atomic
from foley_core.core.code_version import source_version
from foley_core.core.config import Profile
from foley_core.core.env import retrain_requested
from foley_core.core.fsutil import staged_dir
from foley_core.core.hashing import json_hash, new_digest, sha256_hex
from foley_core.core.progress import TerminalProgress
from foley_core.core.resume import RngState, resume_checkpoint
from foley_core.core.training import build_trainer, fit_on_ranks, world_size
from foley_core.ldm.components import LdmComponents, ldm_code_version
from foley_core.ldm.data import (
    Conditioning,
    InMemoryDataModule,
    LatentConditions,
    MelCrops,
    VocoderSegments,
    compute_log_mels,
    conditioning_matrix,
    event_anchors,
    load_waveforms,
    split_rows,
)  # fmt: skip
from foley_core.ldm.evaluation import reconstruction_report
from foley_core.ldm.importing import import_audioldm, imports_pretrained_as_is
from foley_core.ldm.mel import MelFrontEnd, MelNormalisation, pad_frames
from foley_core.ldm.models import (
    build_train_scheduler,
    build_unet,
    build_vae,
    build_vocoder,
    parameter_count,
    unet_downsampling,
    vae_downsampling,
)  # fmt: skip
from foley_core.ldm.modules import UnetModule, VaeModule, VocoderModule

METRICS = "metrics.json"
NORMALISATION = "mel_normalisation.json"
log = logging.getLogger(__name__)


class LossHistory(Callback):
    """Per-step training loss; kept in checkpoints so a resumed run reports the whole curve."""

    def __init__(self) -> None:
        self.losses: list[float] = []
        self.start_step: int | None = None  # stays None when resumed at max_steps: nothing to train

    def on_train_start(self, trainer, pl_module) -> None:
        self.start_step = trainer.global_step  # > 0 when resumed from a checkpoint

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        loss = outputs["loss"].detach()
        if trainer.world_size > 1:  # each rank's loss is on its share of the batch: the mean is the batch's
            loss = trainer.strategy.reduce(loss, reduce_op="mean")
        self.losses.append(float(loss))
        step = trainer.global_step
        if step % max(1, trainer.max_steps // 10) == 0:  # ~10 progress lines per run
            log.info("%s: step %d/%d, loss %.4f", type(pl_module).__name__, step, trainer.max_steps, self.losses[-1])

    def state_dict(self) -> dict:
        return {"losses": list(self.losses)}

    def load_state_dict(self, state_dict: dict) -> None:
        self.losses = list(state_dict["losses"])

    def summary(self) -> dict:
        if not self.losses:
            return {"loss_first": None, "loss_final": None}
        window = max(1, len(self.losses) // 10)  # mean of the first / last tenth: robust to noisy steps
        return {"loss_first": sum(self.losses[:window]) / window, "loss_final": sum(self.losses[-window:]) / window}


def fit(profile: Profile, name: str, module: pl.LightningModule, data: InMemoryDataModule, steps: int,
        work_dir: Path, callbacks: Sequence[Callback] = (), precision: str | None = None) -> tuple[dict, pl.Trainer | None]:  # fmt: skip
    """Run (or resume) one Lightning fit to ``steps`` optimizer steps; Trainer settings come from the profile.

    ``precision`` is the model's own setting (its config's ``precision``); None = ``trainer.precision``.
    With ``trainer.devices`` > 1 the fit runs on that many processes (``fit_on_ranks``) and this one
    continues alone with the trained module: what follows a fit is written once, here.

    Returns the run's metrics and the trainer (None when ``steps`` is 0: nothing to train)."""
    if steps == 0:  # e.g. pretrained weights used as they are
        return {"steps": 0, "resumed_from_step": 0, "seconds": 0.0, "steps_per_s": None, "loss_first": None, "loss_final": None}, None
    history = LossHistory()
    checkpoints = ModelCheckpoint(
        dirpath=work_dir / "checkpoints", every_n_train_steps=profile.trainer.checkpoint_every_n_steps,
        save_last=True, save_top_k=1,
    )  # fmt: skip
    settings = {  # build_trainer's arguments, here or pickled to each rank
        "steps": steps, "precision": precision, "work_dir": work_dir, "logger": _logger(profile, name, work_dir),
        "callbacks": [history, RngState(), checkpoints, *callbacks, TerminalProgress(name)],
        "limit_val_batches": 0, "num_sanity_val_steps": 0, "log_every_n_steps": min(25, max(1, steps)),
    }  # fmt: skip
    resume = resume_checkpoint(work_dir / "checkpoints")
    processes = world_size(profile)
    if processes > 1:
        trainer, ranks = fit_on_ranks(profile, module, data, resume=resume, last=work_dir / "checkpoints" / "last.ckpt",
                                      run_dir=work_dir / "ranks", **settings)  # fmt: skip
        start, seconds = ranks["start_step"], ranks["seconds"]
    else:
        trainer = build_trainer(profile, **settings)
        started = time.perf_counter()
        try:
            trainer.fit(module, datamodule=data, ckpt_path=str(resume) if resume else None, weights_only=True)
        finally:
            if isinstance(trainer.logger, WandbLogger):
                trainer.logger.experiment.finish()
        seconds = time.perf_counter() - started
        start = history.start_step if history.start_step is not None else trainer.global_step
    run_steps = trainer.global_step - start
    return {
        "steps": trainer.global_step, "resumed_from_step": start, "seconds": round(seconds, 2),
        "steps_per_s": round(run_steps / seconds, 3) if seconds > 0 else None, **history.summary(),
        "precision": str(trainer.precision),  # as resolved (precision: auto, foley_core.core.hardware)
        "world_size": processes,  # that trained it (the global batch is the same for any number)
    }, trainer  # fmt: skip


def _logger(profile: Profile, name: str, work_dir: Path):
    if profile.wandb.mode == "disabled":
        return CSVLogger(save_dir=work_dir, name="logs")
    return WandbLogger(project=profile.wandb.project, name=f"{profile.name}-{name}", save_dir=str(work_dir),
                       mode=profile.wandb.mode, config=profile.ldm.model_dump(mode="json"))  # fmt: skip


def _work_dir(out_dir: Path, work_dir: Path | None, name: str, fingerprint: str) -> Path:
    root = Path(work_dir) if work_dir is not None else Path(out_dir).parent / "training" / name
    return fresh_if_retraining(root / fingerprint)


def fresh_if_retraining(work_dir: Path) -> Path:
    """Under `foley run --force` a training folder starts empty: no checkpoint is resumed."""
    if retrain_requested() and work_dir.is_dir():
        shutil.rmtree(work_dir)
    return work_dir


def _fingerprint(*parts) -> str:
    return json_hash(parts, default=str)[:12]


def _finished(out_dir: Path, fingerprint: str) -> dict | None:
    if retrain_requested():
        return None
    path = Path(out_dir) / METRICS
    if path.is_file():
        metrics = json.loads(path.read_text())
        if metrics.get("fingerprint") == fingerprint:
            return metrics
    return None


def _write_metrics(out_dir: Path, metrics: dict) -> dict:
    write_text_atomic(Path(out_dir) / METRICS, json.dumps(metrics, indent=2, sort_keys=True))
    return metrics


def train_vae(profile: Profile, manifest: pd.DataFrame, out_dir: Path, *, work_dir: Path | None = None,
              init: AutoencoderKL | None = None, callbacks: Sequence[Callback] = ()) -> dict:  # fmt: skip
    """Train the AutoencoderKL on log-mel crops; also measures the mel normalisation and latent scale."""
    cfg, out_dir = profile.ldm.vae, Path(out_dir)
    train, val = split_rows(manifest, "train"), split_rows(manifest, "val")
    key = _fingerprint("vae", cfg.model_dump(), profile.audio.model_dump(), profile.ldm.mel_normalisation,
                       profile.seed, sorted(train["content_hash"]), source_version(train_vae))  # fmt: skip
    if (done := _finished(out_dir, key)) is not None:
        return done
    pl.seed_everything(profile.seed, workers=True)
    front_end = MelFrontEnd(profile.audio)
    log_mels = compute_log_mels(load_waveforms(train, profile.audio), front_end)
    norm = MelNormalisation.measure(log_mels) if profile.ldm.mel_normalisation == "global" else MelNormalisation()
    vae = init if init is not None else build_vae(cfg)
    multiple = vae_downsampling(vae)
    crop = cfg.crop_frames - cfg.crop_frames % multiple
    log_mels = pad_frames(log_mels, multiple)
    images = norm.normalise(log_mels)
    data = InMemoryDataModule(MelCrops(images, crop, event_anchors(log_mels, log_mels.shape[-2])), cfg.batch_size,
                              profile.trainer.num_workers, profile.seed)
    module = VaeModule(vae, cfg)
    run, _ = fit(profile, "vae", module, data, cfg.steps, _work_dir(out_dir, work_dir, "vae", key), callbacks,
                 cfg.precision)
    vae = module.vae.cpu().eval()
    scale = _latent_scale(vae, images) if init is None else vae.config.scaling_factor
    vae.register_to_config(scaling_factor=scale)
    val_images = norm.normalise(pad_frames(compute_log_mels(load_waveforms(val, profile.audio), front_end), multiple))
    with torch.no_grad():
        val_l1 = float((vae.decode(vae.encode(val_images).latent_dist.mode()).sample - val_images).abs().mean())
    with staged_dir(out_dir) as staging:  # a kill leaves the old model folder or the new one, whole
        vae.save_pretrained(staging, safe_serialization=True)
        write_text_atomic(staging / NORMALISATION, json.dumps(norm.to_dict()))
        metrics = _write_metrics(staging, {
            **run, "fingerprint": key, "parameters": parameter_count(vae), "latent_scale": scale,
            "mel_normalisation": norm.to_dict(), "val_l1_normalised": val_l1, "val_mel_l1": val_l1 * norm.std,
        })  # fmt: skip
    return metrics


@torch.no_grad()
def _latent_scale(vae: AutoencoderKL, images: torch.Tensor, batch: int = 64) -> float:
    """1 / std of sampled latents, so diffusion sees unit-variance latents (Stable Diffusion's rule).

    The draws are ``latent_dist.sample()``'s, batch by batch; the posteriors are kept for ``train_unet``."""
    means, stds = _posteriors(vae, images, batch)
    latents = torch.cat([means[i : i + batch] + stds[i : i + batch] * torch.randn(means[i : i + batch].shape)
                         for i in range(0, len(images), batch)])  # fmt: skip
    return float(1.0 / latents.std().clamp_min(1e-6))


# The VAE posteriors of the last images encoded, keyed by the VAE's weights and the images: train_vae
# encodes every training clip for the latent scale and train_unet needs the same encoding right after
# (the VAE is frozen from then on), so one pass of the encoder serves both (~15 s of the cpu profile).
_last_posteriors: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}


def tensor_digest(*tensors: torch.Tensor, extra: str = "") -> str:
    """A content hash of tensors (shapes and values) and ``extra``: the key of the one-entry memos that
    let consecutive stages reuse an expensive result instead of computing it again."""
    digest = new_digest(extra)
    for tensor in tensors:
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


@torch.no_grad()
def _posteriors(vae: AutoencoderKL, images: torch.Tensor, batch: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """Unscaled posterior means and standard deviations of ``images``, encoded once per VAE and images."""
    state = vae.state_dict()
    key = tensor_digest(*(state[name] for name in sorted(state)), images, extra=" ".join(sorted(state)))
    if key not in _last_posteriors:
        means, stds = [], []
        for i in range(0, len(images), batch):
            posterior = vae.encode(images[i : i + batch]).latent_dist
            means.append(posterior.mean)
            stds.append(posterior.std)
        _last_posteriors.clear()
        _last_posteriors[key] = torch.cat(means), torch.cat(stds)
    return _last_posteriors[key]


def load_vae(vae_dir: Path) -> tuple[AutoencoderKL, MelNormalisation]:
    vae = AutoencoderKL.from_pretrained(vae_dir, use_safetensors=True, low_cpu_mem_usage=False).eval()
    norm_file = Path(vae_dir) / NORMALISATION
    norm = MelNormalisation(**json.loads(norm_file.read_text())) if norm_file.is_file() else MelNormalisation()
    return vae, norm


def train_vocoder(profile: Profile, manifest: pd.DataFrame, out_dir: Path, *, work_dir: Path | None = None,
                  init: SpeechT5HifiGan | None = None, callbacks: Sequence[Callback] = ()) -> dict:  # fmt: skip
    """Train the SpeechT5HifiGan generator on aligned (log-mel, waveform) segments."""
    cfg, out_dir = profile.ldm.vocoder, Path(out_dir)
    if cfg.kind == "griffinlim":
        raise ValueError("ldm.vocoder.kind is 'griffinlim': there is no vocoder to train")
    train = split_rows(manifest, "train")
    key = _fingerprint("vocoder", cfg.model_dump(), profile.audio.model_dump(), profile.seed,
                       sorted(train["content_hash"]), source_version(train_vocoder))  # fmt: skip
    if (done := _finished(out_dir, key)) is not None:
        return done
    pl.seed_everything(profile.seed, workers=True)
    front_end = MelFrontEnd(profile.audio)
    waves = load_waveforms(train, profile.audio)
    segments = VocoderSegments(compute_log_mels(waves, front_end), waves, cfg.segment_frames, profile.audio.hop_length)
    data = InMemoryDataModule(segments, cfg.batch_size, profile.trainer.num_workers, profile.seed)
    module = VocoderModule(init if init is not None else build_vocoder(cfg, profile.audio), front_end, cfg)
    run, _ = fit(profile, "vocoder", module, data, cfg.steps, _work_dir(out_dir, work_dir, "vocoder", key), callbacks,
                 cfg.precision)
    vocoder = module.vocoder.cpu().eval()
    with staged_dir(out_dir) as staging:
        vocoder.save_pretrained(staging, safe_serialization=True)
        run = _write_metrics(staging, {**run, "fingerprint": key, "parameters": parameter_count(vocoder)})
    return run


def train_unet(profile: Profile, manifest: pd.DataFrame, conditioning: Conditioning, vae_dir: Path, out_dir: Path, *,
               work_dir: Path | None = None, init: UNet2DConditionModel | None = None,
               scheduler: DDPMScheduler | None = None, callbacks: Sequence[Callback] = ()) -> dict:  # fmt: skip
    """Train the conditional UNet on VAE latents of every training clip, conditioned on its
    ``conditioning`` vector (the CLAP *audio* embedding, keyed by content_hash). Saves EMA weights."""
    cfg, out_dir = profile.ldm.unet, Path(out_dir)
    train = split_rows(manifest, "train")
    hashes = list(train["content_hash"])
    conditions = conditioning_matrix(conditioning, hashes)
    vae, norm = load_vae(vae_dir)
    key = _fingerprint("unet", cfg.model_dump(), profile.audio.model_dump(), profile.seed, sorted(hashes),
                       sha256_hex(conditions.numpy().tobytes()), _file_digest(Path(vae_dir)),
                       source_version(train_unet))  # fmt: skip
    if (done := _finished(out_dir, key)) is not None:
        return done
    pl.seed_everything(profile.seed, workers=True)
    unet = init if init is not None else build_unet(cfg, vae.config.latent_channels, conditions.shape[1])
    if unet.config.projection_class_embeddings_input_dim != conditions.shape[1]:
        raise ValueError(f"conditioning dim {conditions.shape[1]} != UNet's {unet.config.projection_class_embeddings_input_dim}")
    multiple = vae_downsampling(vae) * unet_downsampling(unet)
    log_mels = pad_frames(compute_log_mels(load_waveforms(train, profile.audio), MelFrontEnd(profile.audio)), multiple)
    means, stds = _encode_posteriors(vae, norm.normalise(log_mels), vae.config.scaling_factor)
    if cfg.crop_frames % unet_downsampling(unet):
        raise ValueError(f"ldm.unet.crop_frames={cfg.crop_frames} must be a multiple of the UNet's time "
                         f"downsampling ({unet_downsampling(unet)})")
    crops = LatentConditions(means, stds, conditions, cfg.crop_frames, event_anchors(log_mels, means.shape[-2]))
    data = InMemoryDataModule(crops, cfg.batch_size, profile.trainer.num_workers, profile.seed)
    scheduler = scheduler if scheduler is not None else build_train_scheduler(cfg)
    module = UnetModule(unet, scheduler, cfg)
    run, _ = fit(profile, "unet", module, data, cfg.steps, _work_dir(out_dir, work_dir, "unet", key), callbacks,
                 cfg.precision)
    with staged_dir(out_dir) as staging:
        module.ema_unet().save_pretrained(staging, safe_serialization=True)
        scheduler.save_pretrained(staging / "scheduler")
        run = _write_metrics(staging, {**run, "fingerprint": key, "parameters": parameter_count(unet),
                                       "latent_shape": list(means.shape[1:])})  # fmt: skip
    return run


def _encode_posteriors(vae: AutoencoderKL, images: torch.Tensor, scale: float, batch: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    means, stds = _posteriors(vae, images, batch)
    return means * scale, stds * scale


def _file_digest(folder: Path) -> str:
    digest = new_digest()
    for path in sorted(folder.glob("*.safetensors")):
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def train_ldm(profile: Profile, manifest: pd.DataFrame, conditioning: Conditioning, out_dir: Path, *,
              report_clips: int = 8) -> dict:  # fmt: skip
    """All three models into ``out_dir/{vae,vocoder,unet,scheduler}`` + ``ldm_config.json``; each resumes on its own.

    With ``ldm.pretrained_path`` the AudioLDM components are the starting point. When no network
    trains (every ``steps: 0``) this is ``import_audioldm`` (foley_core/ldm/importing.py): the folder
    is validated and installed as it is, and ``manifest`` / ``conditioning`` are not touched."""
    out_dir = Path(out_dir)
    if imports_pretrained_as_is(profile):
        return import_audioldm(profile, out_dir)
    work = out_dir / "training"
    initial = _pretrained(profile)
    metrics = {"vae": train_vae(profile, manifest, out_dir / "vae", work_dir=work / "vae", init=initial and initial.vae)}
    use_vocoder = profile.ldm.vocoder.kind == "hifigan"
    if use_vocoder:
        metrics["vocoder"] = train_vocoder(profile, manifest, out_dir / "vocoder", work_dir=work / "vocoder",
                                           init=initial and initial.vocoder)  # fmt: skip
    metrics["unet"] = train_unet(profile, manifest, conditioning, out_dir / "vae", out_dir / "unet",
                                 work_dir=work / "unet", init=initial and initial.unet,
                                 scheduler=initial and DDPMScheduler.from_config(initial.scheduler_config))  # fmt: skip
    vae, norm = load_vae(out_dir / "vae")
    components = LdmComponents(
        vae=vae, unet=UNet2DConditionModel.from_pretrained(out_dir / "unet", use_safetensors=True, low_cpu_mem_usage=False),
        vocoder=_load_vocoder(out_dir / "vocoder") if use_vocoder else None,
        scheduler_config=dict(initial.scheduler_config if initial else DDPMScheduler.load_config(out_dir / "unet" / "scheduler")),
        audio=profile.audio, normalisation=norm, griffinlim_iters=profile.ldm.vocoder.griffinlim_iters,
    )  # fmt: skip
    components.save(out_dir, weights=False)
    metrics["reconstruction"] = reconstruction_report(components, split_rows(manifest, "val"), report_clips)
    metrics["parameters"] = components.parameter_counts()
    metrics["code_version"] = ldm_code_version()
    return _write_metrics(out_dir, metrics)


def _load_vocoder(folder: Path) -> SpeechT5HifiGan:
    return SpeechT5HifiGan.from_pretrained(folder, use_safetensors=True, low_cpu_mem_usage=False).eval()


def _pretrained(profile: Profile) -> LdmComponents | None:
    if profile.ldm.pretrained_path is None:
        return None
    path = profile.resolve(profile.ldm.pretrained_path)
    return LdmComponents.from_audioldm(path if path.exists() else profile.ldm.pretrained_path, audio=profile.audio)
