"""Full UNet fine-tuning or LoRA for `foley finetune`? Time the fine-tune's adapter + UNet steps
both ways, from the profile's accepted model:

    .venv/bin/python benchmarks/bench_transfer_lora.py --steps 100 --ranks 4,16

Each variant trains ``--steps`` steps on the profile's own training clips. The step time does not
depend on which clips are used. Training goes into a scratch folder (``--out``), never into the
profile's artifacts. Printed per variant: trainable UNet parameters, seconds per step and the
process's peak RSS so far. Quality at the full step count is `foley finetune` with
``transfer.unet_lora_rank`` set (docs/finetune.md).
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
from pathlib import Path


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="cpu")
    parser.add_argument("--override", default=None, help="JSON merged into the profile (tests)")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--ranks", default="4,16", help="LoRA ranks to time beside the full fine-tune")
    parser.add_argument("--clips", type=int, default=64, help="training clips to draw batches from")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)

    from foley_core.core.config import load_profile
    from foley_core.core.layout import layout
    from foley_core.data.ingest import load_manifest
    from foley_core.generation.pipeline import FoleyPipeline, place
    from foley_core.registry import latest_pipeline_dir
    from foley_core.transfer import finetune_generator

    profile = load_profile(args.profile, json.loads(args.override) if args.override else None)
    base = place(FoleyPipeline.from_pretrained(latest_pipeline_dir(profile), profile), profile.generation)
    own = load_manifest(layout(profile).dataset, profile.class_names)
    rows = own[own["split"] == "train"].head(args.clips).reset_index(drop=True)
    out = args.out or Path(tempfile.mkdtemp(prefix="bench-lora-"))
    report = []
    for rank in [None] + [int(r) for r in args.ranks.split(",") if r]:
        cfg = profile.transfer.model_copy(update={"steps": args.steps, "unet_lora_rank": rank})
        run, _, _ = finetune_generator(profile.model_copy(update={"transfer": cfg}), base, rows, "unet",
                                       out / f"rank-{rank or 'full'}")
        report.append({"unet": f"LoRA rank {rank}" if rank else "full", "trainable": run["unet_trained_parameters"],
                       "s_per_step": round(run["seconds"] / max(1, run["steps"]), 4),
                       "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)})
    total = sum(p.numel() for p in base.ldm.unet.parameters())
    print(f"{'UNet fine-tune':16s} {'trainable':>12s} {'of all':>7s} {'s/step':>8s} {'peak RSS GB':>12s}")
    for row in report:
        print(f"{row['unet']:16s} {row['trainable']:12,d} {row['trainable'] / total:7.1%} {row['s_per_step']:8.3f} "
              f"{row['peak_rss_gb']:12.2f}")
    return report


if __name__ == "__main__":
    main()
