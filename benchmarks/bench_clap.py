"""Throughput of the profile's CLAP encoder on CPU: audio clips/s and texts/s.

    python benchmarks/bench_clap.py [--profile cpu] [--clips 64] [--texts 256] [--threads N]

Needs the trained model in ``<artifacts>/clap`` (the clap_model asset) for trained profiles.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from foley_core.clap import TrainedClapEncoder, load_clap
from foley_core.core.config import load_profile


def rate(fn, items: int, repeats: int = 3) -> float:
    fn()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return items / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="cpu")
    parser.add_argument("--clips", type=int, default=64)
    parser.add_argument("--texts", type=int, default=256)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--model-dir", type=Path, default=None, help="a trained CLAP folder (default: the profile's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    profile = load_profile(args.profile)
    encoder = TrainedClapEncoder.load(args.model_dir) if args.model_dir else load_clap(profile)
    rng = np.random.default_rng(0)
    clips = (0.3 * rng.standard_normal((args.clips, profile.audio.clip_samples))).astype(np.float32)
    words = ["a", "dog", "barks", "rain", "falls", "on", "a", "tin", "roof", "someone", "types", "quickly"]
    texts = [" ".join(rng.choice(words, size=6)) + f" {i}" for i in range(args.texts)]
    audio_rate = rate(lambda: encoder.encode_audio(clips, profile.audio.sample_rate), args.clips)
    text_rate = rate(lambda: encoder.encode_text(texts), args.texts)
    print(f"profile={profile.name} model={encoder.version} dim={encoder.embed_dim} threads={torch.get_num_threads()}")
    print(f"audio: {audio_rate:8.1f} clips/s ({profile.audio.clip_seconds:g} s clips, batch {encoder.batch_size})")
    print(f"text:  {text_rate:8.1f} texts/s")


if __name__ == "__main__":
    main()
