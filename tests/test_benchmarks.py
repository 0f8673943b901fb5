"""The speed benchmarks run, at toy sizes, and report finite positive numbers.

- ``benchmarks/bench_paper_size.py``: the GPU script. ``--size tiny`` runs it on the CPU in seconds, in a
  subprocess that cannot import soundfile, librosa, pydantic, dagster or laion_clap (as on the GPU machine,
  which has torch, transformers and numpy, and diffusers as a carried wheel), so the script must fall back to its
  mirror loop; the mirror loop must give FoleyPipeline's waveforms and scores bit for bit.
- ``benchmarks/bench_samplers.py``: the steps table on the session's smoke model.
"""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import smoke_overrides

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "benchmarks"
GPU_MACHINE_LACKS = ("soundfile", "librosa", "soxr", "pydantic", "dagster", "laion_clap")


def load(name: str):
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def positive(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


def test_paper_size_script_imports_nothing_beyond_torch_and_numpy():
    code = ("import sys; sys.path.insert(0, 'benchmarks'); import bench_paper_size; "
            "print([m for m in ('soundfile', 'dagster', 'laion_clap', 'foley_core', 'diffusers', 'transformers', "
            "'librosa', 'pydantic') if m in sys.modules])")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_paper_size_tiny_runs_without_foley_core_and_reports_finite_positive_numbers(tmp_path):
    """As on the GPU machine: foley_core's imports fail, so ``--engine auto`` takes the mirror loop."""
    out_json = tmp_path / "paper_size.json"
    argv = ["bench_paper_size.py", "--size", "tiny", "--device", "cpu", "--steps-paper", "3", "--steps-fast", "2",
            "--clips", "1", "--json", str(out_json)]  # fmt: skip
    code = (f"import sys, runpy\nfor m in {GPU_MACHINE_LACKS!r}: sys.modules[m] = None\n"
            f"sys.argv = {argv!r}\nrunpy.run_path('benchmarks/bench_paper_size.py', run_name='__main__')")  # fmt: skip
    run = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads(out_json.read_text())
    assert report["engine"].startswith("mirror") and "foley_core not used" in " ".join(report["notes"])
    assert report["device_name"] and report["scorer"].startswith("cheap")
    assert [s["name"] for s in report["settings"]] == ["paper", "fast"]
    assert report["settings"][1]["precision"] == "bf16" and report["settings"][1]["sampler"] == "dpmsolver++"
    for setting in report["settings"]:
        assert setting["batching"]["cond_uncond_one_batch"], setting["batching"]
        for key in ("mean_s_per_clip", "projected_hours_700", "peak_memory_bytes", "speedup_vs_paper"):
            assert positive(setting[key]), (setting["name"], key, setting[key])
        assert len(setting["classes"]) == 7
        for row in setting["classes"]:
            assert positive(row["s_per_clip"]) and positive(row["s_per_candidate"]) and row["finite_audio"], row
        mvm = next(r for r in setting["classes"] if r["class"] == "MovingMotorVehicle")
        assert mvm["candidates"] == 10 and mvm["guided"]
        gun = next(r for r in setting["classes"] if r["class"] == "GunShot")
        assert not gun["guided"] and gun["max_rows_per_unet_call"] == 3  # guidance 1.0: no unconditional rows
        assert mvm["max_rows_per_unet_call"] == 20  # 10 candidates + their unconditional rows in one batch
    for label in ("| paper | ddim | 3 | fp32 |", "| fast | dpmsolver++ | 2 | bf16 |", "| MovingMotorVehicle | 10 |"):
        assert label in run.stdout, run.stdout


def test_paper_size_tiny_runs_through_foley_pipeline(capsys):
    bench = load("bench_paper_size")
    report = bench.main(["--size", "tiny", "--engine", "foley", "--scorer", "htsat", "--steps-paper", "2",
                         "--steps-fast", "2", "--clips", "2", "--settings", "paper,fast-fp32",
                         "--classes", "DogBark,GunShot"])  # fmt: skip
    assert report["engine"].startswith("foley") and report["scorer"].startswith("htsat")
    for setting in report["settings"]:
        assert positive(setting["mean_s_per_clip"]) and positive(setting["projected_hours_700"])
        assert setting["batching"]["cond_uncond_one_batch"]
        assert all(row["clips"] == 2 for row in setting["classes"])
    assert "| fast-fp32 | dpmsolver++ | 2 | fp32 |" in capsys.readouterr().out


def test_paper_setting_projected_from_two_step_counts_is_their_line(capsys):
    """On a CPU the paper's 200 steps are timed at two small step counts and extrapolated: the projection
    is the line through the two measurements, and the table says it was projected."""
    bench = load("bench_paper_size")
    report = bench.main(["--size", "tiny", "--engine", "mirror", "--steps-paper", "40", "--paper-from-steps", "2,4",
                         "--settings", "paper", "--clips", "1", "--classes", "GunShot"])  # fmt: skip
    row = report["settings"][0]["classes"][0]
    low, high = row["measured_s_per_clip"]["2"], row["measured_s_per_clip"]["4"]
    assert row["projected_from_steps"] == [2, 4] and positive(low) and positive(high)
    assert row["s_per_clip"] == pytest.approx(low + (40 - 2) * (high - low) / 2)
    assert report["settings"][0]["steps"] == 40
    assert "| paper | ddim | 40 (projected from 2 and 4) | fp32 |" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        bench.parse_args(["--paper-from-steps", "4,2"])


@pytest.mark.parametrize("scorer", ["cheap", "htsat"])
def test_mirror_loop_gives_foley_pipelines_waveforms_and_scores(scorer):
    bench = load("bench_paper_size")
    parts = bench.build_components("tiny")
    score = bench.build_scorer(scorer, "tiny", parts.sample_rate)
    mirror, foley = bench.MirrorEngine(parts, score), bench.FoleyEngine(parts, score)
    for sampler, guidance, precision in (("ddim", 2.5, "fp32"), ("dpmsolver++", 1.0, "fp32"), ("dpmsolver++", 3.0, "bf16")):
        kwargs = dict(n_candidates=3, guidance_scale=guidance, seeds=[5, 6], steps=3, sampler=sampler)
        a = mirror.to("cpu", precision)(["a dog bark", "rain"], **kwargs)
        b = foley.to("cpu", precision)(["a dog bark", "rain"], **kwargs)
        np.testing.assert_array_equal(a.waveforms, b.waveforms)
        np.testing.assert_array_equal(a.scores, b.scores)
        np.testing.assert_array_equal(a.best, b.best)


def test_built_in_class_table_is_configs_paper_yaml():
    bench = load("bench_paper_size")
    classes, source = bench.paper_classes()
    assert source == "configs/paper.yaml"
    assert classes == bench.PAPER_CLASSES


def test_samplers_table_on_the_smoke_model(smoke_run, tmp_path, capsys):
    bench = load("bench_samplers")
    out_json = tmp_path / "samplers.json"
    report = bench.main(["--profile", "smoke", "--override", json.dumps(smoke_overrides(smoke_run["root"])),
                         "--steps", "2,3", "--clips", "2", "--json", str(out_json)])  # fmt: skip
    printed = capsys.readouterr().out
    assert json.loads(out_json.read_text())["rows"] == json.loads(json.dumps(report["rows"]))
    assert [(r["sampler"], r["steps"]) for r in report["rows"]] == [
        ("ddim", 2), ("ddim", 3), ("dpmsolver++", 2), ("dpmsolver++", 3)]
    for row in report["rows"]:
        assert all(math.isfinite(row[k]) for k in ("fad", "kad", "clap")), row
        assert positive(row["s_per_clip"]) and row["fad"] >= 0
        assert set(row["per_class"]) == set(smoke_run["profile"].class_names)
        assert f"| {row['sampler']} | {row['steps']} | fp32 |" in printed
    assert printed.count("\n| ") >= 5  # header + 4 rows


@pytest.mark.parametrize("model,setting,metric", [("vocoder", "steps=3", "mrstft"), ("unet", "lr_schedule=cosine", "val_loss")])
def test_training_variant_is_compared_with_the_profiles_network_on_validation_clips(smoke_run, tmp_path, model, setting, metric):
    bench = load("bench_training_variants")
    report = bench.main(["--profile", "smoke", "--override", json.dumps(smoke_overrides(smoke_run["root"])),
                         "--model", model, "--set", setting, "--out", str(tmp_path)])  # fmt: skip
    assert report["settings"] == dict([setting.split("=")]) and report["validation_clips"] > 0
    assert positive(report["profile's"][metric]) and positive(report["variant"][metric])
    assert list(tmp_path.iterdir())  # the variant trained into the scratch folder, not the profile's artifacts


def test_lora_benchmark_times_the_full_fine_tune_and_each_rank(smoke_run, tmp_path, capsys):
    bench = load("bench_transfer_lora")
    report = bench.main(["--profile", "smoke", "--override", json.dumps(smoke_overrides(smoke_run["root"])),
                         "--steps", "2", "--ranks", "2", "--clips", "8", "--out", str(tmp_path)])  # fmt: skip
    full, lora = report
    assert full["unet"] == "full" and lora["unet"] == "LoRA rank 2"
    assert 0 < lora["trainable"] < full["trainable"] / 4 and positive(full["s_per_step"]) and positive(lora["s_per_step"])
    assert "LoRA rank 2" in capsys.readouterr().out
    assert {p.name for p in tmp_path.iterdir()} == {"rank-full", "rank-2"}  # scratch folder, not the profile's artifacts


def test_step_precision_benchmark_prints_both_precisions_per_network():
    """bench_step_precision.py on the smoke profile: one row per network, fp32 and bf16 step times > 0."""
    result = subprocess.run([sys.executable, str(BENCH / "bench_step_precision.py"), "--profile", "smoke",
                             "--steps", "1", "--warmup", "0"], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [line.split() for line in result.stdout.splitlines() if line.split()[:1] in (["clap"], ["vae"], ["vocoder"], ["unet"])]
    assert [r[0] for r in rows] == ["clap", "vae", "vocoder", "unet"], result.stdout
    for row in rows:
        fp32, bf16, ratio = float(row[2]), float(row[3]), float(row[4])
        assert fp32 >= 0 and bf16 >= 0 and ratio > 0 and math.isfinite(ratio)
    assert "native bf16:" in result.stdout


# ------------------------------------------------------------------- benchmarks/rehearse_paper.py


def test_paper_rehearsal_tiny_builds_inputs_the_run_reads_and_changes_only_counts(tmp_path):
    """``--size tiny --check``: the AudioLDM folder, the LAION checkpoint (its tokenizer taken from the AudioLDM
    folder), the VGGish weights and the dev set load through the code `foley run` reads them with, and the
    profile file differs from configs/paper.yaml only in paths, counts and the device."""
    from foley_core.core.config import load_profile

    rehearse = load("rehearse_paper")
    out_json = tmp_path / "check.json"
    report = rehearse.main(["--size", "tiny", "--work", str(tmp_path / "work"), "--check", "--json", str(out_json)],
                           echo=lambda line: None)  # fmt: skip
    assert report["status"] == "checked" and json.loads(out_json.read_text())["status"] == "checked"
    check = report["check"]
    assert check["dev_files_per_class"] == rehearse.dev_counts(21) == dict.fromkeys(rehearse.DCASE_DEV_COUNTS, 3)
    assert check["rejected_files"] == 0
    assert check["laion_tokenizer_vocab"] == report["inputs"]["models"]["audioldm"]["tokenizer_vocab"]
    assert check["conditioner"]["kind"] == "audioldm_text" and check["conditioner"]["max_abs_diff_vs_full_padding"] < 1e-5
    assert check["laion_text_embedding"] == [1, 512]

    rehearsal = load_profile(report["profile_file"]).model_dump(mode="json")
    paper = load_profile("paper").model_dump(mode="json")
    allowed = {("paths",), ("data", "sources"), ("clap", "checkpoint"), ("ldm", "pretrained_path"),
               ("finetune", "steps"), ("generation", "steps"), ("generation", "clips_per_class"),
               ("generation", "max_regenerations"), ("generation", "device"), ("generation", "precision"),
               ("trainer", "accelerator"), ("trainer", "precision"), ("evaluation", "vggish_weights"),
               ("audio", "clip_seconds"), ("transfer", "source"), ("transfer", "steps"), ("transfer", "vocoder_steps"),
               ("transfer", "clap_steps"), ("transfer", "eval_clips_per_class"),
               ("transfer", "val_fraction")}  # fmt: skip

    def changed(a, b, path=()):
        if path in allowed or path[:1] == ("paths",):
            return []
        if isinstance(a, dict) and isinstance(b, dict):
            return [c for key in a.keys() | b.keys() for c in changed(a.get(key), b.get(key), (*path, key))]
        return [] if a == b else [path]

    assert changed(rehearsal, paper) == []
    assert rehearsal["clap"]["tokenizer_path"] is None  # the paper default: the AudioLDM folder's tokenizer/
    assert rehearsal["audio"]["clip_seconds"] == 1.0  # tiny only: the paper size keeps 4 s
    if paper["transfer"]["source"]:  # the graph's dev-set fine-tune learns the rehearsal's dev set
        assert rehearsal["transfer"]["source"] == report["inputs"]["paths"]["dev_set"]

    again = rehearse.build_inputs(tmp_path / "work", "tiny", 21, 1, echo=lambda line: None)
    assert again["reused"] == {"models": True, "dev_set": True} and again["paths"] == report["inputs"]["paths"]


def test_paper_rehearsal_dev_set_has_the_dcase_counts():
    rehearse = load("rehearse_paper")
    assert rehearse.dev_counts(4850) == rehearse.DCASE_DEV_COUNTS and sum(rehearse.DCASE_DEV_COUNTS.values()) == 4850
    small = rehearse.dev_counts(140)
    assert sum(small.values()) == 140 and min(small.values()) >= 3
    assert max(small, key=small.get) == "Keyboard" and min(small, key=small.get) == "MovingMotorVehicle"


def test_paper_rehearsal_times_each_stage_line_and_the_peak_memory_of_the_process_tree(tmp_path):
    """The stage table comes from `foley run`'s lines (orchestration/runner.py's format), the peak from
    polling the child's process tree: a stand-in child prints three lines and holds ~300 MB in a grandchild."""
    rehearse = load("rehearse_paper")
    label = "foley_dataset [DogBark]"
    lines = [f"  {label:<58} {1.25:7.1f}s  run 0123abcd", f"  {'clap_model':<58} {12.0:7.1f}s  run 4567ef01",
             f"  {'foley_dataset [Rain]':<58} fresh, skipped",
             f"  {'evaluation_metrics':<58} {3.0:7.1f}s  run 89ab2345  checks failed: evaluation_metrics:no_quality_regression"]  # fmt: skip
    code = ("import subprocess, sys, time\n"
            f"for line in {lines[:2]!r}: print(line, flush=True)\n"
            "child = subprocess.Popen([sys.executable, '-c', 'import time; b = bytearray(300 * 2**20); "
            "b[::4096] = b\"x\" * len(b[::4096]); time.sleep(1.5)'])\n"
            "child.wait()\n"
            f"for line in {lines[2:]!r}: print(line, flush=True)\n")  # fmt: skip
    report = {"stage_lines": [], "stages": []}
    seen = []
    returncode = rehearse.run_foley([sys.executable, "-c", code], tmp_path, report, lambda: None, seen.append, None)
    assert returncode == 0 and seen[:2] == lines[:2]
    stages = {s["stage"]: s for s in report["stages"]}
    assert list(stages) == ["foley_dataset", "clap_model", "evaluation_metrics"]
    assert stages["foley_dataset"]["seconds"] == 1.2 and stages["foley_dataset"]["partitions"] == 1
    assert stages["foley_dataset"]["skipped"] == 1 and stages["clap_model"]["seconds"] == 12.0
    assert stages["evaluation_metrics"]["failed_checks"] == ["checks failed: evaluation_metrics:no_quality_regression"]
    assert report["run_peak_rss_bytes"] > 300 * 2**20  # the grandchild's pages were counted
    assert (tmp_path / "foley-run.log").read_text().splitlines() == lines


def test_paper_rehearsal_resume_keeps_earlier_times_and_refuses_another_profile(tmp_path):
    """``--resume``: the earlier invocation's timed stages and peak carry over, its skipped lines do not, and
    a run folder written for other settings is refused rather than mixed into the table."""
    rehearse = load("rehearse_paper")
    (tmp_path / "paper-rehearsal.yaml").write_text("profile: a\n")
    previous = {"stage_lines": [{"label": "clap_model", "seconds": 5.0, "run": "r1", "note": "", "peak_rss_bytes": 10},
                                {"label": "foley_dataset [Rain]", "skipped": True, "peak_rss_bytes": 3}],
                "run_peak_rss_bytes": 7 * 2**30, "run_wall_s": 100.0}  # fmt: skip
    carried = rehearse.resume_from(previous, "profile: a\n", tmp_path)
    assert [r["label"] for r in carried["stage_lines"]] == ["clap_model"] and carried["stage_lines"][0]["earlier"]
    assert carried["earlier_peak_rss_bytes"] == 7 * 2**30 and carried["earlier_wall_s"] == 100.0
    assert carried["invocations"] == 2
    assert rehearse.earlier_labels(carried["stage_lines"]) == {"clap_model"}
    again = rehearse.resume_from({**previous, **carried, "run_peak_rss_bytes": 2**30, "run_wall_s": 50.0},
                                 "profile: a\n", tmp_path)  # fmt: skip
    assert again["earlier_peak_rss_bytes"] == 7 * 2**30 and again["earlier_wall_s"] == 150.0
    with pytest.raises(SystemExit, match="other settings"):
        rehearse.resume_from(previous, "profile: b\n", tmp_path)
