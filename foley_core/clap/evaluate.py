"""CLAP quality: text->audio recall, zero-shot class accuracy, accuracy on held-out paraphrases."""

from __future__ import annotations

from importlib import resources

import numpy as np
import pandas as pd
import soundfile as sf
import torch

from foley_core.clap.similarity import cosine_matrix
from foley_core.core.config import Profile

PARAPHRASES = "paraphrase_prompts.csv"


def load_paraphrases() -> pd.DataFrame:
    """Prompts that paraphrase each DCASE class and are NEVER used in training (columns prompt, class)."""
    with resources.files("foley_core.clap").joinpath(PARAPHRASES).open() as handle:
        return pd.read_csv(handle, comment="#")


def read_clips(paths, expected_rate: int) -> list[np.ndarray]:
    clips = []
    for path in paths:
        audio, rate = sf.read(str(path), dtype="float32", always_2d=False)
        if rate != expected_rate:
            raise ValueError(f"{path}: sample rate {rate} Hz, expected {expected_rate} Hz")
        if audio.ndim != 1:
            raise ValueError(f"{path}: expected mono audio, got {audio.shape[1]} channels")
        clips.append(audio)
    return clips


def _normalised_mean(rows: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.normalize(rows.mean(0), dim=-1)


def recall_at_k(text: torch.Tensor, audio: torch.Tensor, ks=(1, 5)) -> dict[str, float]:
    """Caption i should retrieve clip i: rank of the true clip among all clips by cosine."""
    sims = cosine_matrix(text, audio)
    true = sims.diagonal().unsqueeze(1)
    rank = (sims > true).sum(dim=1)  # 0 = retrieved first
    return {f"recall_at_{k}": float((rank < k).float().mean()) for k in ks}


def evaluate_clap(encoder, manifest_val: pd.DataFrame, profile: Profile, paraphrases: pd.DataFrame | None = None) -> dict:
    """Metrics on the validation clips; zero-shot and paraphrase scores over the profile's target classes."""
    if manifest_val.empty:
        raise ValueError("evaluate_clap needs at least one validation clip")
    audio = encoder.encode_audio(read_clips(manifest_val["abs_path"], encoder.sample_rate), encoder.sample_rate)
    text = encoder.encode_text(list(manifest_val["caption"]))
    metrics: dict = {**recall_at_k(text, audio), "val_clips": int(len(manifest_val))}

    classes = [c for c in profile.class_names if c in set(manifest_val["class"])]
    is_target = manifest_val["class"].isin(classes).to_numpy()
    labels = manifest_val["class"].to_numpy()[is_target]
    target_audio = audio[torch.tensor(is_target)]
    prompts = torch.stack([_normalised_mean(encoder.encode_text(profile.class_config(c).prompts)) for c in classes])
    predicted = np.array(classes)[cosine_matrix(target_audio, prompts).argmax(1).numpy()]
    metrics["zero_shot_accuracy"] = float((predicted == labels).mean())
    metrics["zero_shot_per_class"] = {c: float((predicted[labels == c] == c).mean()) for c in classes}

    if paraphrases is not None and len(paraphrases):
        metrics.update(paraphrase_scores(encoder, paraphrases, classes, labels, target_audio))
    return metrics


def paraphrase_scores(encoder, paraphrases: pd.DataFrame, classes: list[str], labels: np.ndarray, audio: torch.Tensor) -> dict:
    """A paraphrase is right when its text embedding lies nearest its class's mean audio embedding.

    Also reported: whether the single validation clip it retrieves is of its class.
    """
    rows = paraphrases[paraphrases["class"].isin(classes)]
    prompt_emb = encoder.encode_text(list(rows["prompt"]))
    centroids = torch.stack([_normalised_mean(audio[torch.tensor(labels == c)]) for c in classes])
    nearest_class = np.array(classes)[cosine_matrix(prompt_emb, centroids).argmax(1).numpy()]
    retrieved = labels[cosine_matrix(prompt_emb, audio).argmax(1).numpy()]
    truth = rows["class"].to_numpy()
    wrong = [f"{p!r}->{n}" for p, n, t in zip(rows["prompt"], nearest_class, truth) if n != t]
    return {
        "paraphrase_accuracy": float((nearest_class == truth).mean()),
        "paraphrase_retrieval_accuracy": float((retrieved == truth).mean()),
        "paraphrase_prompts": int(len(rows)),
        "paraphrase_errors": wrong,
    }
