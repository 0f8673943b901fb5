"""Import a pretrained diffusers AudioLDM folder as the pipeline's LDM, without training and without data.

``import_audioldm(profile, out_dir)`` is what the ``pretrained_ldm`` stage runs when
``ldm.pretrained_path`` is set and ``ldm.{vae,unet,vocoder}.steps`` are all 0 (the paper profile):

1. **Validate** the folder from its configs and its safetensors *headers* (no weights are loaded):
   ``vae/ unet/ vocoder/ scheduler/`` with their configs and weights; a 1-channel mel VAE whose
   latent feeds the UNet; a ``simple_projection`` UNet whose condition size is the folder's
   ``text_encoder`` projection (what conditions it: ``generation/conditioning.py``); a vocoder at
   the profile's sample rate, ``n_mels`` and hop. Every mismatch is listed in one error.
2. **Hash** each imported file once (``file_hash``): the content hashes of the weights and
   configs plus the profile's audio config make the model ``version``.
3. **Write** our folder layout (``LdmComponents.load`` reads it): the configs and weights copied
   into ``out_dir`` (staged, swapped in whole), ``ldm_config.json`` (identity mel normalisation:
   AudioLDM's VAE sees the raw log-mel) and ``metrics.json`` (version, source, file hashes).

The corpus is never read: no clip is decoded and nothing is encoded. A second call with the same
source files (same paths, sizes and modification times), profile audio and import code returns
the recorded metrics without hashing again.

``.bin``-only folders (``diffusion_pytorch_model.bin`` / ``pytorch_model.bin`` without the
``.safetensors`` beside them) are **converted once** to safetensors in ``out_dir``: the ``.bin`` is
read with ``torch.load(weights_only=True)``, which can only rebuild tensors and plain containers
(a file holding anything else is refused before any of it runs), must be a flat ``{name: tensor}``
dict, and is written with ``safetensors.torch.save_file``. The source folder is never modified;
the version hashes the ``.bin`` as it was found. So the rest of the pipeline keeps loading with
``use_safetensors=True`` only, and nobody has to run a conversion by hand.
"""

from __future__ import annotations

import json
import logging
import math
import pickle
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from foley_core.core.code_version import source_version
from foley_core.core.config import Profile
from foley_core.core.fsutil import staged_dir, write_text_atomic
from foley_core.core.hashing import file_hash, json_hash
from foley_core.ldm.components import LDM_CONFIG, describe_ldm, ldm_code_version
from foley_core.ldm.mel import MelNormalisation

METRICS = "metrics.json"
HUB_ID = "cvssp/audioldm-s-full-v2"
IMPORT_FORMAT = "foley-ldm-import/1"
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Part:
    name: str  # sub-folder
    config: str  # config file name
    weights: str  # weights file stem: <stem>.safetensors, or the .bin named below
    bin_name: str


PARTS = {
    "vae": _Part("vae", "config.json", "diffusion_pytorch_model", "diffusion_pytorch_model.bin"),
    "unet": _Part("unet", "config.json", "diffusion_pytorch_model", "diffusion_pytorch_model.bin"),
    "vocoder": _Part("vocoder", "config.json", "model", "pytorch_model.bin"),
}
SCHEDULER_CONFIG = ("scheduler", "scheduler_config.json")
TEXT_ENCODER_CONFIG = "text_encoder/config.json"


class AudioLdmFolderError(ValueError):
    """The folder is not an AudioLDM model this profile can use; the message lists every problem."""


def imports_pretrained_as_is(profile: Profile) -> bool:
    """True when the LDM stage is a pure import: ``ldm.pretrained_path`` set and no network trains."""
    ldm = profile.ldm
    vocoder_steps = ldm.vocoder.steps if ldm.vocoder.kind == "hifigan" else 0
    return ldm.pretrained_path is not None and ldm.vae.steps == 0 and ldm.unet.steps == 0 and vocoder_steps == 0


def audioldm_source(profile: Profile) -> Path:
    """The local AudioLDM folder ``ldm.pretrained_path`` names (relative paths: to the project root)."""
    if profile.ldm.pretrained_path is None:
        raise ValueError("ldm.pretrained_path is not set: there is no AudioLDM folder to import")
    path = profile.resolve(Path(profile.ldm.pretrained_path))
    if not path.is_dir():
        raise FileNotFoundError(
            f"AudioLDM folder {path} not found (ldm.pretrained_path). Download it once, e.g.\n"
            f"  python -c \"from huggingface_hub import snapshot_download; "
            f"snapshot_download('{HUB_ID}', local_dir='{path}')\"\n"
            "(text_encoder/ and tokenizer/ are needed too: they condition the imported UNet)"
        )
    return path


# ---------------------------------------------------------------- validation
def _weights_file(folder: Path, part: _Part) -> tuple[Path, bool]:
    """(weights file, needs conversion). Prefers safetensors; a lone .bin is converted on import."""
    safetensors = folder / f"{part.weights}.safetensors"
    if safetensors.is_file():
        return safetensors, False
    binary = folder / part.bin_name
    if binary.is_file():
        return binary, True
    if any(folder.glob(f"{part.weights}*.index.json")):
        raise AudioLdmFolderError(f"{folder}: sharded weights are not supported; save the model as one file")
    raise FileNotFoundError(f"{folder} holds no weights ({safetensors.name} or {part.bin_name})")


def _read_json(path: Path) -> dict:
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: not an AudioLDM folder in the diffusers layout")
    try:
        return json.loads(path.read_text())
    except ValueError as exc:
        raise AudioLdmFolderError(f"{path} is not valid JSON ({exc})") from exc


def _parts_used(profile: Profile) -> list[_Part]:
    parts = [PARTS["vae"], PARTS["unet"]]
    if profile.ldm.vocoder.kind == "hifigan":
        parts.append(PARTS["vocoder"])
    return parts


def read_audioldm_folder(source: Path, profile: Profile) -> tuple[dict[str, dict], dict[str, tuple[Path, bool]]]:
    """The configs (``vae``, ``unet``, ``vocoder``, ``scheduler``) and weight files of an AudioLDM
    folder, after checking them against the profile (``validate_configs``)."""
    source = Path(source)
    if not (source / "unet").is_dir():
        raise FileNotFoundError(f"{source} is not an AudioLDM folder (no unet/ subfolder)")
    configs, weights = {}, {}
    for part in _parts_used(profile):
        folder = source / part.name
        if not folder.is_dir():
            raise FileNotFoundError(f"{source} is not a complete AudioLDM folder: no {part.name}/ subfolder")
        configs[part.name] = _read_json(folder / part.config)
        weights[part.name] = _weights_file(folder, part)
    configs["scheduler"] = _read_json(source.joinpath(*SCHEDULER_CONFIG))
    if (source / TEXT_ENCODER_CONFIG).is_file():  # not imported (the conditioner reads it), but it must fit the UNet
        configs["text_encoder"] = _read_json(source / TEXT_ENCODER_CONFIG)
    else:
        log.warning("%s has no %s: nothing checks that the UNet's condition size fits its text encoder",
                    source, TEXT_ENCODER_CONFIG)  # fmt: skip
    problems = validate_configs(configs, profile)
    if problems:
        raise AudioLdmFolderError(f"{source} does not fit profile {profile.name!r}:\n  - " + "\n  - ".join(problems))
    return configs, weights


def validate_configs(configs: dict[str, dict], profile: Profile) -> list[str]:
    """Every way the folder's configs disagree with the profile (empty: they fit)."""
    audio, problems = profile.audio, []
    vae, unet, vocoder = configs["vae"], configs["unet"], configs.get("vocoder")
    if vae.get("in_channels") != 1 or vae.get("out_channels") != 1:
        problems.append(f"vae: expects a 1-channel mel image, config has in/out channels "
                        f"{vae.get('in_channels')}/{vae.get('out_channels')}")  # fmt: skip
    latent = vae.get("latent_channels")
    if unet.get("in_channels") != latent or unet.get("out_channels") != latent:
        problems.append(f"unet: in/out channels {unet.get('in_channels')}/{unet.get('out_channels')} "
                        f"do not match the VAE's {latent} latent channels")  # fmt: skip
    down = 2 ** (len(vae.get("block_out_channels", [0])) - 1)
    if audio.n_mels % down:
        problems.append(f"vae: downsamples {down}x, which does not divide the profile's n_mels={audio.n_mels}")
    if unet.get("class_embed_type") != "simple_projection":
        problems.append(f"unet: class_embed_type is {unet.get('class_embed_type')!r}, AudioLDM conditions through "
                        "'simple_projection' (the CLAP vector)")  # fmt: skip
    text_encoder = configs.get("text_encoder")  # what conditions an imported UNet (generation/conditioning.py)
    if text_encoder is not None and unet.get("projection_class_embeddings_input_dim") != text_encoder.get("projection_dim"):
        problems.append(f"unet: conditions on {unet.get('projection_class_embeddings_input_dim')}-d vectors, the "
                        f"folder's text_encoder projects to {text_encoder.get('projection_dim')}")  # fmt: skip
    if vocoder is not None:
        if vocoder.get("sampling_rate") != audio.sample_rate:
            problems.append(f"vocoder: runs at {vocoder.get('sampling_rate')} Hz, the profile's audio at "
                            f"{audio.sample_rate} Hz (audio.sample_rate)")  # fmt: skip
        if vocoder.get("model_in_dim") != audio.n_mels:
            problems.append(f"vocoder: expects {vocoder.get('model_in_dim')} mel bins, the profile makes "
                            f"{audio.n_mels} (audio.n_mels)")  # fmt: skip
        hop = math.prod(vocoder.get("upsample_rates") or [0])
        if hop != audio.hop_length:
            problems.append(f"vocoder: upsamples each mel frame to {hop} samples, the profile's hop is "
                            f"{audio.hop_length} (audio.hop_length)")  # fmt: skip
    if "num_train_timesteps" not in configs["scheduler"]:
        problems.append("scheduler: scheduler_config.json has no num_train_timesteps")
    if profile.ldm.mel_normalisation != "none":
        problems.append("ldm.mel_normalisation must be 'none' for AudioLDM (its VAE was trained on the raw log-mel)")
    return problems


def _shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Tensor shapes from a safetensors header (no tensor is read)."""
    with safe_open(str(path), framework="pt") as handle:
        return {key: tuple(handle.get_slice(key).get_shape()) for key in handle.keys()}


def _find(shapes: dict, *keys: str) -> tuple[int, ...] | None:
    return next((shapes[k] for k in keys if k in shapes), None)


def check_weight_shapes(name: str, config: dict, shapes: dict[str, tuple[int, ...]]) -> list[str]:
    """The weights' key tensors have the shapes the config (already checked against the profile) says."""
    expect: list[tuple[tuple[str, ...], int, int | None]] = []  # (candidate keys, dim, expected size)
    if name == "vae":
        width = config["block_out_channels"][0]
        expect = [(("encoder.conv_in.weight",), 0, width), (("encoder.conv_in.weight",), 1, config["in_channels"]),
                  (("decoder.conv_out.weight",), 0, config["out_channels"]),
                  (("decoder.conv_in.weight",), 1, config["latent_channels"])]  # fmt: skip
    elif name == "unet":
        expect = [(("conv_in.weight",), 1, config["in_channels"]), (("conv_out.weight",), 0, config["out_channels"]),
                  (("class_embedding.weight",), 1, config["projection_class_embeddings_input_dim"])]  # fmt: skip
    elif name == "vocoder":
        conv_pre = ("conv_pre.weight", "conv_pre.weight_v", "conv_pre.parametrizations.weight.original1")
        expect = [(conv_pre, 1, config["model_in_dim"]), (conv_pre, 0, config["upsample_initial_channel"])]
        if "mean" in shapes:
            expect.append((("mean",), 0, config["model_in_dim"]))
    problems = []
    for keys, dim, size in expect:
        shape = _find(shapes, *keys)
        if shape is None:
            problems.append(f"{name}: weights lack {keys[0]} (not AudioLDM's {name})")
        elif len(shape) <= dim or shape[dim] != size:
            problems.append(f"{name}: {keys[0]} has shape {list(shape)}, its config says dimension {dim} is {size}")
    return problems


def _check_weights(name: str, config: dict, path: Path, shapes: dict[str, tuple[int, ...]]) -> None:
    problems = check_weight_shapes(name, config, shapes)
    if problems:
        raise AudioLdmFolderError(f"{path} does not match its config:\n  - " + "\n  - ".join(problems))


def validate_audioldm_folder(profile: Profile) -> tuple[Path, dict[str, dict], dict[str, tuple[Path, bool]]]:
    """Check ``ldm.pretrained_path`` against the profile without loading a weight: layout, configs,
    and the safetensors headers (a ``.bin`` is checked after its conversion). Returns the folder,
    its configs and its weight files ``{part: (path, needs_conversion)}``; raises on any problem."""
    source = audioldm_source(profile)
    configs, weights = read_audioldm_folder(source, profile)
    for name, (path, needs_conversion) in weights.items():
        if not needs_conversion:
            _check_weights(name, configs[name], path, _shapes(path))
    return source, configs, weights


# ---------------------------------------------------------------- .bin -> safetensors
def convert_bin_to_safetensors(binary: Path, target: Path) -> int:
    """Write the tensors of a ``torch.save``-d state dict as safetensors; returns the tensor count.

    ``weights_only=True`` rebuilds only tensors and plain containers: a file holding any other
    object is refused (``pickle.UnpicklingError``) before anything in it runs."""
    try:
        state = torch.load(binary, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise AudioLdmFolderError(f"{binary} holds objects other than tensors; refusing to unpickle it ({exc})") from exc
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise AudioLdmFolderError(f"{binary} is not a flat state dict of tensors")
    seen: set[int] = set()
    tensors = {}
    for key in sorted(state):  # safetensors refuses shared storage: give tied tensors their own copy
        tensor = state[key].contiguous()
        pointer = tensor.untyped_storage().data_ptr()
        tensors[key] = tensor.clone() if pointer in seen else tensor
        seen.add(pointer)
    save_file(tensors, str(target), metadata={"format": "pt", "converted_from": binary.name})
    return len(tensors)


# ---------------------------------------------------------------- import
def _stat_key(path: Path) -> list:
    stat = path.stat()
    return [str(path), stat.st_size, stat.st_mtime_ns]


def _fingerprint(profile: Profile, source: Path, files: list[Path]) -> str:
    """Cheap identity of an import: source files by (path, size, mtime), profile parts it reads, this code."""
    parts = [IMPORT_FORMAT, str(source), [_stat_key(f) for f in files], profile.audio.model_dump(mode="json"),
             profile.ldm.vocoder.kind, profile.ldm.vocoder.griffinlim_iters,
             source_version(import_audioldm)]  # fmt: skip
    return json_hash(parts, default=str)[:16]


def _copy(src: Path, dst: Path) -> None:
    """A private copy (never a hard link: editing the source in place must not change an imported model)."""
    shutil.copyfile(src, dst)


def import_audioldm(profile: Profile, out_dir: Path) -> dict:
    """Validate ``ldm.pretrained_path`` (a diffusers AudioLDM folder) against the profile and install it
    in ``out_dir`` in our layout, without touching the corpus. Returns (and writes to
    ``out_dir/metrics.json``) the metrics, with ``version``: the model version (content hashes of
    the imported files + the configs + the profile's audio config)."""
    out_dir = Path(out_dir)
    source, configs, weights = validate_audioldm_folder(profile)
    config_files = {name: source / PARTS[name].name / PARTS[name].config for name in weights}
    config_files["scheduler"] = source.joinpath(*SCHEDULER_CONFIG)
    files = sorted([*config_files.values(), *(path for path, _ in weights.values())])
    key = _fingerprint(profile, source, files)
    recorded = out_dir / METRICS
    if recorded.is_file() and (out_dir / LDM_CONFIG).is_file():
        metrics = json.loads(recorded.read_text())
        if metrics.get("fingerprint") == key:
            return metrics

    hashes = {f.relative_to(source).as_posix(): file_hash(f) for f in files}  # each file read once here
    counts: dict[str, int] = {}
    converted: list[str] = []
    with staged_dir(out_dir) as staging:  # a kill leaves the old folder or the new one, whole
        for name, (path, needs_conversion) in weights.items():
            part = PARTS[name]
            (staging / part.name).mkdir()
            _copy(config_files[name], staging / part.name / part.config)
            target = staging / part.name / f"{part.weights}.safetensors"
            if needs_conversion:
                log.info("converting %s to safetensors (weights_only=True)", path)
                convert_bin_to_safetensors(path, target)
                converted.append(path.relative_to(source).as_posix())
                _check_weights(name, configs[name], path, _shapes(target))
            else:
                _copy(path, target)
            buffers = ("mean", "scale") if name == "vocoder" else ()  # SpeechT5HifiGan's normalisation buffers
            counts[name] = sum(math.prod(shape) for k, shape in _shapes(target).items() if k not in buffers)
        (staging / SCHEDULER_CONFIG[0]).mkdir()
        _copy(config_files["scheduler"], staging.joinpath(*SCHEDULER_CONFIG))
        content = json_hash(hashes)
        # the config files are among the hashed files: a changed config is a new version too
        version = json_hash([IMPORT_FORMAT, content, profile.audio.model_dump(mode="json")])[:16]
        imported_from = {"path": str(source), "content_hash": content[:32], "files": hashes,
                         "converted_from_bin": converted, "configs": configs}  # fmt: skip
        vocoder = "hifigan" if "vocoder" in weights else "griffinlim"
        write_text_atomic(staging / LDM_CONFIG, json.dumps(describe_ldm(
            profile.audio, MelNormalisation(), vocoder, profile.ldm.vocoder.griffinlim_iters, counts,
            imported_from=imported_from, version=version), indent=2, sort_keys=True))  # fmt: skip
        metrics = {
            "imported": True, "version": version, "fingerprint": key, "source": str(source),
            "content_hash": content[:32], "files": hashes, "converted_from_bin": converted,
            "parameters": counts, "latent_scale": configs["vae"].get("scaling_factor"),
            **{name: {"steps": 0, "parameters": counts[name]} for name in counts},
            "code_version": ldm_code_version(),
        }  # fmt: skip
        write_text_atomic(staging / METRICS, json.dumps(metrics, indent=2, sort_keys=True))
    log.info("imported AudioLDM from %s as model version %s (%s)", source, version,
             ", ".join(f"{k} {v:,} params" for k, v in counts.items()))  # fmt: skip
    return metrics


def recorded_version(ldm_dir: Path) -> str | None:
    """The model version an import recorded in ``ldm_dir/metrics.json`` (None: not an imported LDM).
    Reading it costs nothing; re-hashing the imported weights (~1 GB for AudioLDM-S) costs seconds."""
    path = Path(ldm_dir) / METRICS
    if not path.is_file():
        return None
    metrics = json.loads(path.read_text())
    return metrics.get("version") if metrics.get("imported") else None
