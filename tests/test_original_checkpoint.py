"""Original-format AudioLDM checkpoints (the DCASE 2023 Task 7 winners' release): converted once to a
diffusers folder, the stored targets loaded, and `foley generate --model <ckpt>` generates from it.

The tiny checkpoint is written the way the original latent-diffusion code saves one: random diffusers
models mapped to the original key names by the inverse of diffusers' mapping (written out here,
independently of the converter), the whole LAION CLAP under ``cond_stage_model.model.``, the
diffusion buffers, ``scale_factor`` and ``embed_v`` (the stored MovingMotorVehicle targets), in a
Lightning-style ``{"state_dict": ..., "epoch": ...}`` file with a YAML config beside it.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml
from click.testing import CliRunner
from diffusers import AutoencoderKL, UNet2DConditionModel
from laion_fixtures import make_tiny_laion
from safetensors.torch import load_file
from transformers import ClapTextModelWithProjection, SpeechT5HifiGan, SpeechT5HifiGanConfig

import foley_core.ldm.original_checkpoint as original
from foley_core.ldm.original_checkpoint import (
    OriginalCheckpointError,
    convert_original_checkpoint,
    find_original_checkpoint,
)
from orchestration.cli import main

N_TARGETS = 4
CLAP_DIM = 512  # the tiny LAION CLAP's projection (text and audio)
LAYERS = 1  # res blocks per level (num_res_blocks)

YAML = {"model": {"target": "latent_diffusion.models.ddpm.LatentDiffusion", "params": {
    "linear_start": 0.0015, "linear_end": 0.0195, "timesteps": 1000, "channels": 8, "scale_by_std": True,
    "conditioning_key": "film", "has_embed": True,
    "unet_config": {"target": "latent_diffusion.modules.diffusionmodules.openaimodel.UNetModel", "params": {
        "extra_film_condition_dim": CLAP_DIM, "extra_film_use_concat": True, "in_channels": 8, "out_channels": 8,
        "model_channels": 32, "attention_resolutions": [2], "num_res_blocks": LAYERS, "channel_mult": [1, 2],
        "num_head_channels": 16, "use_spatial_transformer": True}},
    "first_stage_config": {"target": "latent_encoder.autoencoder.AutoencoderKL", "params": {
        "embed_dim": 8, "mel_band": 64, "ddconfig": {
            "double_z": True, "z_channels": 8, "resolution": 256, "in_channels": 1, "out_ch": 1, "ch": 32,
            "ch_mult": [1, 2], "num_res_blocks": LAYERS, "attn_resolutions": [], "dropout": 0.0}}},
    "vocoder_config": {"target": "audioldm.first_stage_model.vocoder", "params": {
        "num_mels": 64, "sampling_rate": 16000, "upsample_rates": [10, 16], "upsample_kernel_sizes": [20, 32],
        "upsample_initial_channel": 16, "resblock_kernel_sizes": [3], "resblock_dilation_sizes": [[1, 3]]}},
    "cond_stage_config": {"target": "latent_diffusion.modules.encoders.modules.CLAPAudioEmbeddingClassifierFreev2",
                          "params": {"sampling_rate": 16000, "embed_mode": "text"}},
}}}  # fmt: skip


def _randomise(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Every parameter random (diffusers zero-initialises some): a weight landing in the wrong place shows."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            param.copy_(torch.randn(param.shape, generator=generator) * 0.05)
    return model.eval()


def reference_models() -> dict[str, torch.nn.Module]:
    """The diffusers models the YAML above describes, written out by hand (not by the converter)."""
    unet = UNet2DConditionModel(
        sample_size=16, in_channels=8, out_channels=8, block_out_channels=(32, 64), layers_per_block=LAYERS,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=(32, 64), attention_head_dim=(2, 4),  # diffusers' "head dim" is the head count: 32/16, 64/16
        class_embed_type="simple_projection", projection_class_embeddings_input_dim=CLAP_DIM,
        class_embeddings_concat=True,
    )  # fmt: skip
    vae = AutoencoderKL(in_channels=1, out_channels=1, latent_channels=8, block_out_channels=(32, 64),
                        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                        layers_per_block=LAYERS, scaling_factor=0.9)  # fmt: skip
    vocoder = SpeechT5HifiGan(SpeechT5HifiGanConfig(
        model_in_dim=64, sampling_rate=16000, upsample_initial_channel=16, upsample_rates=[10, 16],
        upsample_kernel_sizes=[20, 32], resblock_kernel_sizes=[3], resblock_dilation_sizes=[[1, 3]],
        normalize_before=False))  # fmt: skip
    return {"unet": _randomise(unet, 1), "vae": _randomise(vae, 2), "vocoder": _randomise(vocoder, 3)}


# ---------------------------------------------------------------- diffusers -> original key names
_RESNET = (("norm1", "in_layers.0"), ("conv1", "in_layers.2"), ("norm2", "out_layers.0"), ("conv2", "out_layers.3"),
           ("time_emb_proj", "emb_layers.1"), ("conv_shortcut", "skip_connection"))  # fmt: skip


def _resnet(rest: str, table=_RESNET) -> str:
    head, _, tail = rest.partition(".")
    return dict(table).get(head, head) + "." + tail


def unet_to_original(state: dict, unet: UNet2DConditionModel) -> dict:
    """openaimodel names: input_blocks.<n>.<0 resnet | 1 attention>, middle_block.<0|1|2>, output_blocks.<n>...."""
    layers = unet.config.layers_per_block
    per = layers + 1  # input_blocks per level (resnets + downsampler); output_blocks per level (resnets)
    attends_up = ["CrossAttn" in t for t in unet.config.up_block_types]
    fixed = {"time_embedding.linear_1": "time_embed.0", "time_embedding.linear_2": "time_embed.2",
             "class_embedding": "film_emb", "conv_in": "input_blocks.0.0", "conv_norm_out": "out.0",
             "conv_out": "out.2"}  # fmt: skip
    out = {}
    for key, value in state.items():
        module, _, param = key.rpartition(".")
        if module in fixed:
            out[f"{fixed[module]}.{param}"] = value
        elif m := re.fullmatch(r"down_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", key):
            out[f"input_blocks.{1 + int(m[1]) * per + int(m[2])}.0.{_resnet(m[3])}"] = value
        elif m := re.fullmatch(r"down_blocks\.(\d+)\.attentions\.(\d+)\.(.+)", key):
            out[f"input_blocks.{1 + int(m[1]) * per + int(m[2])}.1.{m[3]}"] = value
        elif m := re.fullmatch(r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.+)", key):
            out[f"input_blocks.{1 + int(m[1]) * per + layers}.0.op.{m[2]}"] = value
        elif m := re.fullmatch(r"mid_block\.resnets\.(\d+)\.(.+)", key):
            out[f"middle_block.{2 * int(m[1])}.{_resnet(m[2])}"] = value
        elif m := re.fullmatch(r"mid_block\.attentions\.0\.(.+)", key):
            out[f"middle_block.1.{m[1]}"] = value
        elif m := re.fullmatch(r"up_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", key):
            out[f"output_blocks.{int(m[1]) * per + int(m[2])}.0.{_resnet(m[3])}"] = value
        elif m := re.fullmatch(r"up_blocks\.(\d+)\.attentions\.(\d+)\.(.+)", key):
            out[f"output_blocks.{int(m[1]) * per + int(m[2])}.1.{m[3]}"] = value
        elif m := re.fullmatch(r"up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.+)", key):
            slot = 2 if attends_up[int(m[1])] else 1  # after the attention, if the level has one
            out[f"output_blocks.{int(m[1]) * per + layers}.{slot}.conv.{m[2]}"] = value
        else:
            raise AssertionError(f"unmapped UNet key {key}")
    return out


def vae_to_original(state: dict, levels: int) -> dict:
    """taming/LDM names: encoder.down.<i>.block.<j>, mid.block_<k+1>, mid.attn_1.{norm,q,k,v,proj_out} (1x1 convs),
    decoder.up.<levels-1-i> (the decoder's levels are numbered from the bottom)."""
    attention = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}
    out = {}
    for key, value in state.items():
        key = key.replace("conv_norm_out", "norm_out").replace("conv_shortcut", "nin_shortcut")
        if m := re.fullmatch(r"encoder\.down_blocks\.(\d+)\.resnets\.(.+)", key):
            key = f"encoder.down.{m[1]}.block.{m[2]}"
        elif m := re.fullmatch(r"encoder\.down_blocks\.(\d+)\.downsamplers\.0\.(.+)", key):
            key = f"encoder.down.{m[1]}.downsample.{m[2]}"
        elif m := re.fullmatch(r"decoder\.up_blocks\.(\d+)\.resnets\.(.+)", key):
            key = f"decoder.up.{levels - 1 - int(m[1])}.block.{m[2]}"
        elif m := re.fullmatch(r"decoder\.up_blocks\.(\d+)\.upsamplers\.0\.(.+)", key):
            key = f"decoder.up.{levels - 1 - int(m[1])}.upsample.{m[2]}"
        elif m := re.fullmatch(r"(encoder|decoder)\.mid_block\.resnets\.(\d+)\.(.+)", key):
            key = f"{m[1]}.mid.block_{int(m[2]) + 1}.{m[3]}"
        elif m := re.fullmatch(r"(encoder|decoder)\.mid_block\.attentions\.0\.(.+)\.(weight|bias)", key):
            key = f"{m[1]}.mid.attn_1.{attention[m[2]]}.{m[3]}"
            if m[3] == "weight" and value.ndim == 2:
                value = value[:, :, None, None]  # the original attention projections are 1x1 convolutions
        out[key] = value
    return out


def vocoder_to_original(state: dict) -> dict:
    """HiFi-GAN names: ``ups.<i>`` for transformers' ``upsampler.<i>``; mean/scale are transformers' own buffers."""
    return {key.replace("upsampler.", "ups."): value for key, value in state.items() if key not in ("mean", "scale")}


def original_state(models: dict, clap: torch.nn.Module, targets: torch.Tensor | None) -> dict:
    state = {f"model.diffusion_model.{k}": v for k, v in unet_to_original(models["unet"].state_dict(), models["unet"]).items()}
    state |= {f"first_stage_model.{k}": v for k, v in vae_to_original(models["vae"].state_dict(), 2).items()}
    state |= {f"first_stage_model.vocoder.{k}": v for k, v in vocoder_to_original(models["vocoder"].state_dict()).items()}
    state |= {f"cond_stage_model.model.{k}": v for k, v in clap.state_dict().items()}
    state["cond_stage_model.model.text_branch.embeddings.position_ids"] = torch.arange(80)[None]  # old transformers
    betas = torch.linspace(0.0015**0.5, 0.0195**0.5, 1000) ** 2
    state |= {"betas": betas, "alphas_cumprod": torch.cumprod(1 - betas, 0), "scale_factor": torch.tensor(0.9),
              "logvar": torch.zeros(1000), "model_ema.decay": torch.tensor(0.9999)}  # fmt: skip
    if targets is not None:  # embed_v: nn.Linear(513, 100) whose rows are [CLAP audio embedding, score floor]
        state["embed_v.weight"] = targets
        state["embed_v.bias"] = torch.zeros(len(targets))
    return state


def write_original(folder: Path, state: dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    checkpoint = folder / "clap_submit.ckpt"
    torch.save({"state_dict": state, "epoch": 41, "global_step": 928410, "pytorch-lightning_version": "1.9.0"},
               checkpoint)  # fmt: skip
    (folder / "clap_submit.yaml").write_text(yaml.safe_dump(YAML))
    return checkpoint


@pytest.fixture(scope="module")
def winners(tmp_path_factory):
    """(checkpoint, reference models, the LAION CLAP inside it, the stored targets)."""
    root = tmp_path_factory.mktemp("winners")
    _, _, clap = make_tiny_laion(root)  # also writes root/tokenizer: the RoBERTa vocabulary beside the checkpoint
    (root / "630k-audioset-best.pt").unlink()
    models = reference_models()
    generator = torch.Generator().manual_seed(4)
    embeddings = torch.nn.functional.normalize(torch.randn(N_TARGETS, CLAP_DIM, generator=generator), dim=-1)
    targets = torch.cat([embeddings, torch.full((N_TARGETS, 1), 0.75)], dim=1)
    return write_original(root, original_state(models, clap, targets)), models, clap.eval(), targets



def _same(state: dict, reference: dict) -> list[str]:
    """Keys whose tensors differ (or are missing on either side)."""
    return sorted(k for k in set(state) | set(reference)
                  if k not in state or k not in reference or not torch.equal(state[k], reference[k]))  # fmt: skip


def test_the_checkpoint_and_its_config_are_found_beside_each_other(winners, tmp_path):
    checkpoint = winners[0]
    found = find_original_checkpoint(checkpoint)
    assert found == (checkpoint, checkpoint.with_suffix(".yaml"))
    assert find_original_checkpoint(checkpoint.parent) == found  # the folder holding them
    assert find_original_checkpoint(tmp_path) is None  # anything else goes the usual way
    lone = tmp_path / "lone"
    lone.mkdir()
    (lone / "model.ckpt").write_bytes(b"")
    with pytest.raises(OriginalCheckpointError, match=r"model\.ckpt.*YAML config.*model\.yaml"):
        find_original_checkpoint(lone / "model.ckpt")


def test_conversion_gives_the_original_weights_once(winners, tmp_path, monkeypatch):
    checkpoint, models, clap, targets = winners
    folder = convert_original_checkpoint(checkpoint, checkpoint.with_suffix(".yaml"), tmp_path / "converted",
                                         tokenizer_dirs=[checkpoint.parent / "tokenizer"])  # fmt: skip
    assert folder.parent == tmp_path / "converted" and {p.name for p in folder.iterdir()} >= {
        "unet", "vae", "vocoder", "text_encoder", "tokenizer", "scheduler", "model_index.json", "clap",
        "targets.safetensors", "conversion.json"}  # fmt: skip
    assert not list(folder.rglob("*.bin"))
    unet = UNet2DConditionModel.from_pretrained(folder / "unet", use_safetensors=True)
    vae = AutoencoderKL.from_pretrained(folder / "vae", use_safetensors=True)
    vocoder = SpeechT5HifiGan.from_pretrained(folder / "vocoder", use_safetensors=True)
    for name, loaded in (("unet", unet), ("vae", vae), ("vocoder", vocoder)):
        assert _same(loaded.state_dict(), models[name].state_dict()) == [], name
    assert unet.config.attention_head_dim == [2, 4] and vae.config.scaling_factor == pytest.approx(0.9)
    assert vocoder.config.upsample_rates == [10, 16] and vocoder.config.sampling_rate == 16000

    text = ClapTextModelWithProjection.from_pretrained(folder / "text_encoder", use_safetensors=True).state_dict()
    laion = clap.state_dict()
    expected = {k.replace("text_branch.", "text_model.", 1): v for k, v in laion.items() if k.startswith("text_branch.")}
    expected |= {f"text_projection.linear{1 + i // 2}.{p}": laion[f"text_projection.{i}.{p}"]
                 for i in (0, 2) for p in ("weight", "bias")}  # fmt: skip
    assert _same({k: v for k, v in text.items() if k in expected}, expected) == []
    stored = load_file(str(folder / "targets.safetensors"))
    assert torch.equal(stored["embeddings"], targets[:, :-1]) and torch.equal(stored["floors"], targets[:, -1])
    own = torch.load(folder / "clap" / "clap.pt", weights_only=True)["state_dict"]  # the whole CLAP, for scoring
    assert _same({k: v for k, v in own.items() if k in laion}, laion) == []
    scheduler = json.loads((folder / "scheduler/scheduler_config.json").read_text())
    assert (scheduler["beta_start"], scheduler["beta_end"], scheduler["num_train_timesteps"]) == (0.0015, 0.0195, 1000)

    def no_second_conversion(*_args, **_kwargs):
        raise AssertionError("converted twice")

    monkeypatch.setattr(original, "_convert", no_second_conversion)
    again = convert_original_checkpoint(checkpoint, checkpoint.with_suffix(".yaml"), tmp_path / "converted",
                                        tokenizer_dirs=[checkpoint.parent / "tokenizer"])  # fmt: skip
    assert again == folder
    os.utime(checkpoint)  # touched, same content: found again by its content hash
    assert convert_original_checkpoint(checkpoint, checkpoint.with_suffix(".yaml"), tmp_path / "converted",
                                       tokenizer_dirs=[]) == folder  # fmt: skip


def test_foley_generate_converts_the_checkpoint_and_scores_against_a_stored_target(winners, bare_profile, tmp_path):
    checkpoint = winners[0]
    out = tmp_path / "out.wav"
    result = CliRunner().invoke(main, ["generate", "--model", str(checkpoint), "--class", "MovingMotorVehicle",
                                       "-n", "2", "--steps", "2", "--seconds", "0.64", "--seed", "5", "-o", str(out),
                                       "--profile", str(bare_profile)])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert f"stored target {5 % N_TARGETS} of {N_TARGETS}" in result.output
    info = sf.info(out)
    assert (info.samplerate, info.channels, info.subtype, info.frames) == (22050, 1, "PCM_16", round(0.64 * 22050))
    converted = [p for p in (tmp_path / "artifacts" / "converted").iterdir() if not p.name.startswith(".")]
    assert len(converted) == 1 and (converted[0] / "conversion.json").is_file()


def test_a_checkpoint_missing_keys_is_a_one_line_error_naming_it(winners, bare_profile, tmp_path):
    checkpoint, models, clap, _ = winners
    state = original_state(models, clap, None)
    for key in [k for k in state if k.startswith("model.diffusion_model.output_blocks.1.")]:
        del state[key]
    broken = write_original(tmp_path / "broken", state)
    out = tmp_path / "out.wav"
    result = CliRunner().invoke(main, ["generate", "a car", "--model", str(broken), "-n", "1", "--steps", "1",
                                       "-o", str(out), "--profile", str(bare_profile)])  # fmt: skip
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert lines[-1].startswith(f"error: {broken}: its UNet") and "missing" in lines[-1], result.output
    assert "up_blocks.0.resnets.1" in lines[-1]  # output_blocks.1 is the first level's second resnet
    assert "Traceback" not in result.output and not out.exists()
    assert not (tmp_path / "artifacts" / "converted").exists() or not any(
        p for p in (tmp_path / "artifacts" / "converted").iterdir() if not p.name.startswith("."))

    state = original_state(models, clap, None)  # whole again, plus a UNet weight no mapping knows: not dropped silently
    state["model.diffusion_model.input_blocks.1.2.extra.weight"] = torch.zeros(3)
    with pytest.raises(OriginalCheckpointError, match=r"its UNet .* 1 unexpected in model\.diffusion_model\.input_blocks\.1"):
        convert_original_checkpoint(write_original(tmp_path / "extra", state), tmp_path / "extra/clap_submit.yaml",
                                    tmp_path / "converted", tokenizer_dirs=[])  # fmt: skip

    del state["first_stage_model.vocoder.conv_pre.weight"]
    for key in [k for k in state if k.startswith("model.diffusion_model.")]:
        del state[key]
    with pytest.raises(OriginalCheckpointError, match=r"no model\.diffusion_model\.\* \(the UNet\)") as caught:
        convert_original_checkpoint(write_original(tmp_path / "worse", state), tmp_path / "worse/clap_submit.yaml",
                                    tmp_path / "converted", tokenizer_dirs=[])  # fmt: skip
    assert "\n" not in str(caught.value)


class _RunsACommand:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_a_checkpoint_holding_objects_is_refused_unread(tmp_path):
    marker = tmp_path / "pwned"
    checkpoint = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {"x": torch.zeros(1)}, "hook": _RunsACommand(marker)}, checkpoint)
    (tmp_path / "evil.yaml").write_text(yaml.safe_dump(YAML))
    with pytest.raises(OriginalCheckpointError, match="unsupported GLOBAL posix.system.*nothing in it was run") as caught:
        convert_original_checkpoint(checkpoint, tmp_path / "evil.yaml", tmp_path / "converted", tokenizer_dirs=[])
    assert not marker.exists() and "\n" not in str(caught.value)


def test_the_winners_vocoders_are_known_by_their_mel_bins():
    """Their YAMLs name no vocoder: their code picks a HiFi-GAN by the mel bins (64: 16 kHz, 80: 22.05 kHz)."""
    params = {k: v for k, v in YAML["model"]["params"].items() if k != "vocoder_config"}
    big = original.vocoder_config(params, n_mels=64)
    small = original.vocoder_config(params, n_mels=80)
    assert (big["sampling_rate"], np.prod(big["upsample_rates"]), big["model_in_dim"]) == (16000, 160, 64)
    assert (small["sampling_rate"], np.prod(small["upsample_rates"]), small["model_in_dim"]) == (22050, 256, 80)
    with pytest.raises(OriginalCheckpointError, match="128 mel bins"):
        original.vocoder_config(params, n_mels=128)


# ---------------------------------------------------------------- real size, without weights
def _winners_params(model_channels: int) -> dict:
    """The UNet and VAE sections of the winners' configs/big.yaml (model_channels 192) and small.yaml (128)."""
    return {"linear_start": 0.0015, "linear_end": 0.0195, "timesteps": 1000, "scale_by_std": True,
            "unet_config": {"params": {"image_size": 64, "extra_film_condition_dim": 512, "extra_film_use_concat": True,
                                       "in_channels": 8, "out_channels": 8, "model_channels": model_channels,
                                       "attention_resolutions": [8, 4, 2], "num_res_blocks": 2,
                                       "channel_mult": [1, 2, 3, 5], "num_head_channels": 32,
                                       "use_spatial_transformer": True}},
            "first_stage_config": {"params": {"embed_dim": 8, "ddconfig": {
                "double_z": True, "z_channels": 8, "resolution": 256, "downsample_time": False, "in_channels": 1,
                "out_ch": 1, "ch": 128, "ch_mult": [1, 2, 4], "num_res_blocks": 2, "attn_resolutions": [],
                "dropout": 0.0}}}}  # fmt: skip


@pytest.mark.parametrize("model_channels", [192, 128], ids=["big", "small"])
def test_the_winners_real_size_architectures_map_every_weight(model_channels):
    """At the released sizes, on the meta device (shapes, no memory): the YAML gives AudioLDM's diffusers
    architecture, and every original weight name lands on a parameter of the right shape."""
    params = _winners_params(model_channels)
    channels = tuple(model_channels * m for m in (1, 2, 3, 5))
    with torch.device("meta"):
        unet = UNet2DConditionModel(  # cvssp/audioldm-s-full-v2's layout at this width, heads 32 wide
            in_channels=8, out_channels=8, block_out_channels=channels, layers_per_block=2,
            down_block_types=("DownBlock2D",) + ("CrossAttnDownBlock2D",) * 3,
            up_block_types=("CrossAttnUpBlock2D",) * 3 + ("UpBlock2D",), cross_attention_dim=channels,
            attention_head_dim=tuple(c // 32 for c in channels), class_embed_type="simple_projection",
            projection_class_embeddings_input_dim=512, class_embeddings_concat=True)  # fmt: skip
        vae = AutoencoderKL(in_channels=1, out_channels=1, latent_channels=8, block_out_channels=(128, 256, 512),
                            down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3,
                            layers_per_block=2)  # fmt: skip
        state = {f"model.diffusion_model.{k}": v for k, v in unet_to_original(unet.state_dict(), unet).items()}
        state |= {f"first_stage_model.{k}": v for k, v in vae_to_original(vae.state_dict(), 3).items()}
        configs = {"unet": original.unet_config(params),
                   "vae": original.vae_config(params, {"scale_factor": torch.tensor(0.5, device="cpu")})}
        built = {"unet": UNet2DConditionModel(**configs["unet"]), "vae": AutoencoderKL(**configs["vae"])}
    converted = {"unet": original._unet_weights(state, configs["unet"]), "vae": original._vae_weights(state, configs["vae"])}
    for name, reference in (("unet", unet), ("vae", vae)):
        want = {k: tuple(v.shape) for k, v in reference.state_dict().items()}
        assert {k: tuple(v.shape) for k, v in built[name].state_dict().items()} == want, name
        assert {k: tuple(v.shape) for k, v in converted[name].items()} == want, name
    assert list(built["unet"].config.attention_head_dim) == [c // 32 for c in channels]
    assert sum(v.numel() for v in converted["unet"].values()) > 100_000_000 and built["vae"].config.scaling_factor == 0.5
