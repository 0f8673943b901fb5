"""Multi-target selection scores with the CLAP that selects (issue 25): after a fine-tune, the
adapted CLAP embeds the targets itself instead of switching multi-target off."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import soundfile as sf
import torch

from foley_core.clap import EmbeddingCache
from foley_core.clap.cache import cached_model_version
from foley_core.core.config import load_profile
from foley_core.core.layout import layout
from foley_core.data.ingest import MANIFEST, MANIFEST_COLUMNS
from foley_core.generation.submission import class_targets

LABEL = "MovingMotorVehicle"
RATE = 16000


class FakeClap:
    """Stands for a CLAP (the adapted one): each clip's embedding is a one-hot of its tone's
    frequency bin, so a test can tell which clip a target came from."""

    sample_rate = RATE

    def __init__(self, version: str):
        self.version, self.calls = version, 0

    def encode_audio(self, clips, rate):
        self.calls += 1
        rows = np.zeros((len(clips), 16), dtype=np.float32)
        for i, clip in enumerate(clips):
            peak = int(np.argmax(np.abs(np.fft.rfft(clip))[: 16 * 100]))  # tone of 100 * k Hz over 1 s
            rows[i, peak // 100] = 1.0
        return torch.from_numpy(rows)


class Pipeline:
    def __init__(self, clap):
        self.clap = clap

    def scoring_clap(self):
        return self.clap


def _dataset(profile, splits: list[str]) -> list[dict]:
    folder = layout(profile).dataset / LABEL
    (folder / "clips").mkdir(parents=True)
    rows = []
    for i, split in enumerate(splits):
        time = np.arange(RATE) / RATE
        sf.write(folder / f"clips/{i:03d}.wav", 0.5 * np.sin(2 * np.pi * 100 * (i + 1) * time), RATE)
        rows.append({**{c: "" for c in MANIFEST_COLUMNS}, "id": i, "class": LABEL, "is_target": True, "caption": "a car",
                     "split": split, "path": f"clips/{i:03d}.wav", "content_hash": f"hash{i}"})
    pd.DataFrame(rows, columns=MANIFEST_COLUMNS).to_csv(folder / MANIFEST, index=False)
    return rows


def test_an_adapted_clap_embeds_its_own_targets_and_leaves_the_profile_cache_alone(tmp_path, caplog):
    profile = load_profile("smoke", {"paths": {"data_dir": str(tmp_path / "data"), "artifacts_dir": str(tmp_path / "a"),
                                               "outputs_dir": str(tmp_path / "o")}})
    assert profile.class_config(LABEL).clap_floor is None  # multi-target, as in the winning system
    splits = ["train", "val", "train", "train", "val"]
    rows = _dataset(profile, splits)
    # the clap_embeddings asset cached the profile's own CLAP ("base")
    EmbeddingCache(layout(profile).embeddings(LABEL), "base")._append(
        "audio", [r["content_hash"] for r in rows], np.zeros((len(rows), 16), dtype=np.float32))
    adapted = FakeClap("adapted-after-finetune")

    with caplog.at_level(logging.WARNING):
        targets = class_targets(Pipeline(adapted), profile, LABEL, n_clips=6)
    assert "scoring against the prompt" not in caplog.text  # multi-target stays on
    assert targets is not None and targets.shape == (6, 16)
    train_tones = [i + 1 for i, s in enumerate(splits) if s == "train"]  # tone k -> embedding bin k
    assert np.argmax(targets, axis=1).tolist() == [train_tones[i % 3] for i in range(6)]  # the adapted CLAP's view
    assert cached_model_version(layout(profile).embeddings(LABEL)) == "base"  # the asset's cache untouched
    assert adapted.calls == 1

    again = class_targets(Pipeline(adapted), profile, LABEL, n_clips=6)
    assert np.array_equal(again, targets) and adapted.calls == 1  # embedded once, then read from its cache


def test_the_profile_clap_reads_the_asset_cache_without_embedding(tmp_path):
    profile = load_profile("smoke", {"paths": {"data_dir": str(tmp_path / "data"), "artifacts_dir": str(tmp_path / "a"),
                                               "outputs_dir": str(tmp_path / "o")}})
    rows = _dataset(profile, ["train", "train", "val"])
    EmbeddingCache(layout(profile).embeddings(LABEL), "base")._append(
        "audio", [r["content_hash"] for r in rows], np.eye(3, 16, dtype=np.float32))
    clap = FakeClap("base")
    targets = class_targets(Pipeline(clap), profile, LABEL, n_clips=2)
    assert np.argmax(targets, axis=1).tolist() == [0, 1] and clap.calls == 0  # the cached rows, nothing recomputed
