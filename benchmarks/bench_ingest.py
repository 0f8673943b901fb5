"""Ingestion throughput on ~1000 synthetic clips (prints clips/s).

    .venv/bin/python benchmarks/bench_ingest.py [--clips 1000] [--rate 44100]

Generates the clips once (not timed) at --rate so ingestion has to resample, then
times discovery + decode + resample + window + normalise + write + manifest.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import foley_core  # noqa: F401
from foley_core.core.audio import read_audio, resample, write_wav_atomic
from foley_core.core.config import load_profile
from foley_core.data.ingest import ingest
from foley_core.data.sources import discover_source, source_from_path
from foley_core.data.synth import DCASE_SOUND_TYPES, synthesize_clip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--clips", type=int, default=1000)
    parser.add_argument("--rate", type=int, default=44100, help="sample rate of the source files")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "source"
        per_class = -(-args.clips // len(DCASE_SOUND_TYPES))
        started = time.perf_counter()
        for label in DCASE_SOUND_TYPES:
            for index in range(per_class):
                clip = synthesize_clip(label, index, sample_rate=args.rate, duration_s=4.0)
                write_wav_atomic(root / label / f"{index:04d}.wav", clip.audio, args.rate)
        print(f"generated {per_class * 7} clips at {args.rate} Hz in {time.perf_counter() - started:.1f}s (not timed)")

        profile = load_profile("cpu", {"paths": {"artifacts_dir": str(Path(tmp) / "artifacts")}})
        started = time.perf_counter()
        found = discover_source(source_from_path(root), profile)
        result = ingest(found.files, found.rejected, Path(tmp) / "out", profile)
        seconds = time.perf_counter() - started
        n = len(result.clips)
        print(f"ingested {n} clips ({len(result.quarantined)} quarantined) in {seconds:.1f}s: {n / seconds:.1f} clips/s")

        # where the time goes, per clip
        sample = found.files[:50]
        t0 = time.perf_counter()
        decoded = [read_audio(f.path)[0][:, 0] for f in sample]
        t1 = time.perf_counter()
        [resample(a, args.rate, profile.audio.sample_rate) for a in decoded]
        t2 = time.perf_counter()
        print(f"per clip: decode {1000 * (t1 - t0) / len(sample):.1f} ms, resample {1000 * (t2 - t1) / len(sample):.1f} ms")


if __name__ == "__main__":
    main()
