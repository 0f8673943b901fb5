"""Generation speed on CPU (prints numbers; see docs/benchmarks.md).

    .venv/bin/python benchmarks/bench_generation.py [--steps 25] [--repeats 2]

1. N=4 candidates in one batched pass vs 4 sequential single-clip calls (target: >= 2.5x).
2. Our sampling loop vs diffusers' AudioLDMPipeline on identical components, steps and
   guidance (target: ratio <= 1.0). AudioLDMPipeline gets the conditioning as prompt_embeds,
   since our CLAP is not its text encoder; the UNet has no frequency channel so both can run it.
3. Seconds of audio generated per second of wall time for the trained cpu-profile model
   (when `foley run --profile cpu` has produced one), CLAP selection included.
"""

from __future__ import annotations

import argparse
import time
import warnings

import torch

import foley_core  # noqa: F401
from foley_core.core.config import UnetConfig, VaeConfig, load_profile
from foley_core.ldm.components import LdmComponents
from foley_core.ldm.models import build_train_scheduler, build_unet, build_vae, build_vocoder
from foley_core.ldm.sampling import generate_waveforms


def best_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return min(times)


def components(profile) -> LdmComponents:
    torch.manual_seed(0)
    unet_cfg = UnetConfig(block_out_channels=[32, 64, 64], frequency_channel=False, prediction_type="epsilon",
                          beta_schedule="scaled_linear")
    vae = build_vae(VaeConfig(block_out_channels=[16, 32, 32], latent_channels=8))
    unet = build_unet(unet_cfg, 8, 512)
    vocoder = build_vocoder(profile.ldm.vocoder, profile.audio)
    scheduler = dict(build_train_scheduler(unet_cfg).config)
    return LdmComponents(vae=vae, unet=unet, vocoder=vocoder, scheduler_config=scheduler, audio=profile.audio)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    profile = load_profile("cpu")
    ldm = components(profile)
    cond = torch.nn.functional.normalize(torch.randn(4, 512), dim=-1)
    uncond = torch.zeros(512)
    print(f"components: UNet {sum(p.numel() for p in ldm.unet.parameters()) / 1e6:.2f}M, 4 s clips, {args.steps} DDIM steps, "
          f"guidance 2.5, torch threads {torch.get_num_threads()}")

    def run(rows: torch.Tensor, seed: int = 0):
        gens = [torch.Generator().manual_seed(seed + i) for i in range(len(rows))]
        return generate_waveforms(ldm, rows, uncond, guidance_scale=2.5, generators=gens, steps=args.steps)

    batched = best_time(lambda: run(cond), args.repeats)
    sequential = best_time(lambda: [run(cond[i : i + 1], i) for i in range(4)], args.repeats)
    print(f"1. N=4 candidates: batched {batched:.2f}s, sequential {sequential:.2f}s -> speed-up {sequential / batched:.2f}x")

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from diffusers import AudioLDMPipeline, DDIMScheduler
        from transformers import ClapTextConfig, ClapTextModelWithProjection

        # never called (prompt_embeds are given); the pipeline only reads its dtype
        text_encoder = ClapTextModelWithProjection(ClapTextConfig(vocab_size=64, hidden_size=16, num_hidden_layers=1,
                                                                  num_attention_heads=2, intermediate_size=16,
                                                                  projection_dim=512))
        pipe = AudioLDMPipeline(vae=ldm.vae, text_encoder=text_encoder, tokenizer=None, unet=ldm.unet,
                                scheduler=DDIMScheduler.from_config(ldm.scheduler_config), vocoder=ldm.vocoder)
        pipe.set_progress_bar_config(disable=True)

        def reference():
            gens = [torch.Generator().manual_seed(i) for i in range(4)]
            return pipe(prompt_embeds=cond, negative_prompt_embeds=torch.zeros_like(cond), num_inference_steps=args.steps,
                        guidance_scale=2.5, audio_length_in_s=profile.audio.clip_seconds, generator=gens,
                        output_type="np").audios

        # alternate the two so drift in machine load hits both alike; keep each one's best
        ours_times, theirs_times = [], []
        for _ in range(args.repeats):
            theirs_times.append(best_time(reference, 1))
            ours_times.append(best_time(lambda: run(cond), 1))
        ours, theirs = min(ours_times), min(theirs_times)
    print(f"2. same components, 4 clips: ours {ours:.2f}s, diffusers AudioLDMPipeline {theirs:.2f}s -> ratio {ours / theirs:.2f}")

    try:
        from foley_core.generation.pipeline import FoleyPipeline
        from foley_core.registry import latest_pipeline_dir

        trained = FoleyPipeline.from_pretrained(latest_pipeline_dir(profile), profile)
    except FileNotFoundError as exc:
        print(f"3. skipped: {exc}")
        return
    prompts = [c.prompts[0] for c in profile.classes]
    seconds = best_time(lambda: trained(prompts, n_candidates=3, seeds=0), 1)
    audio = len(prompts) * profile.audio.clip_seconds
    print(f"3. cpu profile model: {len(prompts)} clips (3 candidates each, CLAP-selected, {trained.steps} steps) in "
          f"{seconds:.1f}s -> {audio / seconds:.2f} s of audio per s ({3 * audio / seconds:.2f} incl. rejected candidates)")


if __name__ == "__main__":
    main()
