"""Training step time of each network of the cpu profile in fp32 and under bf16 autocast, on this CPU.

What ``precision: auto`` decides from (foley_core/core/hardware.py): on a CPU without native bf16 the bf16
column is many times the fp32 one; with native bf16 it is smaller. Random batches at the profile's
real shapes; forward + backward + optimizer step (+ EMA for the UNet), the loss code of the modules.

    .venv/bin/python benchmarks/bench_step_precision.py --profile cpu
    ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 .venv/bin/python benchmarks/bench_step_precision.py  # no AVX-512
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_ldm import build  # noqa: E402  (the same random batches at the profile's shapes)

from foley_core.core.config import load_profile  # noqa: E402
from foley_core.core.hardware import describe_cpu, this_cpu  # noqa: E402
from foley_core.ldm.modules import UnetModule  # noqa: E402


def clap_module(profile):
    from foley_core.clap.train import ClapTrainingModule, tower_config

    cfg = tower_config(profile)
    module = ClapTrainingModule(cfg, profile.clap.learning_rate, profile.clap.steps)
    generator = torch.Generator().manual_seed(0)
    n, crop = profile.clap.batch_size, int(round(profile.clap.crop_seconds * cfg.sample_rate))
    with torch.no_grad():
        texts = module.model.text_features([f"caption {i}" for i in range(n)])
    return module, (0.1 * torch.randn(n, crop, generator=generator), texts)


def step_seconds(module, batch, steps: int, warmup: int, bf16: bool) -> float:
    optimizer = module.configure_optimizers()
    optimizer = optimizer["optimizer"] if isinstance(optimizer, dict) else optimizer
    module.train()
    for step in range(warmup + steps):
        if step == warmup:
            started = time.perf_counter()
        autocast = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
        with autocast:
            loss, _ = module.compute_loss(batch)  # every training module's loss, without Lightning's logging
        optimizer.zero_grad(set_to_none=True)
        loss.float().backward()
        optimizer.step()
        if isinstance(module, UnetModule):
            module.ema.step(module.unet.parameters())
    return (time.perf_counter() - started) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="cpu")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--models", nargs="+", default=["clap", "vae", "vocoder", "unet"])
    args = parser.parse_args()
    profile = load_profile(args.profile)
    print(f"CPU: {describe_cpu()}; native bf16: {this_cpu().native_bf16} ({this_cpu().reason}); "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"{'model':8} {'batch':>5} {'fp32 ms/step':>13} {'bf16 ms/step':>13} {'bf16/fp32':>10}")
    for which in args.models:
        times = {}
        for bf16 in (False, True):
            torch.manual_seed(0)
            module, batch = clap_module(profile) if which == "clap" else build(profile, which)
            times[bf16] = step_seconds(module, batch, args.steps, args.warmup, bf16)
        size = batch.shape[0] if torch.is_tensor(batch) else batch[0].shape[0]
        print(f"{which:8} {size:>5} {1000 * times[False]:>13.0f} {1000 * times[True]:>13.0f} "
              f"{times[True] / times[False]:>10.2f}", flush=True)


if __name__ == "__main__":
    main()
