"""Rehearse the ``paper`` profile at its real sizes on this machine: `foley run` with random weights in the
real architectures, a DCASE-size procedural dev set, and only the counts reduced.

    .venv/bin/python benchmarks/rehearse_paper.py                          # full size (hours on 2 CPU cores)
    .venv/bin/python benchmarks/rehearse_paper.py --json rehearsal.json --steps 3 --finetune-steps 2
    .venv/bin/python benchmarks/rehearse_paper.py --size tiny --work /tmp/r  # stand-in sizes: tests

What it writes under ``--work`` (default ``artifacts/rehearsal``, gitignored), once, and reuses while its
``spec.json`` matches (``inputs/``):

- ``models/audioldm-s-full-v2/``: a diffusers AudioLDM folder (``AudioLDMPipeline.save_pretrained``,
  safetensors) with AudioLDM-S's UNet, VAE and vocoder configs and its CLAP text encoder at RoBERTa-base
  size (benchmarks/bench_paper_size.py ``build_components('paper')``: 421M parameters in all), and a
  byte-level BPE RoBERTa tokenizer built offline with roberta-base's vocabulary *size* (50,265 tokens,
  ``model_max_length`` 512); the vocoder's last layer is scaled so that random clips are audible at 16 bits;
- ``models/laion_clap/630k-audioset-best.pt``: a laion-clap ``CLAP`` with HTSAT-tiny and RoBERTa-base
  (12 layers, 514 positions, the same 50,265-token vocabulary) in the released layout (DDP ``module.``
  keys, the old ``position_ids`` buffer, numpy scalars), as tests/laion_fixtures.py writes a tiny one. The
  profile finds its tokenizer in the AudioLDM folder (``clap.tokenizer_path: null``, the paper default);
- ``models/vggish/vggish-10086976.pth``: VGGish in the torchvggish layout (foley_core.metrics.vggish);
- ``DCASEFoleySoundSynthesisDevSet/<Class>/NNNN.wav``: 4,850 four-second clips at 22,050 Hz, mono,
  16-bit, made by foley_core/data/synth.py, per class as the DCASE 2023 Task 7 dev set (DogBark 617,
  Footstep 703, GunShot 777, Keyboard 800, MovingMotorVehicle 581, Rain 741, Sneeze_Cough 631).

Then ``run/`` is emptied and ``foley run --profile run/paper-rehearsal.yaml`` runs in a child process: the
paper profile with paths under ``run/``, the files above, and these overrides only: sampler steps
(``--steps``), clips per class (``--clips-per-class``; also the transfer gate's clips per class), fine-tuning
steps (``--finetune-steps``: the adapter's, and where the profile fine-tunes on the dev set through
``transfer``, its UNet / vocoder / CLAP steps), regenerations (``--max-regenerations``), and on ``--device cpu`` the CPU in place of the GPU (trainer
``accelerator: cpu`` with ``--trainer-precision``, generation on the CPU in ``--generation-precision``).
Everything else (clip length, batch sizes, candidates, guidance, eta, data workers, the dev-set
layout) is the paper profile's. The stage lines of `foley run` are timed; the peak host memory is the
largest sum of the resident set sizes of the run's process tree (polled with psutil every 0.2 s, PSS when
children share pages) and ``ru_maxrss`` of the child. ``--json`` writes the report after every stage, so an
interrupted rehearsal leaves what completed, and ``--resume`` (same arguments) continues it: ``run/`` is
kept, `foley run` skips the stages that are fresh, and the report keeps their earlier times and peak.

``--size tiny`` builds the same files at stand-in sizes (tests/test_paper_standin.py's): seconds to build,
about a minute to run; tests/test_benchmarks.py runs it so the script cannot rot.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import platform
import re
import resource
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BENCH = Path(__file__).resolve().parent
DEV_RATE = 22050  # the DCASE dev set's format: 22,050 Hz, mono, 16-bit, 4 s
# Clips per class in the DCASE 2023 Task 7 development set (4,850 in all)
DCASE_DEV_COUNTS = {"DogBark": 617, "Footstep": 703, "GunShot": 777, "Keyboard": 800, "MovingMotorVehicle": 581,
                    "Rain": 741, "Sneeze_Cough": 631}  # fmt: skip
ROBERTA_VOCAB, ROBERTA_POSITIONS = 50265, 514  # roberta-base: the AudioLDM text encoder's and LAION's text tower's
SIZES = {
    # dev-set clips and their length; tokenizer length; the LAION text tower (layers, intermediate, positions)
    "paper": {"dev_clips": sum(DCASE_DEV_COUNTS.values()), "clip_seconds": 4.0, "max_length": 512,
              "laion_text": (12, 3072, ROBERTA_POSITIONS)},
    "tiny": {"dev_clips": 21, "clip_seconds": 1.0, "max_length": 77, "laion_text": (1, 128, 80)},
}  # fmt: skip
DEV_SET = "DCASEFoleySoundSynthesisDevSet"
SPEC_VERSION = 1  # bump when the inputs' recipe changes: a stale work folder is rebuilt
STAGE_LINE = re.compile(r"^\s+(?P<label>\S.*?)\s+(?P<seconds>\d+\.\d)s\s+run (?P<run>\w+)(?P<note>.*)$")
SKIPPED_LINE = re.compile(r"^\s+(?P<label>\S.*?)\s+fresh, skipped$")


def load_bench_paper_size():
    """benchmarks/bench_paper_size.py (its AudioLDM-S-size components), imported by path."""
    if "bench_paper_size" in sys.modules:
        return sys.modules["bench_paper_size"]
    spec = importlib.util.spec_from_file_location("bench_paper_size", BENCH / "bench_paper_size.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_paper_size"] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


# ------------------------------------------------------------------------------------------------ inputs


def dev_counts(total: int) -> dict[str, int]:
    """Clips per class: the DCASE dev set's proportions scaled to ``total`` (exactly the dev set at 4,850);
    at least 3 per class (ingest's split needs a validation clip in every class)."""
    full = sum(DCASE_DEV_COUNTS.values())
    counts = {label: max(3, math.floor(n * total / full)) for label, n in DCASE_DEV_COUNTS.items()}
    for label in sorted(DCASE_DEV_COUNTS, key=lambda c: -DCASE_DEV_COUNTS[c]):  # the remainder, largest first
        if sum(counts.values()) >= total:
            break
        counts[label] += 1
    return counts


def _synth_file(job: tuple[str, int, float, str]) -> None:
    import soundfile as sf

    from foley_core.data.synth import synthesize_clip

    label, index, seconds, path = job
    clip = synthesize_clip(label, index, sample_rate=DEV_RATE, duration_s=seconds, seed=0)
    sf.write(path, clip.audio, DEV_RATE, subtype="PCM_16")


def make_dev_set(root: Path, counts: dict[str, int], seconds: float, workers: int) -> int:
    """``root/<Class>/NNNN.wav`` in the DCASE dev-set layout, rendered by the procedural synthesiser."""
    jobs = []
    for label, count in counts.items():
        (root / label).mkdir(parents=True, exist_ok=True)
        jobs += [(label, i, seconds, str(root / label / f"{i:04d}.wav")) for i in range(count)]
    if workers > 1 and len(jobs) > 50:
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(workers) as pool:
            list(pool.map(_synth_file, jobs, chunksize=32))
    else:
        for job in jobs:
            _synth_file(job)
    return len(jobs)


def byte_level_bpe(folder: Path, vocab_size: int, model_max_length: int):
    """A RoBERTa (byte-level BPE) tokenizer with exactly ``vocab_size`` tokens, built offline: the 256 byte
    symbols, then merges of symbol pairs until the table is full (roberta-base's size at 50,265), ``<mask>``
    last as in roberta-base. The real vocabulary is not downloadable here; its size is what costs memory."""
    from transformers import RobertaTokenizer

    bench = load_bench_paper_size()
    folder.mkdir(parents=True, exist_ok=True)
    alphabet = bench.byte_level_alphabet()
    vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3}
    for char in alphabet:
        vocab[char] = len(vocab)
    merges = []
    # letters and the word-initial space symbol first: English prompts then merge into 2-symbol tokens
    common = [c for c in "Ġabcdefghijklmnopqrstuvwxyz"] + [c for c in alphabet if c not in "Ġabcdefghijklmnopqrstuvwxyz"]
    for first in common:
        for second in common:
            if len(vocab) >= vocab_size - 1:
                break
            if first + second not in vocab:
                merges.append(f"{first} {second}")
                vocab[first + second] = len(vocab)
    vocab["<mask>"] = len(vocab)
    if len(vocab) != vocab_size:
        raise ValueError(f"vocab_size {vocab_size} is below the byte alphabet ({len(vocab)})")
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    return RobertaTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=model_max_length)


def audible_vocoder(vocoder, n_mels: int, peak: float = 0.5) -> float:
    """Scale the random vocoder's last convolution so its clips peak near ``peak`` (a random HiFi-GAN is
    nearly silent, ~1e-4 at full size: 16-bit clips would be all zeros). Returns the gain."""
    import torch

    generator = torch.Generator().manual_seed(0)
    mel = torch.randn(1, 100, n_mels, generator=generator) * 2 - 5  # log-mel-like values
    with torch.no_grad():
        out = vocoder(mel).abs().max().item()
        gain = peak / max(out, 1e-12)
        vocoder.conv_post.weight.mul_(gain)
        vocoder.conv_post.bias.mul_(gain)
    return gain


def write_audioldm_folder(folder: Path, size: str, tokenizer_dir: Path) -> dict:
    """A diffusers AudioLDM folder of random AudioLDM-S-shaped components (``tiny``: stand-in widths)."""
    import torch
    from diffusers import AudioLDMPipeline, DDIMScheduler

    bench = load_bench_paper_size()
    parts = bench.build_components(size)
    vocab = int(parts.text_encoder.config.vocab_size)
    tokenizer = byte_level_bpe(tokenizer_dir, vocab, SIZES[size]["max_length"])
    gain = audible_vocoder(parts.vocoder, parts.n_mels)
    pipe = AudioLDMPipeline(vae=parts.vae, text_encoder=parts.text_encoder, tokenizer=tokenizer, unet=parts.unet,
                            scheduler=DDIMScheduler.from_config(parts.scheduler_config), vocoder=parts.vocoder)
    pipe.save_pretrained(str(folder), safe_serialization=True)
    params = {name: round(value, 1) for name, value in parts.parameters().items()}
    del pipe, parts
    torch.cuda.empty_cache() if torch.cuda.is_available() else None
    return {"parameters_M": params, "tokenizer_vocab": len(tokenizer), "tokenizer_max_length": tokenizer.model_max_length,
            "vocoder_gain": gain}  # fmt: skip


def write_laion_checkpoint(path: Path, size: str, vocab_size: int) -> dict:
    """A random laion-clap HTSAT-tiny + RoBERTa checkpoint in the released layout (tests/laion_fixtures.py's)."""
    import numpy as np
    import torch
    from transformers import RobertaConfig

    from foley_core.clap.laion import build_laion_clap

    layers, intermediate, positions = SIZES[size]["laion_text"]
    torch.manual_seed(1)
    config = RobertaConfig(vocab_size=vocab_size, hidden_size=768, num_hidden_layers=layers, num_attention_heads=12,
                           intermediate_size=intermediate, max_position_embeddings=positions, type_vocab_size=1,
                           pad_token_id=1, bos_token_id=0, eos_token_id=2, layer_norm_eps=1e-5)  # fmt: skip
    model = build_laion_clap("HTSAT-tiny", config).eval()
    state = {f"module.{k}": v for k, v in model.state_dict().items()}
    state["module.text_branch.embeddings.position_ids"] = torch.arange(positions).unsqueeze(0)  # old transformers
    checkpoint = {
        "epoch": np.int64(45), "name": f"rehearsal-{size}", "state_dict": state,
        "optimizer": {"state": {}, "param_groups": [{"lr": np.float64(1e-4), "betas": (0.9, 0.99), "eps": 1e-8,
                                                     "weight_decay": np.float32(0.0), "params": [0, 1]}]},
        "metrics": {"val_mAP": np.float64(0.41), "best_epoch": np.int32(44), "improved": np.bool_(True)},
    }  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(checkpoint, path)
    audio = sum(p.numel() for n, p in model.named_parameters() if n.startswith("audio_branch")) / 1e6
    text = sum(p.numel() for n, p in model.named_parameters() if n.startswith("text_branch")) / 1e6
    total = sum(p.numel() for p in model.parameters()) / 1e6
    return {"parameters_M": {"audio_branch": round(audio, 1), "text_branch": round(text, 1), "all": round(total, 1)}}


def write_vggish(path: Path, size: str) -> dict:
    import torch

    from foley_core.metrics.vggish import VGGish

    torch.manual_seed(2)
    model = VGGish() if size == "paper" else VGGish(channels=(4, 8, 8, 16), fc_width=32)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), path)
    return {"parameters_M": round(sum(p.numel() for p in model.parameters()) / 1e6, 1)}


def _reusable(spec_file: Path, spec: dict) -> dict | None:
    """The record of a finished build with this spec, else None (the folder is then rebuilt)."""
    if spec_file.is_file():
        recorded = json.loads(spec_file.read_text())
        if recorded.get("spec") == spec:
            return recorded
    return None


def build_models(folder: Path, size: str, echo) -> dict:
    """AudioLDM folder, LAION checkpoint and VGGish weights in ``folder`` (reused while ``spec.json`` matches)."""
    spec = {"version": SPEC_VERSION, "size": size}
    paths = {"audioldm": folder / "audioldm-s-full-v2", "laion": folder / "laion_clap/630k-audioset-best.pt",
             "vggish": folder / "vggish/vggish-10086976.pth"}  # fmt: skip
    if (recorded := _reusable(folder / "spec.json", spec)) is not None:
        echo(f"inputs: reusing the models in {folder} (delete it to rebuild)")
        return {**recorded, "paths": {k: str(v) for k, v in paths.items()}, "build_seconds": {}, "reused": True}
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    timings, described = {}, {}
    started = time.perf_counter()
    described["audioldm"] = write_audioldm_folder(paths["audioldm"], size, folder / "tokenizer-build")
    shutil.rmtree(folder / "tokenizer-build")
    timings["audioldm_folder"] = time.perf_counter() - started
    echo(f"inputs: AudioLDM folder {timings['audioldm_folder']:.1f}s {described['audioldm']['parameters_M']}")
    started = time.perf_counter()
    described["laion"] = write_laion_checkpoint(paths["laion"], size, described["audioldm"]["tokenizer_vocab"])
    timings["laion_checkpoint"] = time.perf_counter() - started
    echo(f"inputs: LAION checkpoint {timings['laion_checkpoint']:.1f}s {described['laion']['parameters_M']}")
    started = time.perf_counter()
    described["vggish"] = write_vggish(paths["vggish"], size)
    timings["vggish"] = time.perf_counter() - started
    record = {"spec": spec, "models": described, "disk_bytes": {k: _disk_bytes(v) for k, v in paths.items()},
              "build_seconds": timings}  # fmt: skip
    (folder / "spec.json").write_text(json.dumps(record, indent=2))
    return {**record, "paths": {k: str(v) for k, v in paths.items()}, "reused": False}


def build_dev_set(folder: Path, size: str, dev_clips: int, workers: int, echo) -> dict:
    """The procedural dev set in ``folder/DCASEFoleySoundSynthesisDevSet`` (reused while ``spec.json`` matches)."""
    counts, clip_seconds = dev_counts(dev_clips), SIZES[size]["clip_seconds"]
    spec = {"version": SPEC_VERSION, "dev_counts": counts, "clip_seconds": clip_seconds, "rate": DEV_RATE}
    root = folder / DEV_SET
    if (recorded := _reusable(folder / "spec.json", spec)) is not None:
        echo(f"inputs: reusing the dev set in {folder}")
        return {**recorded, "path": str(root), "build_seconds": {}, "reused": True}
    if folder.exists():
        shutil.rmtree(folder)
    started = time.perf_counter()
    made = make_dev_set(root, counts, clip_seconds, workers)
    seconds = time.perf_counter() - started
    echo(f"inputs: dev set, {made} clips of {clip_seconds:g} s at {DEV_RATE} Hz, {seconds:.1f}s")
    record = {"spec": spec, "clips": made, "disk_bytes": _disk_bytes(root), "build_seconds": {"dev_set": seconds}}
    (folder / "spec.json").write_text(json.dumps(record, indent=2))
    return {**record, "path": str(root), "reused": False}


def build_inputs(work: Path, size: str, dev_clips: int, workers: int, echo) -> dict:
    """The models (``work/inputs/models-<size>``) and the dev set (``work/inputs/dev-<size>-<clips>``), each
    built once and reused; their build times (empty when reused)."""
    models = build_models(work / "inputs" / f"models-{size}", size, echo)
    dev = build_dev_set(work / "inputs" / f"dev-{size}-{dev_clips}", size, dev_clips, workers, echo)
    return {"models": models["models"], "dev_set": {k: v for k, v in dev.items() if k not in ("build_seconds", "path")},
            "paths": {**models["paths"], "dev_set": dev["path"]},
            "build_seconds": {**models["build_seconds"], **dev["build_seconds"]},
            "reused": {"models": models["reused"], "dev_set": dev["reused"]}}  # fmt: skip


def _disk_bytes(path: Path) -> int:
    path = Path(path)
    return path.stat().st_size if path.is_file() else sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


# ------------------------------------------------------------------------------------------------ profile


def overrides(run_dir: Path, paths: dict, size: str, args) -> dict:
    """The paper profile with paths under ``run_dir``, the rehearsal's files, and only counts (and, on
    ``--device cpu``, the device) changed."""
    out = {
        "paths": {"data_dir": str(run_dir / "data"), "artifacts_dir": str(run_dir / "artifacts/paper"),
                  "outputs_dir": str(run_dir / "outputs")},
        "data": {"sources": [{"kind": "folder", "path": paths["dev_set"]},
                             {"kind": "captioned_csv", "path": str(run_dir / "data/pretrain/captions.csv")}]},
        "clap": {"checkpoint": paths["laion"]},  # tokenizer_path stays null: the AudioLDM folder's tokenizer/
        "ldm": {"pretrained_path": paths["audioldm"]},
        "finetune": {"steps": args.finetune_steps},
        "generation": {"steps": args.steps, "clips_per_class": args.clips_per_class,
                       "max_regenerations": args.max_regenerations},
        "evaluation": {"vggish_weights": paths["vggish"]},
    }  # fmt: skip
    from foley_core.core.config import load_profile

    if load_profile("paper").transfer.source:  # the graph fine-tunes the UNet on the dev set (foley_core/transfer)
        out["transfer"] = {"source": paths["dev_set"], "steps": args.finetune_steps,
                           "vocoder_steps": args.finetune_steps, "clap_steps": args.finetune_steps,
                           "eval_clips_per_class": args.clips_per_class}  # fmt: skip
        if size == "tiny":  # 3 clips per class: hold 2 out for the gate's FAD (the stand-in test's setting)
            out["transfer"]["val_fraction"] = 0.5
    if SIZES[size]["clip_seconds"] != 4.0:
        out["audio"] = {"clip_seconds": SIZES[size]["clip_seconds"]}
    if args.device == "cpu":
        out["trainer"] = {"accelerator": "cpu", "precision": args.trainer_precision}
        out["generation"].update({"device": "cpu", "precision": args.generation_precision})
    if args.num_workers is not None:
        out.setdefault("trainer", {})["num_workers"] = args.num_workers
    if args.finetune_batch_size is not None:
        out["finetune"]["batch_size"] = args.finetune_batch_size
    return out


def profile_text(overrides_: dict) -> str:
    """The effective profile as YAML: the paper profile with the rehearsal's overrides."""
    import yaml

    from foley_core.core.config import load_profile

    return yaml.safe_dump(load_profile("paper", overrides_).model_dump(mode="json"), sort_keys=False)


def write_profile(run_dir: Path, overrides_: dict) -> Path:
    """The effective profile as a file (`foley run --profile FILE`), as tests/test_paper_standin.py writes it."""
    path = run_dir / "paper-rehearsal.yaml"
    path.write_text(profile_text(overrides_))
    return path


def check_inputs(profile_file: Path, echo) -> dict:
    """``--check``: what `foley run` would read, read by the code that reads it, without the run: the profile
    file loads; ingest's discovery finds the dev set's clips per class; the LAION checkpoint loads (weights
    only, tokenizer from the AudioLDM folder) and embeds a prompt; the AudioLDM folder passes the importer's
    validation and its text encoder embeds every class prompt padded to the tokenizer's length; the VGGish
    weights load. Seconds at ``--size tiny`` (the test), a minute or two at paper size."""
    import torch

    from foley_core.clap import load_clap
    from foley_core.core.config import load_profile
    from foley_core.data.sources import discover_all
    from foley_core.generation.conditioning import load_conditioner
    from foley_core.ldm.importing import validate_audioldm_folder
    from foley_core.metrics.vggish import load_vggish

    checked: dict = {}
    profile = load_profile(profile_file)
    discovery = discover_all(profile, create_synthetic=False)
    checked["dev_files_per_class"] = {c: sum(f.label == c for f in discovery.files) for c in profile.class_names}
    checked["rejected_files"] = len(discovery.rejected)
    clap = load_clap(profile)
    prompts = [c.prompts[0] for c in profile.classes]
    checked["laion_text_embedding"] = list(clap.encode_text(prompts[:1]).shape)
    checked["laion_tokenizer_vocab"] = len(clap.tokenizer)
    validate_audioldm_folder(profile)
    conditioner = load_conditioner(profile, clap=clap)
    tokenizer = conditioner.tokenizer
    longest = tokenizer(prompts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                        return_tensors="pt")  # as diffusers' AudioLDMPipeline pads
    with torch.no_grad():
        padded = conditioner.text_encoder(longest.input_ids, attention_mask=longest.attention_mask).text_embeds
    ours = conditioner.encode(prompts)
    checked["conditioner"] = {"kind": conditioner.kind, "dim": conditioner.dim,
                              "tokenizer_max_length": tokenizer.model_max_length,
                              "max_abs_diff_vs_full_padding": float(
                                  (torch.nn.functional.normalize(padded, dim=-1) - ours).abs().max())}  # fmt: skip
    vggish = load_vggish(profile.evaluation.vggish_weights)
    checked["vggish_parameters_M"] = round(sum(p.numel() for p in vggish.parameters()) / 1e6, 1)
    echo(f"check: {json.dumps(checked)}")
    return checked


def probe_finetune_memory(profile_file: Path, echo, val_repeats: int = 1) -> dict:
    """``--probe-finetune``: the adapter fine-tune's data path at the dev set's full count, for its memory,
    on a run whose data stages have finished (``run/`` of a rehearsal stopped after them).

    Runs foley_core.generation.finetune's own steps on every target clip of the ingested dev set: the
    training clips' waveforms, log-mels and VAE posteriors (``_latents``), the text of every (clip, text)
    pair through the AudioLDM text encoder (``conditioning_text_embedder``, batched), the pairs' latents
    (``LatentConditions``), the validation clips' posteriors and ``validation_loss`` (the UNet on every
    validation clip at once, ``val_repeats`` noise draws instead of 8). One shortcut, for time only: the
    VAE encodes the first batch of 64 training clips and every other batch (training and validation)
    reuses its posteriors (the VAE's memory is one batch's, the posteriors are allocated at full size); at
    ~3-7 s per clip on 2 cores the real encode of 4,850 clips takes hours and allocates nothing more. Peak memory is this process's ru_maxrss."""
    import numpy as np
    import torch

    import foley_core.ldm.training as ldm_training
    from foley_core.core.config import load_profile
    from foley_core.core.layout import layout
    from foley_core.data.ingest import load_manifest
    from foley_core.generation import finetune
    from foley_core.generation.adapter import EmbeddingAdapter
    from foley_core.ldm.components import LdmComponents
    from foley_core.ldm.data import LatentConditions
    from foley_core.stages import conditioning_text_embedder

    encoded: list = []  # the one real VAE batch, reused for the validation clips' posteriors too

    def one_batch_posteriors(vae, images, batch: int = 64):
        if not encoded:
            posterior = vae.encode(images[:batch]).latent_dist
            encoded.extend([posterior.mean, posterior.std])
        mean, std = encoded
        reps = math.ceil(len(images) / len(mean))
        return mean.repeat(reps, 1, 1, 1)[: len(images)].clone(), std.repeat(reps, 1, 1, 1)[: len(images)].clone()

    def rss() -> float:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 2**30

    timings, peaks = {}, {}

    def step(name: str, started: float) -> None:
        timings[name], peaks[name] = round(time.perf_counter() - started, 1), round(rss(), 2)
        echo(f"probe: {name} {timings[name]}s, peak so far {peaks[name]} GiB")

    profile = load_profile(profile_file)
    manifest = load_manifest(layout(profile).dataset, profile.class_names)
    targets = manifest[manifest["is_target"].astype(str).str.lower() == "true"].rename(columns={"class": "class_"})
    train = targets[targets["split"] == "train"].reset_index(drop=True)
    val = targets[targets["split"] == "val"].reset_index(drop=True)
    started = time.perf_counter()
    components = LdmComponents.from_audioldm(profile.ldm.pretrained_path, profile.audio)
    embed_text, _, _ = conditioning_text_embedder(profile)
    step("load models", started)
    real_posteriors, real_repeats = ldm_training._posteriors, finetune.VALIDATION_REPEATS
    ldm_training._posteriors, finetune.VALIDATION_REPEATS = one_batch_posteriors, val_repeats
    try:
        with torch.no_grad():
            started = time.perf_counter()
            means, stds, anchors = finetune._latents(components, train, profile)
            step("training latents", started)
            started = time.perf_counter()
            index, texts = finetune._clip_texts(train, profile)
            text = torch.from_numpy(np.asarray(embed_text(texts), dtype=np.float32))
            pick = torch.tensor(index)
            data = LatentConditions(means[pick], stds[pick], text, profile.finetune.crop_frames, anchors[index])
            step("text embeddings and pairs", started)
            started = time.perf_counter()
            val_means, _, _ = finetune._latents(components, val, profile)
            prompts = [profile.class_config(c).prompts[0] for c in val["class_"]]
            val_text = torch.from_numpy(np.asarray(embed_text(prompts), dtype=np.float32))
            loss = finetune.validation_loss(components, EmbeddingAdapter(components.condition_dim), val_means,
                                            val_text, profile.seed)  # fmt: skip
            step(f"validation latents and loss ({val_repeats} draw)", started)
    finally:
        ldm_training._posteriors, finetune.VALIDATION_REPEATS = real_posteriors, real_repeats
    return {"train_clips": len(train), "val_clips": len(val), "pairs": len(data), "texts": len(texts),
            "latent_shape": list(means.shape[1:]), "validation_loss": loss, "seconds": timings,
            "peak_gib_after": peaks, "peak_gib": round(rss(), 2)}  # fmt: skip


# ------------------------------------------------------------------------------------------------ memory


class MemoryPoller:
    """Largest total resident memory of a process tree (the root and all its descendants), polled.

    Each sample sums the resident set sizes (cheap). A child bigger than ``FORK_BYTES`` is taken to be a
    fork of the root (a data-loader worker) that shares the root's pages copy-on-write: it counts with its
    private pages only (``/proc/PID/smaps_rollup``, ~0.5 s for a process of several GB, so such samples
    are taken at most every ``slow_interval`` s). ``mark()`` starts a new window: ``window_peak`` is the
    peak since the last mark (the stage just finished)."""

    FORK_BYTES = 256 * 2**20

    def __init__(self, pid: int, interval: float = 0.5, slow_interval: float = 3.0):
        import psutil

        self.root = psutil.Process(pid)
        self.interval, self.slow_interval = interval, slow_interval
        self.peak = 0
        self.window_peak = 0
        self.samples = 0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._private: dict[int, tuple[float, int | None]] = {}  # pid -> (when read, private bytes)
        self.loads: list[float] = []  # the 1-minute load average at each sample

    @staticmethod
    def private_bytes(pid: int) -> int | None:
        try:
            text = Path(f"/proc/{pid}/smaps_rollup").read_text()
        except OSError:
            return None
        fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
        return sum(int(fields.get(k, "0 kB").split()[0]) * 1024 for k in ("Private_Clean", "Private_Dirty"))

    def sample(self) -> int:
        import psutil

        try:
            procs = [self.root, *self.root.children(recursive=True)]
        except psutil.Error:
            return 0
        total = 0
        for proc in procs:
            try:
                rss = proc.memory_info().rss
            except psutil.Error:
                continue
            if proc is not self.root and rss > self.FORK_BYTES:
                when, private = self._private.get(proc.pid, (-math.inf, None))
                if time.monotonic() - when >= self.slow_interval:
                    private = self.private_bytes(proc.pid)
                    self._private[proc.pid] = (time.monotonic(), private)
                rss = rss if private is None else private
            total += rss
        return total

    def _run(self) -> None:
        while not self._stop.is_set():
            value = self.sample()
            with self._lock:
                try:
                    self.loads.append(os.getloadavg()[0])  # other work on the machine slows every stage
                except OSError:
                    pass
                self.samples += 1
                self.peak = max(self.peak, value)
                self.window_peak = max(self.window_peak, value)
            self._stop.wait(self.interval)

    def mark(self) -> int:
        with self._lock:
            peak, self.window_peak = self.window_peak, 0
        return peak

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def release_freed_memory() -> None:
    """glibc keeps freed heap pages; ``malloc_trim`` hands them back (a no-op elsewhere)."""
    import gc

    gc.collect()
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


# ------------------------------------------------------------------------------------------------ machine


def code_version() -> dict:
    """The commit the rehearsal ran (and files changed since), where REPO is a git checkout."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True)
        status = subprocess.run(["git", "status", "--porcelain"], cwd=REPO, capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return {"repo": str(REPO), "commit": None}
    return {"repo": str(REPO), "commit": commit.stdout.strip(), "changed": status.stdout.splitlines()}


def machine() -> dict:
    import torch

    info = {"python": platform.python_version(), "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
            "cpus": os.cpu_count(), "cpu": platform.processor() or platform.machine()}  # fmt: skip
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        fields = dict(line.split(":", 1) for line in lscpu.splitlines() if ":" in line)
        info["cpu"] = fields.get("Model name", info["cpu"]).strip()
        flags = fields.get("Flags", "").split()
        info["simd_flags"] = [f for f in flags if f.startswith(("avx", "amx", "fma", "sse4"))]
    except (OSError, subprocess.CalledProcessError, ValueError):
        pass
    try:
        info["memory_gib"] = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError):
        pass
    try:
        info["load_average_at_start"] = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        pass
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


# ------------------------------------------------------------------------------------------------ the run


def stage_name(label: str) -> tuple[str, str | None]:
    """``"foley_dataset [DogBark]"`` -> (``"foley_dataset"``, ``"DogBark"``)."""
    match = re.fullmatch(r"(.*?) \[(.*)\]", label)
    return (match.group(1), match.group(2)) if match else (label, None)


def summarise(rows: list[dict]) -> list[dict]:
    """One row per stage (a group of assets), partitions summed, in the order they first ran."""
    stages: dict[str, dict] = {}
    for row in rows:
        name, partition = stage_name(row["label"])
        stage = stages.setdefault(name, {"stage": name, "seconds": 0.0, "partitions": 0, "peak_rss_bytes": 0,
                                         "skipped": 0, "failed_checks": []})  # fmt: skip
        if row.get("skipped"):
            stage["skipped"] += 1
            continue
        stage["seconds"] += row["seconds"]
        stage["partitions"] += 1 if partition else 0
        stage["peak_rss_bytes"] = max(stage["peak_rss_bytes"], row["peak_rss_bytes"])
        if row.get("note"):
            stage["failed_checks"].append(row["note"].strip())
    return [{**s, "seconds": round(s["seconds"], 1)} for s in stages.values()]


def earlier_labels(rows: list[dict]) -> set[str]:
    """Stage lines an earlier invocation ran and timed (``--resume``): `foley run` now skips them as fresh."""
    return {row["label"] for row in rows if row.get("earlier") and not row.get("skipped")}


def resume_from(previous: dict, profile_text: str, run_dir: Path) -> dict:
    """What a resumed rehearsal carries over from the report of the invocation it continues: its timed
    stage lines (marked ``earlier``), its peak memory and its wall time. Refused unless ``run/`` holds the
    same profile file, so the stages `foley run` skips as fresh are the ones that report timed."""
    kept = run_dir / "paper-rehearsal.yaml"
    if not kept.is_file() or kept.read_text() != profile_text:
        raise SystemExit(f"--resume: {kept} is missing or was written for other settings; run without --resume")
    rows = [{**row, "earlier": True} for row in previous.get("stage_lines", []) if not row.get("skipped")]
    return {"stage_lines": rows,
            "earlier_peak_rss_bytes": max(previous.get("run_peak_rss_bytes") or 0, previous.get("earlier_peak_rss_bytes") or 0),
            "earlier_wall_s": round((previous.get("run_wall_s") or 0) + (previous.get("earlier_wall_s") or 0), 1),
            "invocations": int(previous.get("invocations", 1)) + 1}  # fmt: skip


def foley_run_command(profile_file: Path) -> list[str]:
    foley = Path(sys.executable).parent / "foley"
    command = [str(foley)] if foley.is_file() else [sys.executable, "-c", "from orchestration.cli import main; main()"]
    return [*command, "run", "--profile", str(profile_file)]


def run_foley(command: list[str], run_dir: Path, report: dict, save, echo, timeout: float | None) -> int:
    """``command`` (`foley run --profile FILE`) in a child process; each stage line timed with its peak memory."""
    env = {**os.environ, "DAGSTER_HOME": str(run_dir / "dagster_home"), "PYTHONUNBUFFERED": "1"}
    report["foley_command"] = " ".join(command)
    rows = report["stage_lines"]
    started = time.perf_counter()
    log = (run_dir / "foley-run.log").open("a")  # appended: a resumed rehearsal keeps the earlier lines
    proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            bufsize=1)  # fmt: skip
    timer = None
    if timeout:  # stop it (SIGTERM, then SIGKILL after 30 s): the report keeps what completed
        def stop() -> None:
            report["stopped_after_timeout_s"] = timeout
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()

        timer = threading.Timer(timeout, stop)
        timer.daemon = True
        timer.start()
    with MemoryPoller(proc.pid) as poller:
        last = started
        for line in proc.stdout:
            log.write(line)
            log.flush()
            echo(line.rstrip("\n"))
            now = time.perf_counter()
            if match := STAGE_LINE.match(line):
                rows.append({"label": match["label"], "seconds": float(match["seconds"]), "run": match["run"],
                             "note": match["note"].strip(), "peak_rss_bytes": poller.mark(),
                             "ended_at_s": round(now - started, 1)})  # fmt: skip
                last = now
            elif (match := SKIPPED_LINE.match(line)) and match["label"] not in earlier_labels(rows):
                rows.append({"label": match["label"], "skipped": True, "peak_rss_bytes": poller.mark()})
                last = now
            else:
                continue
            report["stages"] = summarise(rows)
            report["run_peak_rss_bytes"] = poller.peak
            report["in_progress"] = {"running_after": rows[-1]["label"], "at_s": round(now - started, 1)}
            save()
        returncode = proc.wait()
        end = time.perf_counter()
        report["run_wall_s"] = round(end - started, 1)
        report["run_peak_rss_bytes"] = poller.peak
        report["memory_samples"] = poller.samples
        if poller.loads:  # above the CPU count: other processes shared the cores, every time is pessimistic
            report["load_average_during_run"] = {"mean": round(sum(poller.loads) / len(poller.loads), 2),
                                                 "max": round(max(poller.loads), 2)}  # fmt: skip
        report["in_progress"] = None if returncode == 0 else {"since_last_stage_line_s": round(end - last, 1),
                                                               "window_peak_rss_bytes": poller.mark()}  # fmt: skip
    if timer is not None:
        timer.cancel()
    log.close()
    report["stages"] = summarise(rows)
    report["child_ru_maxrss_bytes"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    return returncode


def gib(value: int | None) -> str:
    return "-" if not value else f"{value / 2**30:.2f}"


def render(report: dict) -> str:
    lines = ["", "| stage | partitions | seconds | peak host memory (GiB) |", "|---|---|---|---|"]
    for name, seconds in report["inputs"].get("build_seconds", {}).items():
        lines.append(f"| inputs: {name} | | {seconds:.1f} | |")
    for stage in report.get("stages", []):
        note = f" (checks failed: {', '.join(stage['failed_checks'])})" if stage["failed_checks"] else ""
        lines.append(f"| {stage['stage']}{note} | {stage['partitions'] or ''} | {stage['seconds']:.1f} | "
                     f"{gib(stage['peak_rss_bytes'])} |")  # fmt: skip
    if (report.get("in_progress") or {}).get("since_last_stage_line_s") is not None:
        lines.append(f"| (unfinished: the stage after the last line) | | {report['in_progress']['since_last_stage_line_s']:.1f} | "
                     f"{gib(report['in_progress'].get('window_peak_rss_bytes'))} |")  # fmt: skip
    machine_ = report["machine"]
    earlier = f" (and {report['earlier_wall_s']} s in earlier invocations)" if report.get("earlier_wall_s") else ""
    peaks = (f"`foley run` wall: {report.get('run_wall_s', '-')} s{earlier}; peak host memory of the run's process tree: "
             f"{gib(max(report.get('run_peak_rss_bytes') or 0, report.get('earlier_peak_rss_bytes') or 0))} GiB (ru_maxrss of the child: "
             f"{gib(report.get('child_ru_maxrss_bytes'))} GiB); this script while building the inputs: "
             f"{gib(report.get('builder_ru_maxrss_bytes'))} GiB")  # fmt: skip
    within = "within" if report.get("within_memory_limit") else "OVER or unknown"
    load = report.get("load_average_during_run")
    if load:
        peaks += f"; load average during the run: mean {load['mean']}, max {load['max']} ({machine_.get('cpus')} CPUs)"
    lines += ["", f"status: {report['status']}", peaks, f"limit: {report['memory_limit_gib']} GiB -> {within}",
              f"machine: {machine_.get('cpu')}, {machine_.get('cpus')} CPUs, torch {machine_['torch']}"]  # fmt: skip
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="paper")
    parser.add_argument("--work", type=Path, default=REPO / "artifacts" / "rehearsal",
                        help="inputs/ (built once) and run/ (emptied each time) go here; default artifacts/rehearsal")
    parser.add_argument("--dev-clips", type=int, default=None,
                        help="dev-set clips (default: 4,850 at paper size, the DCASE dev set; 21 at tiny); fewer is "
                             "not the rehearsal the issue asks for, and the report says so")
    parser.add_argument("--steps", type=int, default=3, help="sampler steps (the paper: 200)")
    parser.add_argument("--clips-per-class", type=int, default=2,
                        help="clips generated per class (the paper: 100; at least 2: a FAD needs two clips)")
    parser.add_argument("--finetune-steps", type=int, default=2,
                        help="fine-tuning steps: the adapter's (the paper: 5,000) and the dev-set transfer's")
    parser.add_argument("--max-regenerations", type=int, default=0, help="CLAP-floor regenerations (the paper: 5)")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu",
                        help="cpu: trainer and generation moved to the CPU; cuda: the profile's GPU settings as they are")
    parser.add_argument("--trainer-precision", default="32-true", help="Lightning precision on --device cpu")
    parser.add_argument("--generation-precision", default="fp32", help="the UNet's sampling dtype on --device cpu")
    parser.add_argument("--num-workers", type=int, default=None, help="data-loader workers (default: the profile's, 4)")
    parser.add_argument("--finetune-batch-size", type=int, default=None, help="default: the profile's")
    parser.add_argument("--synth-workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--timeout", type=float, default=None, help="stop `foley run` after this many seconds")
    parser.add_argument("--memory-limit-gib", type=float, default=16.0)
    parser.add_argument("--json", type=Path, default=None, help="write the report here (after every stage)")
    parser.add_argument("--probe-finetune", type=Path, default=None, metavar="PROFILE_FILE",
                        help="measure the adapter fine-tune's memory at the full dev-set count on a rehearsal's "
                             "run/paper-rehearsal.yaml whose data stages finished (see probe_finetune_memory)")
    parser.add_argument("--resume", action="store_true",
                        help="continue the rehearsal that --json reported on: keep run/ so `foley run` skips the "
                             "stages that completed, and carry their times and peak memory into the report")
    parser.add_argument("--check", action="store_true",
                        help="build the inputs and the profile and load them as the run would, without `foley run`")
    args = parser.parse_args(argv)
    if args.clips_per_class < 2:
        parser.error("--clips-per-class must be at least 2 (the evaluation's FAD needs two clips of a class)")
    if args.resume and not (args.json and args.json.is_file()):
        parser.error("--resume needs --json naming the report of the rehearsal to continue")
    if args.dev_clips is None:
        args.dev_clips = SIZES[args.size]["dev_clips"]
    if args.dev_clips < 3 * len(DCASE_DEV_COUNTS):
        parser.error("--dev-clips must be at least 21 (3 per class: ingest needs a validation clip in every class)")
    return args


def main(argv: list[str] | None = None, echo=print) -> dict:
    args = parse_args(argv)
    if args.probe_finetune:
        report = {"probe_finetune": probe_finetune_memory(args.probe_finetune, echo), "machine": machine(),
                  "code": code_version(), "status": "probed"}  # fmt: skip
        if args.json:
            args.json.write_text(json.dumps(report, indent=2, default=str))
        echo(json.dumps(report["probe_finetune"], indent=2))
        return report
    work = args.work.resolve()
    run_dir = work / "run"
    report: dict = {"command": "python benchmarks/rehearse_paper.py " + " ".join(argv if argv is not None else sys.argv[1:]),
                    "size": args.size, "dev_clips": args.dev_clips, "device": args.device,
                    "counts": {"sampler_steps": args.steps, "clips_per_class": args.clips_per_class,
                               "finetune_steps": args.finetune_steps, "max_regenerations": args.max_regenerations},
                    "memory_limit_gib": args.memory_limit_gib, "machine": machine(), "code": code_version(), "stage_lines": [], "stages": [],
                    "status": "building inputs", "notes": []}  # fmt: skip
    if args.size == "paper" and args.dev_clips != SIZES["paper"]["dev_clips"]:
        report["notes"].append(f"dev set reduced to {args.dev_clips} clips (the DCASE dev set has 4,850)")

    def save() -> None:
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(report, indent=2, default=str))

    started = time.perf_counter()
    report["inputs"] = build_inputs(work, args.size, args.dev_clips, args.synth_workers, echo)
    report["builder_ru_maxrss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    release_freed_memory()  # the built models are gone: give their pages back before the run is measured
    effective = overrides(run_dir, report["inputs"]["paths"], args.size, args)
    if args.resume and not args.check:
        report.update(resume_from(json.loads(args.json.read_text()), profile_text(effective), run_dir))
        report["notes"].append(f"resumed (invocation {report['invocations']}): stages timed earlier are marked so")
    elif run_dir.exists():
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    profile_file = write_profile(run_dir, effective)
    report["profile_file"] = str(profile_file)
    if args.check:
        report["check"] = check_inputs(profile_file, echo)
        report["status"] = "checked"
        report["total_wall_s"] = round(time.perf_counter() - started, 1)
        save()
        return report
    report["status"] = "running"
    save()
    try:
        code = run_foley(foley_run_command(profile_file), run_dir, report, save, echo, args.timeout)
        report["status"] = "completed" if code == 0 else f"foley run exited with {code} (see {run_dir / 'foley-run.log'})"
        if report.get("stopped_after_timeout_s"):
            report["status"] = f"stopped by --timeout after {report['stopped_after_timeout_s']:g} s: not completed"
        if code == 0 and not report["stages"]:  # the run's output format changed: the table would be empty
            report["status"] = "completed, but no stage line of `foley run` was recognised (has its output changed?)"
    except KeyboardInterrupt:
        report["status"] = "interrupted"
        raise
    finally:
        peak = max(report.get("run_peak_rss_bytes") or 0, report.get("child_ru_maxrss_bytes") or 0,
                   report.get("earlier_peak_rss_bytes") or 0)
        report["within_memory_limit"] = bool(peak) and peak <= args.memory_limit_gib * 2**30
        report["total_wall_s"] = round(time.perf_counter() - started, 1)
        save()
    echo(render(report))
    return report


if __name__ == "__main__":
    result = main()
    sys.exit(0 if result["status"] in ("checked", "probed") or (result["status"] == "completed" and result["within_memory_limit"]) else 1)
