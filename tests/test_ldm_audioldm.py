"""Import of a diffusers AudioLDM folder (cvssp/audioldm-s-full-v2 layout), tested with a tiny random model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch
from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
from transformers import SpeechT5HifiGan, SpeechT5HifiGanConfig

from foley_core.core.audio import content_hash
from foley_core.core.config import AudioConfig, load_profile
from foley_core.ldm import LdmComponents, MelNormalisation, generate_waveforms, train_ldm

CONDITION_DIM = 16


def _tiny_audioldm(folder: Path, n_mels: int) -> dict[str, torch.nn.Module]:
    """Random components shaped like AudioLDM's (cross-attention blocks used as self-attention,
    simple_projection class embedding concatenated to the time embedding), saved in its layout."""
    torch.manual_seed(0)
    vae = AutoencoderKL(
        in_channels=1, out_channels=1, latent_channels=8, block_out_channels=(8, 16),
        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
        layers_per_block=1, norm_num_groups=8, scaling_factor=0.9,
    )  # fmt: skip
    unet = UNet2DConditionModel(
        sample_size=16, in_channels=8, out_channels=8, block_out_channels=(16, 32), layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=(16, 32), attention_head_dim=4, norm_num_groups=8,
        class_embed_type="simple_projection", projection_class_embeddings_input_dim=CONDITION_DIM,
        class_embeddings_concat=True,
    )  # fmt: skip
    vocoder = SpeechT5HifiGan(SpeechT5HifiGanConfig(
        model_in_dim=n_mels, sampling_rate=16000, upsample_initial_channel=16, upsample_rates=[10, 16],
        upsample_kernel_sizes=[20, 32], resblock_kernel_sizes=[3], resblock_dilation_sizes=[[1, 3]],
        normalize_before=False,
    ))  # fmt: skip
    scheduler = DDIMScheduler(beta_start=0.0015, beta_end=0.0195, beta_schedule="scaled_linear", num_train_timesteps=1000)
    vae.save_pretrained(folder / "vae")
    unet.save_pretrained(folder / "unet")
    vocoder.save_pretrained(folder / "vocoder")
    scheduler.save_pretrained(folder / "scheduler")
    for unread in ("text_encoder", "tokenizer"):  # the CLAP stage's business
        (folder / unread).mkdir()
    (folder / "model_index.json").write_text(json.dumps({"_class_name": "AudioLDMPipeline"}))
    return {"vae": vae, "unet": unet, "vocoder": vocoder}


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_audioldm_folder_imports_into_our_components(tmp_path):
    originals = _tiny_audioldm(tmp_path / "audioldm", n_mels=64)
    audio = AudioConfig(clip_seconds=0.64)
    components = LdmComponents.from_audioldm(tmp_path / "audioldm", audio=audio)
    for name, original in originals.items():
        assert _same_weights(getattr(components, name), original), name
    assert components.normalisation == MelNormalisation()  # AudioLDM's VAE sees the raw log-mel
    assert components.latent_scale == pytest.approx(0.9)
    assert components.scheduler_config["beta_schedule"] == "scaled_linear"
    conditions = torch.nn.functional.normalize(torch.randn(2, CONDITION_DIM), dim=1)
    waves = generate_waveforms(components, conditions, torch.zeros(CONDITION_DIM), guidance_scale=[1.0, 2.5],
                               generators=[torch.Generator().manual_seed(s) for s in (0, 1)], steps=2)  # fmt: skip
    assert waves.shape == (2, audio.clip_samples) and torch.isfinite(waves).all()
    components.save(tmp_path / "ours")
    reloaded = LdmComponents.load(tmp_path / "ours")
    assert _same_weights(reloaded.unet, originals["unet"])


def test_a_folder_without_the_layout_is_refused(tmp_path):
    (tmp_path / "not-audioldm").mkdir()
    with pytest.raises(FileNotFoundError, match="not an AudioLDM folder"):
        LdmComponents.from_audioldm(tmp_path / "not-audioldm")


def test_paper_style_profile_uses_pretrained_weights_as_they_are(tmp_path):
    """``ldm.pretrained_path`` + ``steps: 0``: train_ldm writes the imported weights unchanged."""
    profile = load_profile("smoke", {
        "paths": {"data_dir": str(tmp_path / "data"), "artifacts_dir": str(tmp_path / "artifacts")},
        "wandb": {"mode": "disabled"},
        "ldm": {"pretrained_path": str(tmp_path / "audioldm"), "mel_normalisation": "none",
                "vae": {"steps": 0}, "unet": {"steps": 0}, "vocoder": {"steps": 0}},
    })  # fmt: skip
    originals = _tiny_audioldm(tmp_path / "audioldm", n_mels=profile.audio.n_mels)
    rows = []
    for i, split in enumerate(["train", "train", "val"]):
        wave = (0.5 * np.sin(np.arange(profile.audio.clip_samples) * (0.05 + 0.01 * i))).astype(np.float32)
        path = tmp_path / f"clip{i}.wav"
        sf.write(path, wave, profile.audio.sample_rate, subtype="PCM_16")
        rows.append({"class": "Rain", "split": split, "content_hash": content_hash(wave), "abs_path": str(path)})
    manifest = pd.DataFrame(rows)
    conditioning = {h: np.ones(CONDITION_DIM, dtype=np.float32) / 4 for h in manifest["content_hash"]}
    metrics = train_ldm(profile, manifest, conditioning, tmp_path / "ldm", report_clips=1)
    assert metrics["unet"]["steps"] == 0
    loaded = LdmComponents.load(tmp_path / "ldm")
    for name, original in originals.items():
        assert _same_weights(getattr(loaded, name), original), name
    assert loaded.scheduler_config["beta_schedule"] == "scaled_linear"
