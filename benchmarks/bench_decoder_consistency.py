"""Which part of the decoder chain loses the class? Real training clips through each path, scored
with the class-consistency rule of the evaluation (log-mel FAD to every class's held-out clips).

Needs a trained profile (``make run`` first). Prints, per path: how many classes stay nearest
their own held-out clips, and each failure as (own FAD / nearest FAD, nearest class).

    .venv/bin/python benchmarks/bench_decoder_consistency.py --profile cpu --clips 10
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from foley_core.core.audio import read_audio
from foley_core.core.config import load_profile
from foley_core.data.ingest import load_manifest
from foley_core.evaluation import class_consistency, consistent_classes
from foley_core.ldm.components import LdmComponents
from foley_core.ldm.mel import griffin_lim
from foley_core.ldm.sampling import mel_to_waveform, reconstruct
from foley_core.metrics import make_embedder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="cpu")
    parser.add_argument("--clips", type=int, default=10, help="real training clips per class")
    parser.add_argument("--griffinlim-iters", type=int, default=32)
    args = parser.parse_args()

    profile = load_profile(args.profile)
    embedder = make_embedder("logmel")
    manifest = load_manifest(profile.artifact_dir("dataset"), profile.class_names)
    components = LdmComponents.load(profile.artifact_dir("ldm"))
    samples = profile.audio.clip_samples

    references, paths = {}, {"real clips": {}, "griffin-lim on the true mel": {}, "VAE + griffin-lim": {}}
    if components.vocoder is not None:
        paths |= {"vocoder on the true mel": {}, "VAE + vocoder": {}}
    for label, rows in manifest.groupby("class"):
        val = rows[rows["split"] == "val"]
        references[label] = embedder.embed_files(list(val["abs_path"]))
        train = rows[rows["split"] == "train"].sample(min(args.clips, (rows["split"] == "train").sum()), random_state=0)
        waves = torch.stack([torch.from_numpy(read_audio(Path(p))[0]).float().reshape(-1)[:samples] for p in train["abs_path"]])
        with torch.no_grad():
            log_mel = components.front_end(waves)
            decoded, vae_wave = reconstruct(components, waves)
            outputs = {
                "real clips": waves,
                "griffin-lim on the true mel": griffin_lim(log_mel, components.audio, args.griffinlim_iters),
                "VAE + griffin-lim": griffin_lim(decoded, components.audio, args.griffinlim_iters),
            }
            if components.vocoder is not None:
                outputs |= {"vocoder on the true mel": mel_to_waveform(components, log_mel), "VAE + vocoder": vae_wave}
        for name, audio in outputs.items():
            paths[name][label] = embedder.embed(list(audio.numpy()), profile.audio.sample_rate)

    print(f"{'path':30s} consistent  failures (own / nearest FAD, nearest class)")
    for name, embeddings in paths.items():
        table = class_consistency(embeddings, references)
        good = consistent_classes(table)
        failures = ", ".join(
            f"{c} ({table.loc[c, c] / table.loc[c].min():.2f}, {table.loc[c].idxmin()})" for c in table.index if c not in good
        )
        print(f"{name:30s} {len(good)}/{len(table)}         {failures or '-'}")


if __name__ == "__main__":
    main()
