"""The steps table: sampler x number of steps -> quality and speed of the selected clips, on a trained model.

    .venv/bin/python benchmarks/bench_samplers.py                       # cpu profile's promoted model, 10 clips/class
    .venv/bin/python benchmarks/bench_samplers.py --steps 5,25 --clips 4 --precision bf16 --json out.json
    .venv/bin/python benchmarks/bench_samplers.py --profile smoke --override '{"paths": {"artifacts_dir": "/tmp/a"}}'

For each sampler (DDIM, DPM-Solver++) and step count (default 5, 10, 25, 50, 200), every class of the profile
generates ``--clips`` selected clips the way a submission makes them (``foley_core.generation.submission.
generate_selected``: the class's prompt, candidates, guidance, CLAP floor and ceiling, multi-target selection for
a class without a floor, the class's own model when ``ldm.models`` routes it), with the same seeds in every
setting (``slot_seed(profile.seed, class, slot)``). Regeneration is off by default (``--max-regenerations 0``:
one attempt, the best of the class's candidates), so every setting does the same work; raise it to count
regenerations in the time, as the pipeline does.

Reported per setting, as the evaluation stage computes them (``foley_core.evaluation.evaluate_generation``):
FAD and KAD of each class's selected clips to its held-out real clips (``reference_rows``), with the profile's
embedder (log-mel statistics for cpu/smoke), averaged over classes; the mean CLAP score of the selected clips;
seconds per selected clip (generation and scoring; not the distance computation); how many slots' best
candidate met the class's CLAP floor ("accepted"; the others would be regenerated), and regenerations. FAD needs at
least 2 clips per class, so ``--clips`` >= 2.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="cpu", help="profile name or YAML path (default cpu)")
    parser.add_argument("--override", default=None, help="JSON deep-merged over the profile, as load_profile's overrides")
    parser.add_argument("--model", type=Path, help="a saved pipeline (default: the profile's pipelines/latest)")
    parser.add_argument("--samplers", default="ddim,dpmsolver++")
    parser.add_argument("--steps", default="5,10,25,50,200", help="comma list of step counts")
    parser.add_argument("--clips", type=int, help="selected clips per class (default: generation.clips_per_class)")
    parser.add_argument("--classes", help="comma list (default: every class of the profile)")
    parser.add_argument("--precision", choices=["fp32", "bf16", "fp16"], default="fp32", help="the UNet's dtype")
    parser.add_argument("--device", default="cpu", help="auto | cpu | cuda | cuda:N")
    parser.add_argument("--max-regenerations", type=int, default=0)
    parser.add_argument("--json", type=Path, help="default: <artifacts>/benchmarks/samplers.json")
    args = parser.parse_args(argv)
    try:
        args.steps = [int(s) for s in args.steps.split(",")]
    except ValueError:
        parser.error(f"--steps must be a comma list of integers, got {args.steps!r}")
    args.samplers = args.samplers.split(",")
    if any(s < 1 for s in args.steps):
        parser.error("every step count must be >= 1")
    if unknown := set(args.samplers) - {"ddim", "dpmsolver++"}:
        parser.error(f"unknown samplers {sorted(unknown)}; use ddim, dpmsolver++")
    if args.clips is not None and args.clips < 2:
        parser.error("--clips must be >= 2: FAD fits a covariance per class")
    if args.max_regenerations < 0:
        parser.error("--max-regenerations must be >= 0")
    return args


def run(args) -> dict:
    from foley_core.core.config import load_profile
    from foley_core.core.layout import layout
    from foley_core.data.ingest import load_manifest
    from foley_core.evaluation import distance_row, make_profile_embedder, reference_description, reference_rows
    from foley_core.generation.pipeline import FoleyPipeline, resolve_device
    from foley_core.generation.submission import generate_selected, pipeline_for_class
    from foley_core.registry import latest_pipeline_dir

    overrides = json.loads(args.override) if args.override else {}
    overrides.setdefault("generation", {})["max_regenerations"] = args.max_regenerations
    profile = load_profile(args.profile, overrides)
    classes = profile.class_names
    if args.classes:
        unknown = set(args.classes.split(",")) - set(classes)
        if unknown:
            raise SystemExit(f"unknown classes {sorted(unknown)}; the profile has {classes}")
        classes = [c for c in classes if c in args.classes.split(",")]
    clips = args.clips or profile.generation.clips_per_class
    if clips < 2:
        raise SystemExit("FAD needs at least 2 clips per class: pass --clips 2 or more")
    folder = args.model or latest_pipeline_dir(profile)
    device = resolve_device(args.device)
    default = FoleyPipeline.from_pretrained(folder, profile).to(device, args.precision)
    loaded: dict = {}
    pipelines = {c: pipeline_for_class(default, folder, profile, c, loaded) for c in classes}
    for p in {id(p): p for p in pipelines.values()}.values():
        p.to(device, args.precision)

    where = layout(profile)
    embedder = make_profile_embedder(profile)
    manifest = load_manifest(where.dataset, classes)
    references = {c: embedder.embed_files(list(reference_rows(rows)["abs_path"])) for c, rows in manifest.groupby("class")}
    missing = [c for c in classes if c not in references]
    if missing:
        raise SystemExit(f"no held-out clips for {missing} in {where.dataset}")

    default(["warm up"], n_candidates=1, seeds=0, steps=1)  # one-time costs out of the first setting's time
    rows = []
    for sampler in args.samplers:
        for steps in args.steps:
            per_class, seconds, regenerations, accepted = {}, 0.0, 0, 0
            for label in classes:
                pipeline = pipelines[label]
                pipeline.sampler, pipeline.steps = sampler, steps
                started = time.perf_counter()
                gen = generate_selected(pipeline, profile, label, clips, stage=f"{sampler} {steps} steps {label}")
                elapsed = time.perf_counter() - started
                summary = gen.summary()
                emb = embedder.embed(list(gen.selected), gen.sample_rate)
                per_class[label] = {**distance_row(emb, references[label]), "clap": summary["mean_selected_score"],
                                    "seconds": elapsed, "s_per_clip": elapsed / clips,
                                    "regenerations": summary["regenerations"], "accepted": summary["accepted"]}  # fmt: skip
                seconds += elapsed
                regenerations += summary["regenerations"]
                accepted += summary["accepted"]
            rows.append({
                "sampler": sampler, "steps": steps, "precision": args.precision,
                "fad": float(np.mean([v["fad"] for v in per_class.values()])),
                "kad": float(np.mean([v["kad"] for v in per_class.values()])),
                "clap": float(np.mean([v["clap"] for v in per_class.values()])),
                "s_per_clip": seconds / (clips * len(classes)), "regenerations": regenerations,
                "accepted": accepted, "per_class": per_class,
            })  # fmt: skip
            print(f"  {sampler} {steps} steps: FAD {rows[-1]['fad']:.4g}, KAD {rows[-1]['kad']:.4g}, "
                  f"CLAP {rows[-1]['clap']:.3f}, {rows[-1]['s_per_clip']:.2f} s/clip", file=sys.stderr)
    import torch

    return {
        "profile": profile.name, "model": str(Path(folder).resolve()), "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch_threads": torch.get_num_threads(), "embedder": embedder.name, "reference": reference_description(profile),
        "classes": classes, "clips_per_class": clips, "max_regenerations": args.max_regenerations,
        "clip_seconds": profile.audio.clip_seconds, "rows": rows,
        "default_json": str(where.root / "benchmarks" / "samplers.json"),
    }  # fmt: skip


def render(report: dict) -> str:
    lines = [
        f"model: {report['model']} (profile {report['profile']}), device {report['device']} ({report['device_name']}, "
        f"torch threads {report['torch_threads']})",
        f"{report['clips_per_class']} selected clips x {len(report['classes'])} classes per setting, same seeds; "
        f"max regenerations {report['max_regenerations']}; distances: {report['embedder']} embedder against "
        f"{report['reference']}; mean over classes",
        "",
        "| sampler | steps | precision | FAD | KAD | CLAP (selected) | s/clip | accepted | regenerations |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    total = report["clips_per_class"] * len(report["classes"])
    for r in report["rows"]:
        lines.append(f"| {r['sampler']} | {r['steps']} | {r['precision']} | {r['fad']:.4g} | {r['kad']:.4g} | "
                     f"{r['clap']:.3f} | {r['s_per_clip']:.2f} | {r['accepted']}/{total} | {r['regenerations']} |")  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    report = run(args)
    print(render(report))
    out = args.json or Path(report["default_json"])
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, allow_nan=True))
    print(f"wrote {out}")
    if not all(math.isfinite(r[k]) for r in report["rows"] for k in ("fad", "kad", "clap", "s_per_clip")):
        print("warning: some numbers are not finite", file=sys.stderr)
    return report


if __name__ == "__main__":
    main()
