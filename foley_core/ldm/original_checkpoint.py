"""Original-format AudioLDM checkpoints (the DCASE 2023 Task 7 winners' release) as diffusers folders.

The winners (Yuan et al., code ``yyua8222/Dcase2023_task7``) released their two models as
latent-diffusion checkpoints, not diffusers folders: one torch-saved ``{"state_dict": ...}`` each,
plus a YAML config (their ``configs/big.yaml`` / ``small.yaml``). The state dict holds::

    model.diffusion_model.*     the UNet (openaimodel), FiLM-conditioned on the CLAP text vector (film_emb)
    first_stage_model.*         the mel VAE; first_stage_model.vocoder.* its HiFi-GAN
    cond_stage_model.model.*    the whole LAION CLAP: text_branch (RoBERTa) + text_projection, audio_branch (HTSAT)
    embed_v.weight              (big model) 100 stored MovingMotorVehicle targets: [CLAP audio embedding, score floor]

``prepare_model(path, profile)`` is what ``foley generate --model PATH`` runs: when PATH is such a
checkpoint (a ``.ckpt`` / ``.pt`` / ``.pth`` file with its ``<stem>.yaml`` or the one YAML beside
it, or a folder holding one checkpoint and its YAML) it is converted **once** into
``artifacts/<profile>/converted/<content hash>/``, a diffusers AudioLDM folder
(``unet/ vae/ vocoder/ text_encoder/ tokenizer/ scheduler/ model_index.json``, safetensors + JSON)
that the rest of the project loads like ``cvssp/audioldm-s-full-v2``, plus:

- ``targets.safetensors``: the stored targets (``embeddings`` (n, d), ``floors`` (n,)), when the
  checkpoint has ``embed_v``;
- ``clap/clap.pt``: the checkpoint's own CLAP in the LAION checkpoint layout. The stored targets are
  embeddings of *this* CLAP's audio tower, and the winners scored every candidate with it, so a
  pipeline made from the folder scores with it (``profile_for``) instead of the profile's CLAP;
- ``conversion.json``: the source, its content hash, what was converted and from where.

The key mapping follows diffusers' ``scripts/convert_original_audioldm_to_diffusers.py`` (a script
in the diffusers repository, not in the installed package). The generic UNet and VAE renaming is
diffusers' own, from the installed package (``diffusers.loaders.single_file_utils``); the
AudioLDM-specific parts are here: the FiLM projection (``film_emb`` -> ``class_embedding``), the
CLAP text encoder, the HiFi-GAN (``ups`` -> ``upsampler``) and the configs. Where this differs
from the script, on purpose:

- **attention heads**: the original UNet has ``channels / num_head_channels`` heads per level
  (32-wide heads); the script leaves diffusers' default (8 heads everywhere), which changes the
  computation, not the weights. Diffusers' ``attention_head_dim`` is the head *count*.
- **VAE scaling**: the checkpoint's ``scale_factor`` (``scale_by_std``), else the YAML's, else 1.0
  (the latent-diffusion default); the script falls back to Stable Diffusion's 0.18215.
- **text encoder**: its config is read off the checkpoint's tensors (RoBERTa's 64-wide heads and
  layer-norm epsilon 1e-5, as laion's ``roberta-base`` text branch); the script downloads
  ``laion/clap-htsat-unfused``'s config and tokenizer. The RoBERTa tokenizer (roberta-base's
  vocab.json + merges.txt) is taken from a local folder: ``tokenizer/`` beside the checkpoint,
  else ``clap.tokenizer_path``, else the profile's AudioLDM folder's ``tokenizer/``; it pads to
  512 tokens as the winners' CLAP does.
- **vocoder**: the YAML's ``vocoder_config`` when it has one (the script's assumption); the
  winners' YAMLs have none (their code picks a HiFi-GAN by the number of mel bins), so their two
  configs are known here by the mel bins read off the weights (``WINNERS_VOCODERS``).
- **UNet weights**: the non-EMA ``model.diffusion_model.*``, as the script by default and as the
  winners sampled (their ``generate_sample`` does not enter ``ema_scope``).

The checkpoint is read with ``torch.load(weights_only=True)`` (plus numpy's numeric scalars, as
the LAION checkpoints need): a file holding any other object is refused before any of it runs.
"""

from __future__ import annotations

import json
import logging
import pickle
import re
import zipfile
from pathlib import Path
from typing import NamedTuple

import diffusers
import numpy as np
import torch
import yaml
from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint, convert_ldm_vae_checkpoint
from safetensors.numpy import load_file
from safetensors.torch import save_file
from transformers import (
    ClapTextConfig,
    ClapTextModelWithProjection,
    RobertaTokenizer,
    SpeechT5HifiGan,
    SpeechT5HifiGanConfig,
)

from foley_core.clap.laion import _numpy_scalars_allowed
from foley_core.clap.towers import check_vocabulary
from foley_core.core.fsutil import staged_dir, write_text_atomic
from foley_core.core.hashing import file_hash, sha256_hex
from foley_core.core.layout import layout

FORMAT = "foley-original-audioldm/1"  # part of the cache key: a changed conversion converts again
CHECKPOINT_SUFFIXES = (".ckpt", ".pt", ".pth")
CONFIG_SUFFIXES = (".yaml", ".yml")
MANIFEST = "conversion.json"  # written last: a folder holding it is complete
TARGETS = "targets.safetensors"
OWN_CLAP = "clap/clap.pt"
TARGET_CLASS = "MovingMotorVehicle"  # the class the winners' stored targets are clips of
TOKENIZER_MAX_LENGTH = 512  # the winners' CLAP tokenizes to 512 tokens (diffusers' AudioLDM tokenizer too)

UNET, VAE, VOCODER, CLAP = "model.diffusion_model.", "first_stage_model.", "first_stage_model.vocoder.", "cond_stage_model.model."
# the winners' two HiFi-GANs (their src/hifigan/config_16k_64.json and LJ_V1/config.json), by mel bins
WINNERS_VOCODERS = {
    64: {"sampling_rate": 16000, "upsample_rates": [5, 4, 2, 2, 2], "upsample_kernel_sizes": [16, 16, 8, 4, 4],
         "upsample_initial_channel": 1024},
    80: {"sampling_rate": 22050, "upsample_rates": [8, 8, 2, 2], "upsample_kernel_sizes": [16, 16, 4, 4],
         "upsample_initial_channel": 512},
}  # fmt: skip
HIFIGAN_RESBLOCKS = {"resblock_kernel_sizes": [3, 7, 11], "resblock_dilation_sizes": [[1, 3, 5]] * 3}
HTSAT_TOWERS = {96: "HTSAT-tiny", 128: "HTSAT-base"}  # laion audio tower by its patch-embedding width

log = logging.getLogger(__name__)


class OriginalCheckpointError(ValueError):
    """The checkpoint or its config cannot be converted; the message (one line) names the file."""


class OriginalCheckpoint(NamedTuple):
    checkpoint: Path
    config: Path


# ---------------------------------------------------------------- recognising one
def find_original_checkpoint(path: Path) -> OriginalCheckpoint | None:
    """``(checkpoint, config)`` when ``path`` is an original-format checkpoint file, or a folder holding
    one checkpoint (and no ``unet/``); None for anything else (a diffusers or pipeline folder)."""
    path = Path(path)
    if path.is_file():
        if path.suffix not in CHECKPOINT_SUFFIXES:
            return None
        checkpoint = path
    elif path.is_dir() and not (path / "unet").is_dir():
        found = sorted(p for p in path.iterdir() if p.suffix in CHECKPOINT_SUFFIXES and p.is_file())
        if not found:
            return None
        if len(found) > 1:
            raise OriginalCheckpointError(f"{path} holds several checkpoints ({', '.join(p.name for p in found)}): "
                                          "pass the one to use as --model")  # fmt: skip
        checkpoint = found[0]
    else:
        return None
    same_stem = [checkpoint.with_suffix(s) for s in CONFIG_SUFFIXES if checkpoint.with_suffix(s).is_file()]
    beside = sorted(p for p in checkpoint.parent.iterdir() if p.suffix in CONFIG_SUFFIXES and p.is_file())
    configs = same_stem or beside
    if len(configs) != 1:
        problem = "has no YAML config beside it" if not configs else "has several YAML files beside it"
        raise OriginalCheckpointError(f"{checkpoint} {problem}: an original-format checkpoint needs its YAML config "
                                      f"(e.g. the winners' configs/big.yaml), saved as {checkpoint.with_suffix('.yaml')}")
    return OriginalCheckpoint(checkpoint, configs[0])


def prepare_model(path: Path, profile):
    """``(model folder, profile to load it with)`` for ``foley generate --model PATH``: an original-format
    checkpoint is converted (once) and its own CLAP scores; any other path is returned as it is."""
    found = find_original_checkpoint(path)
    if found is None:
        return path, profile
    folder = convert_original_checkpoint(*found, layout(profile).converted, tokenizer_dirs=_tokenizer_dirs(found, profile))
    return folder, profile_for(folder, profile)


def _tokenizer_dirs(found: OriginalCheckpoint, profile) -> list[Path]:
    dirs = [found.checkpoint.parent / "tokenizer"]
    if profile.clap.tokenizer_path is not None:
        dirs.append(profile.resolve(Path(profile.clap.tokenizer_path)))
    if profile.ldm.pretrained_path is not None:  # an AudioLDM folder's tokenizer: the same RoBERTa vocabulary
        dirs.append(profile.resolve(Path(profile.ldm.pretrained_path)) / "tokenizer")
    return dirs


def profile_for(folder: Path, profile):
    """The profile whose CLAP is the converted checkpoint's own (LAION layout, ``clap/clap.pt``), so it
    scores candidates and compares them with the stored targets; unchanged when the checkpoint had none."""
    tower = json.loads((Path(folder) / MANIFEST).read_text()).get("clap_audio_tower")
    if tower is None:
        return profile
    clap = profile.clap.model_copy(update={"source": "laion", "checkpoint": Path(folder) / OWN_CLAP,
                                           "tokenizer_path": Path(folder) / "tokenizer", "audio_tower": tower,
                                           "download": False, "trust_checkpoint": False})  # fmt: skip
    return profile.model_copy(update={"clap": clap})


def stored_targets(folder: Path, class_name: str) -> np.ndarray | None:
    """The stored target embeddings ``(n, d)`` for ``class_name``, or None: no targets, another class,
    or no own CLAP (the targets live in that CLAP's embedding space, no other CLAP can score them)."""
    folder = Path(folder)
    manifest = folder / MANIFEST
    if not manifest.is_file() or not (folder / TARGETS).is_file() or class_name != TARGET_CLASS:
        return None
    if json.loads(manifest.read_text()).get("clap_audio_tower") is None:
        return None
    return load_file(str(folder / TARGETS))["embeddings"]


# ---------------------------------------------------------------- the cache
def convert_original_checkpoint(checkpoint: Path, config: Path, out_root: Path, tokenizer_dirs: list[Path]) -> Path:
    """The diffusers folder of ``checkpoint`` + ``config`` in ``out_root/<content hash>/``, converting
    only when no complete one is there. The same files again (path, size, mtime) are found without
    re-hashing a multi-GB checkpoint; a copy or a touched file is found by its content hash."""
    checkpoint, config, out_root = Path(checkpoint), Path(config), Path(out_root)
    stamp = _stamp(checkpoint, config)
    for manifest in sorted(out_root.glob(f"*/{MANIFEST}")) if out_root.is_dir() else []:
        if json.loads(manifest.read_text()).get("stamp") == stamp:
            return manifest.parent
    content = sha256_hex(f"{FORMAT}|{file_hash(checkpoint)}|{file_hash(config)}")
    final = out_root / content[:16]
    if not (final / MANIFEST).is_file():
        try:
            with staged_dir(final, replace=False) as staging:  # a kill leaves no folder or a whole one
                record = _convert(checkpoint, config, staging, tokenizer_dirs)
                record |= {"format": FORMAT, "content_hash": content, "checkpoint": str(checkpoint),
                           "config": str(config), "stamp": stamp}  # fmt: skip
                write_text_atomic(staging / MANIFEST, json.dumps(record, indent=2, sort_keys=True))
        except FileExistsError:  # another process converted it meanwhile
            if not (final / MANIFEST).is_file():
                raise OriginalCheckpointError(f"{final} exists but holds no {MANIFEST}: delete it to convert again") from None
        log.info("converted %s to %s", checkpoint, final)
        return final
    record = json.loads((final / MANIFEST).read_text())
    write_text_atomic(final / MANIFEST, json.dumps(record | {"stamp": stamp}, indent=2, sort_keys=True))
    return final


def _stamp(checkpoint: Path, config: Path) -> list:
    return [FORMAT, *([str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns] for p in (checkpoint, config))]


# ---------------------------------------------------------------- reading
def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def read_state(checkpoint: Path) -> dict[str, torch.Tensor]:
    """The tensors of the checkpoint's ``state_dict`` (weights_only; memory-mapped when the file allows)."""
    try:
        with _numpy_scalars_allowed():
            loaded = torch.load(checkpoint, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(checkpoint))
    except pickle.UnpicklingError as exc:  # torch's message: a generic header, then what it refused
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        detail = next((line for line in lines if line.startswith(("Trying to load", "Unsupported"))), lines[-1] if lines else "")
        raise OriginalCheckpointError(f"{checkpoint} cannot be read as tensors and plain values only (torch.load "
                                      f"weights_only=True refused it: {detail}); nothing in it was run") from None
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        raise OriginalCheckpointError(f"{checkpoint} is not a readable torch checkpoint ({_first_line(exc)})") from None
    state = loaded.get("state_dict", loaded) if isinstance(loaded, dict) else None
    if not isinstance(state, dict):
        raise OriginalCheckpointError(f"{checkpoint} holds no state_dict")
    return {key: value for key, value in state.items() if isinstance(value, torch.Tensor)}


def read_config(config: Path) -> dict:
    """``model.params`` of the original YAML."""
    try:
        params = (yaml.safe_load(config.read_text()) or {})["model"]["params"]
        for section in ("unet_config", "first_stage_config"):
            params[section]["params"]  # noqa: B018 - present, or the KeyError below names it
    except (yaml.YAMLError, KeyError, TypeError) as exc:
        raise OriginalCheckpointError(f"{config} is not a latent-diffusion model config (no model.params with "
                                      f"unet_config and first_stage_config: {_first_line(exc)})") from None
    return params


def _require_parts(state: dict, checkpoint: Path) -> None:
    parts = {UNET: "the UNet", VAE + "decoder.": "the VAE", VOCODER: "the vocoder",
             CLAP + "text_branch.": "the CLAP text encoder"}  # fmt: skip
    missing = [f"{prefix}* ({what})" for prefix, what in parts.items() if not any(k.startswith(prefix) for k in state)]
    if missing:
        raise OriginalCheckpointError(f"{checkpoint} is not an original AudioLDM checkpoint: no {', no '.join(missing)}")


# ---------------------------------------------------------------- configs
def unet_config(params: dict) -> dict:
    """diffusers ``UNet2DConditionModel`` config of the original ``unet_config`` (openaimodel)."""
    unet = params["unet_config"]["params"]
    channels = [unet["model_channels"] * mult for mult in unet["channel_mult"]]
    attends = set(unet.get("attention_resolutions", []))
    down, resolution = [], 1
    for level in range(len(channels)):
        down.append("CrossAttnDownBlock2D" if resolution in attends else "DownBlock2D")
        resolution *= 2 if level < len(channels) - 1 else 1
    up = []
    for _ in channels:
        up.append("CrossAttnUpBlock2D" if resolution in attends else "UpBlock2D")
        resolution //= 2
    head_channels = unet.get("num_head_channels", -1)
    heads = [c // head_channels if head_channels != -1 else unet["num_heads"] for c in channels]
    film = unet.get("extra_film_condition_dim")
    return {
        "sample_size": params.get("latent_t_size", 64), "in_channels": unet["in_channels"],
        "out_channels": unet["out_channels"], "down_block_types": tuple(down), "up_block_types": tuple(up),
        "block_out_channels": tuple(channels), "layers_per_block": unet["num_res_blocks"],
        # film conditioning: attn2 is self-attention, so each level "cross-attends" at its own width
        "cross_attention_dim": unet.get("cross_attention_dim", tuple(channels)),
        "attention_head_dim": tuple(heads), "transformer_layers_per_block": unet.get("transformer_depth", 1),
        "class_embed_type": "simple_projection" if film else None, "projection_class_embeddings_input_dim": film,
        "class_embeddings_concat": bool(unet.get("extra_film_use_concat", False)),
    }  # fmt: skip


def vae_config(params: dict, state: dict) -> dict:
    """diffusers ``AutoencoderKL`` config of the original ``first_stage_config`` (ddconfig)."""
    dd = params["first_stage_config"]["params"]["ddconfig"]
    channels = [dd["ch"] * mult for mult in dd["ch_mult"]]
    if "scale_factor" in state:  # scale_by_std: the factor measured on the training data
        scale = float(state["scale_factor"])
    else:
        scale = float(params.get("scale_factor", 1.0))  # latent-diffusion's default, not Stable Diffusion's 0.18215
    return {
        "sample_size": dd.get("resolution", 256), "in_channels": dd["in_channels"], "out_channels": dd["out_ch"],
        "down_block_types": ("DownEncoderBlock2D",) * len(channels), "up_block_types": ("UpDecoderBlock2D",) * len(channels),
        "block_out_channels": tuple(channels), "latent_channels": dd["z_channels"],
        "layers_per_block": dd["num_res_blocks"], "scaling_factor": scale,
    }  # fmt: skip


def vocoder_config(params: dict, n_mels: int) -> dict:
    """transformers ``SpeechT5HifiGanConfig`` kwargs: the YAML's ``vocoder_config``, else the winners' HiFi-GAN
    for ``n_mels`` (read off the vocoder's first convolution)."""
    if "vocoder_config" in params:
        voc = params["vocoder_config"]["params"]
        chosen = {k: voc[k] for k in ("sampling_rate", "upsample_rates", "upsample_kernel_sizes", "upsample_initial_channel",
                                      "resblock_kernel_sizes", "resblock_dilation_sizes")}  # fmt: skip
        n_mels = voc.get("num_mels", n_mels)
    elif n_mels in WINNERS_VOCODERS:
        chosen = WINNERS_VOCODERS[n_mels] | HIFIGAN_RESBLOCKS
    else:
        raise OriginalCheckpointError(f"no vocoder_config in the YAML and no known HiFi-GAN for {n_mels} mel bins "
                                      f"(known: {', '.join(map(str, WINNERS_VOCODERS))}); add model.params.vocoder_config")
    return {**chosen, "model_in_dim": n_mels, "normalize_before": False}


def scheduler_config(params: dict) -> dict:
    """DDIM on the original's scaled-linear schedule, as the script builds it (AudioLDM's released scheduler)."""
    return {"num_train_timesteps": params.get("timesteps", 1000), "beta_start": params["linear_start"],
            "beta_end": params["linear_end"], "beta_schedule": "scaled_linear", "steps_offset": 1, "clip_sample": False,
            "set_alpha_to_one": False,
            "prediction_type": "v_prediction" if params.get("parameterization") == "v" else "epsilon"}  # fmt: skip


def text_config(clap: dict):
    """``ClapTextConfig`` of the checkpoint's laion text branch, read off its tensors."""
    words = clap["text_branch.embeddings.word_embeddings.weight"]
    layers = {int(k.split(".")[3]) for k in clap if k.startswith("text_branch.encoder.layer.")}
    return ClapTextConfig(
        vocab_size=words.shape[0], hidden_size=words.shape[1], num_hidden_layers=len(layers),
        num_attention_heads=max(1, words.shape[1] // 64),  # roberta-base: 768 / 12
        intermediate_size=clap["text_branch.encoder.layer.0.intermediate.dense.weight"].shape[0],
        max_position_embeddings=clap["text_branch.embeddings.position_embeddings.weight"].shape[0],
        type_vocab_size=clap["text_branch.embeddings.token_type_embeddings.weight"].shape[0],
        projection_dim=clap["text_projection.2.weight"].shape[0], projection_hidden_act="relu",
        layer_norm_eps=1e-5, pad_token_id=1, bos_token_id=0, eos_token_id=2,
    )  # fmt: skip


# ---------------------------------------------------------------- weights
def _unet_weights(state: dict, config: dict) -> dict:
    weights = convert_ldm_unet_checkpoint(state, config)  # the non-EMA model.diffusion_model.* (see the notes)
    if config["class_embed_type"] == "simple_projection":  # AudioLDM's FiLM projection of the CLAP vector
        for param in ("weight", "bias"):
            if f"{UNET}film_emb.{param}" in state:
                weights[f"class_embedding.{param}"] = state[f"{UNET}film_emb.{param}"]
    return weights


def _vae_weights(state: dict, config: dict) -> dict:
    # the renaming only maps the encoder, decoder and quant convs: the vocoder and any loss nets under
    # first_stage_model. are left out
    return convert_ldm_vae_checkpoint(state, config)


def _vocoder_weights(state: dict, config: dict) -> dict:
    weights = {k[len(VOCODER):]: v for k, v in state.items() if k.startswith(VOCODER)}
    weights = {re.sub(r"^ups\.", "upsampler.", k): v for k, v in weights.items()}  # transformers' name
    # normalize_before is off: SpeechT5HifiGan's mean/scale buffers go unused, at their initial values
    weights["mean"], weights["scale"] = torch.zeros(config["model_in_dim"]), torch.ones(config["model_in_dim"])
    return weights


def _text_weights(clap: dict) -> dict:
    """laion ``text_branch`` / ``text_projection.{0,2}`` -> transformers ``text_model`` / ``text_projection.linear{1,2}``
    (diffusers' CLAP_KEYS_TO_MODIFY_MAPPING, the text part; ``text_transform`` only served the training loss)."""
    weights = {}
    for key, value in clap.items():
        if key.endswith(("position_ids", "token_type_ids")):  # buffers transformers computes itself
            continue
        if key.startswith("text_branch."):
            weights["text_model." + key[len("text_branch."):]] = value
        elif m := re.fullmatch(r"text_projection\.([02])\.(weight|bias)", key):
            weights[f"text_projection.linear{1 + int(m[1]) // 2}.{m[2]}"] = value
    return weights


def _modules(keys) -> str:
    """A short list of the modules some weight names belong to (for one-line messages)."""
    modules = sorted({".".join(k.split(".")[:4]) for k in keys})
    return ", ".join(modules[:6]) + (f" and {len(modules) - 6} more" if len(modules) > 6 else "")


def _unused(state: dict, prefixes: tuple[str, ...], weights: dict) -> list[str]:
    """The checkpoint's weights under ``prefixes`` that the renaming left out (diffusers' generic renaming
    skips names it does not know), found by storage: renamed tensors are the same tensors (or views)."""
    used = {v.untyped_storage().data_ptr() for v in weights.values()}
    return sorted(k for k, v in state.items() if k.startswith(prefixes) and v.numel()
                  and v.untyped_storage().data_ptr() not in used)  # fmt: skip


def _load(model: torch.nn.Module, weights: dict, what: str, checkpoint: Path, config: Path,
          ignore: tuple[str, ...] = (), unused: list[str] = ()) -> torch.nn.Module:
    """Load ``weights`` into ``model``: every parameter must come from the checkpoint, nothing may be left over."""
    try:
        missing, unexpected = model.load_state_dict(weights, strict=False)
    except RuntimeError as exc:  # a size mismatch: the YAML does not describe these weights
        shapes = "; ".join(line.strip() for line in str(exc).splitlines()[1:3])
        raise OriginalCheckpointError(f"{checkpoint}: its {what} does not fit {config.name}: {shapes}") from None
    missing = [k for k in missing if not k.endswith(ignore)] if ignore else missing
    unexpected = [*unexpected, *unused]  # names the renaming did not know are unexpected too
    if missing or unexpected:
        found = [f"{len(missing)} weights missing in {_modules(missing)}"] if missing else []
        found += [f"{len(unexpected)} unexpected in {_modules(unexpected)}"] if unexpected else []
        raise OriginalCheckpointError(f"{checkpoint}: its {what} does not match {config.name}: {'; '.join(found)}")
    return model.eval()


def _tokenizer(dirs: list[Path], text, checkpoint: Path):
    folder = next((d for d in dirs if (d / "vocab.json").is_file() and (d / "merges.txt").is_file()), None)
    if folder is None:
        raise OriginalCheckpointError(f"{checkpoint}: its CLAP text encoder needs a RoBERTa tokenizer and none was found "
                                      f"(looked in {', '.join(map(str, dirs))}): put roberta-base's vocab.json + merges.txt "
                                      f"in {dirs[0]}")  # fmt: skip
    length = min(TOKENIZER_MAX_LENGTH, text.max_position_embeddings - 2)  # RoBERTa's positions start after padding
    tokenizer = RobertaTokenizer.from_pretrained(str(folder), local_files_only=True, model_max_length=length)
    try:
        check_vocabulary(tokenizer, str(folder), expected=text.vocab_size)
    except RuntimeError as exc:
        raise OriginalCheckpointError(f"{checkpoint}: {_first_line(exc)}") from None
    return tokenizer, folder


def _convert(checkpoint: Path, config: Path, out: Path, tokenizer_dirs: list[Path]) -> dict:
    """Write the diffusers AudioLDM folder of the checkpoint into ``out``; returns what ``conversion.json`` records."""
    params = read_config(config)
    state = read_state(checkpoint)
    _require_parts(state, checkpoint)
    if f"{VOCODER}conv_pre.weight" not in state:
        raise OriginalCheckpointError(f"{checkpoint}: its vocoder has no conv_pre.weight (the mel input)")
    clap = {k[len(CLAP):]: v for k, v in state.items() if k.startswith(CLAP)}
    try:
        configs = {"unet": unet_config(params), "vae": vae_config(params, state),
                   "vocoder": vocoder_config(params, int(state[f"{VOCODER}conv_pre.weight"].shape[1])),
                   "scheduler": scheduler_config(params)}  # fmt: skip
    except KeyError as exc:
        raise OriginalCheckpointError(f"{config} lacks {exc.args[0]!r}, which the model's architecture needs") from None
    try:
        text = text_config(clap)
    except KeyError as exc:
        raise OriginalCheckpointError(f"{checkpoint}: its CLAP text encoder has no {CLAP}{exc.args[0]}") from None
    weights = _unet_weights(state, configs["unet"])
    unet = _load(UNet2DConditionModel(**configs["unet"]), weights, "UNet", checkpoint, config,
                 unused=_unused(state, (UNET,), weights))
    weights = _vae_weights(state, configs["vae"])
    vae_parts = tuple(f"{VAE}{part}." for part in ("encoder", "decoder", "quant_conv", "post_quant_conv"))
    vae = _load(AutoencoderKL(**configs["vae"]), weights, "VAE", checkpoint, config,
                unused=_unused(state, vae_parts, weights))
    vocoder = _load(SpeechT5HifiGan(SpeechT5HifiGanConfig(**configs["vocoder"])),
                    _vocoder_weights(state, configs["vocoder"]), "vocoder", checkpoint, config)  # fmt: skip
    text_encoder = _load(ClapTextModelWithProjection(text), _text_weights(clap), "CLAP text encoder", checkpoint, config,
                         ignore=("position_ids", "token_type_ids"))  # fmt: skip
    tokenizer, tokenizer_dir = _tokenizer(tokenizer_dirs, text, checkpoint)
    scheduler = DDIMScheduler(**configs["scheduler"])
    parts = {"unet": unet, "vae": vae, "vocoder": vocoder, "text_encoder": text_encoder}
    for name, model in parts.items():
        model.save_pretrained(str(out / name), safe_serialization=True)
    scheduler.save_pretrained(str(out / "scheduler"))
    tokenizer.save_pretrained(str(out / "tokenizer"))
    # what AudioLDMPipeline.save_pretrained writes (that class is deprecated in diffusers, the layout is not)
    index = {name: [type(obj).__module__.split(".")[0], type(obj).__name__]
             for name, obj in {**parts, "scheduler": scheduler, "tokenizer": tokenizer}.items()}  # fmt: skip
    write_text_atomic(out / "model_index.json", json.dumps(
        {"_class_name": "AudioLDMPipeline", "_diffusers_version": diffusers.__version__, **index}, indent=2, sort_keys=True))

    tower = _save_own_clap(clap, out)
    targets = _save_targets(state, out, tower, clap)
    return {"configs": configs, "text_encoder": text.to_dict(), "tokenizer_from": str(tokenizer_dir),
            "clap_audio_tower": tower, "stored_targets": targets}  # fmt: skip


def _save_own_clap(clap: dict, out: Path) -> str | None:
    """The whole CLAP (text + audio) in the LAION checkpoint layout that ``clap.source: laion`` loads
    (weights_only), so candidates are scored as the winners scored them; the audio tower's name, or None."""
    patch = clap.get("audio_branch.patch_embed.proj.weight")
    tower = HTSAT_TOWERS.get(int(patch.shape[0])) if patch is not None else None
    if tower is None:
        log.warning("the checkpoint's CLAP has no known audio tower: the profile's CLAP scores its candidates")
        return None
    (out / OWN_CLAP).parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": {k: v.contiguous() for k, v in clap.items()}}, out / OWN_CLAP)
    return tower


def _save_targets(state: dict, out: Path, tower: str | None, clap: dict) -> dict | None:
    """``embed_v.weight`` rows = [CLAP audio embedding, score floor] (the winners' ``generate_sample``)."""
    rows = state.get("embed_v.weight")
    if rows is None:
        return None
    dim = clap["audio_projection.2.weight"].shape[0] if "audio_projection.2.weight" in clap else None
    if tower is None or rows.shape[1] - 1 != dim:
        log.warning("the stored targets (embed_v, %s) do not fit the checkpoint's CLAP audio tower: not used",
                    list(rows.shape))  # fmt: skip
        return None
    save_file({"embeddings": rows[:, :-1].contiguous(), "floors": rows[:, -1].contiguous()}, str(out / TARGETS),
              metadata={"class": TARGET_CLASS, "source": "embed_v.weight"})  # fmt: skip
    return {"class": TARGET_CLASS, "count": int(rows.shape[0]), "dim": int(dim)}
