"""`foley finetune SOURCE`: the accepted model fine-tuned on a folder of one's own recordings.

The fine-tune runs for real on tiny data (the smoke model, a few recordings, a few steps).
Whether the gate passes on such data is chance, so the promotion tests fix the gate's
verdict (``foley_core.evaluation.regression``, the rule the gate applies) and check what
follows from it; the gate's numbers on real recordings are in docs/benchmarks.md."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch
import yaml
from click.testing import CliRunner
from conftest import smoke_overrides

from foley_core.cli import main
from foley_core.core.config import _deep_merge, load_profile
from foley_core.data.recordings import recording_of, split_by_recording
from foley_core.generation.pipeline import FoleyPipeline
from foley_core.registry import PIPELINE_CONFIG, latest_pipeline_dir

TINY = {"steps": 4, "batch_size": 4, "clap_steps": 3, "clap_batch_size": 4, "vocoder_steps": 2,
        "eval_clips_per_class": 2}


# ---------------------------------------------------------------- split by recording
@pytest.mark.parametrize("name, recording", [
    ("100652-3-0-0.wav", "100652"), ("100652-3-0-12.wav", "100652"),  # UrbanSound8K slices of one Freesound id
    ("default_dirt_footstep.2.ogg", "default_dirt_footstep"), ("jbfh_zoom_key_7.wav", "jbfh_zoom_key"),
    ("kbs_mx-blue_press_key1.mp3", "kbs_mx-blue_press_key1"), ("12345.wav", "12345"),
])
def test_recording_of_strips_take_and_slice_numbers(name, recording):
    assert recording_of(name) == recording


def _manifest(files: dict[str, list[str]]) -> pd.DataFrame:
    rows = [{"class": label, "source_path": f"/src/{label}/{name}", "split": "train"}
            for label, names in files.items() for name in names for _ in range(2)]  # 2 windows per file
    return pd.DataFrame(rows)


def test_split_holds_out_whole_recordings_and_keeps_both_sides():
    files = {"DogBark": [f"{r}-3-0-{i}.wav" for r in (11, 22, 33, 44) for i in range(3)], "GunShot": ["only-1.wav", "only-2.wav"]}
    split = split_by_recording(_manifest(files), 0.25)
    dog = split[split["class"] == "DogBark"]
    assert set(dog["split"]) == {"train", "val"}
    assert dog.groupby("recording")["split"].nunique().max() == 1  # no recording on both sides
    assert 0 < (dog["split"] == "val").mean() <= 0.5
    assert set(split[split["class"] == "GunShot"]["split"]) == {"train"}  # one recording: nothing to hold out
    again = split_by_recording(_manifest(files).sample(frac=1, random_state=3), 0.25)
    assert dict(zip(again["source_path"], again["split"])) == dict(zip(split["source_path"], split["split"]))


def test_a_manifest_recording_column_overrides_the_name_rule(tmp_path):
    files = {"DogBark": ["a.wav", "b.wav", "c.wav"]}
    table = _manifest(files)
    table["source_path"] = [str(tmp_path / "DogBark" / Path(p).name) for p in table["source_path"]]
    pd.DataFrame({"file": ["DogBark/a.wav", "DogBark/b.wav", "DogBark/c.wav"],
                  "recording": ["take", "take", "other"]}).to_csv(tmp_path / "MANIFEST.csv", index=False)
    split = split_by_recording(table, 0.4, root=tmp_path)
    assert split.groupby("recording")["split"].nunique().max() == 1
    assert set(split["recording"]) == {"take", "other"}


def test_a_class_from_two_collections_holds_out_a_whole_collection(tmp_path):
    """Keyboard from two collections (the manifest's source column, first word): the smaller one is held out
    whole, so the gate hears a source the fine-tune never did; DogBark from one collection splits by recording."""
    keys = [f"Keyboard/zoom_{i}.wav" for i in range(4)] + [f"Keyboard/panda-{i}.wav" for i in range(8)]
    dogs = [f"DogBark/{r}-3-0-{i}.wav" for r in (11, 22, 33, 44) for i in range(2)]
    sources = (["github:someone/Keystroke-Datasets Zoom/"] * 4 + ["pypi:keyboardsounds 6.4.3 profiles/holy-panda"] * 8
               + [f"UrbanSound8K fold 1 fsID {r}" for r in (11, 22, 33, 44) for _ in range(2)])
    pd.DataFrame({"file": keys + dogs, "source": sources}).to_csv(tmp_path / "MANIFEST.csv", index=False)
    table = pd.DataFrame([{"class": f.split("/")[0], "source_path": str(tmp_path / f), "split": "train"} for f in keys + dogs])
    split = split_by_recording(table, 0.25, root=tmp_path)
    keyboard = split[split["class"] == "Keyboard"]
    assert set(keyboard["held_out_by"]) == {"collection"}
    assert dict(keyboard.groupby("collection")["split"].agg(set)) == {"github:someone/Keystroke-Datasets": {"val"},
                                                                      "pypi:keyboardsounds": {"train"}}
    dog = split[split["class"] == "DogBark"]
    assert set(dog["held_out_by"]) == {"recording"} and set(dog["collection"]) == {"UrbanSound8K"}
    assert set(dog["split"]) == {"train", "val"} and dog.groupby("recording")["split"].nunique().max() == 1


# ---------------------------------------------------------------- condition dropout
def test_condition_dropout_uses_the_vector_the_sampler_guides_against():
    from diffusers import DDPMScheduler

    from foley_core.core.config import UnetConfig
    from foley_core.ldm.models import build_unet
    from foley_core.ldm.modules import UnetModule

    cfg = UnetConfig(block_out_channels=[8, 8], layers_per_block=1, attention=False)
    unet = build_unet(cfg, latent_channels=2, condition_dim=4)
    seen = []
    unet.register_forward_pre_hook(lambda module, args, kwargs: seen.append(kwargs["class_labels"].clone()), with_kwargs=True)
    empty = torch.tensor([0.5, -1.0, 2.0, 0.25])
    module = UnetModule(unet, DDPMScheduler(), cfg, condition_dropout=0.999999, unconditional=empty)
    batch = (torch.zeros(3, 2, 8, 8), torch.zeros(3, 2, 8, 8), torch.ones(3, 4))
    module.compute_loss(batch)
    assert torch.equal(seen[-1], empty.expand(3, 4))  # every condition dropped, to the guidance's vector
    plain = UnetModule(unet, DDPMScheduler(), cfg, condition_dropout=0.999999)
    plain.compute_loss(batch)
    assert torch.equal(seen[-1], torch.zeros(3, 4))  # models trained here: the zero vector, as before


# ---------------------------------------------------------------- the command on tiny data
def _burst(rate: int, seconds: float, freq: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(rate * seconds)) / rate
    return (0.6 * np.sin(2 * np.pi * freq * t) * np.exp(-4 * t) + 0.05 * rng.standard_normal(len(t))).astype(np.float32)


@pytest.fixture
def recordings(tmp_path) -> Path:
    """Two classes, three recordings each (two of them cut into two files), mixed rates and formats."""
    root = tmp_path / "my-recordings"
    for label, freq in (("DogBark", 500.0), ("GunShot", 150.0)):
        (root / label).mkdir(parents=True)
        for r, take in ((1, 1), (1, 2), (2, 1), (2, 2), (3, 1)):
            sf.write(root / label / f"{label.lower()}{r}-{take}.wav", _burst(22050, 0.8, freq * (1 + 0.1 * r), r * 10 + take), 22050)
    sf.write(root / "GunShot" / "gunshot4.ogg", _burst(44100, 0.5, 200.0, 99), 44100, format="OGG", subtype="VORBIS")
    return root


@pytest.fixture
def own_model(smoke_run, tmp_path):
    """A copy of the smoke run's artifacts (the shared run stays untouched) and a profile file on it."""
    artifacts = tmp_path / "artifacts"
    shutil.copytree(smoke_run["root"] / "artifacts", artifacts, symlinks=True)
    overrides = _deep_merge(smoke_overrides(smoke_run["root"]), {"paths": {"artifacts_dir": str(artifacts)},
                                                                 "transfer": TINY})
    profile = load_profile("smoke", overrides)
    profile_file = tmp_path / "smoke-own.yaml"
    profile_file.write_text(yaml.safe_dump(profile.model_dump(mode="json")))
    return profile, profile_file


def _verdict(monkeypatch, problems: list[str]) -> None:
    import foley_core.transfer.gating

    # the transfer gate's rule (registry.regression, as transfer.gate calls it)
    monkeypatch.setattr(foley_core.transfer.gating, "regression", lambda *args, **kwargs: list(problems))


def test_the_fine_tuned_vocoder_serves_a_class_only_when_closer_by_fad_and_kad():
    from foley_core.transfer import keeps_finetuned_vocoder

    assert keeps_finetuned_vocoder({"fad": 554.0, "kad": 0.02}, {"fad": 16869.0, "kad": 0.99})  # Footstep on real-foley
    assert not keeps_finetuned_vocoder({"fad": 19003.0, "kad": 0.32}, {"fad": 7422.0, "kad": 0.15})  # DogBark
    assert not keeps_finetuned_vocoder({"fad": 100.0, "kad": 0.5}, {"fad": 200.0, "kad": 0.4})  # one worse: the base
    assert not keeps_finetuned_vocoder({"fad": float("nan"), "kad": 0.1}, {"fad": 200.0, "kad": 0.4})


def test_a_fine_tune_past_the_gate_is_a_new_version_with_its_lineage(own_model, recordings, monkeypatch):
    import foley_core.transfer.training

    profile, profile_file = own_model
    base = latest_pipeline_dir(profile)
    _verdict(monkeypatch, [])
    # which vocoder wins on tiny data is chance: DogBark (asked first) keeps the fine-tuned one, GunShot the base's
    answers = iter([True, False])
    monkeypatch.setattr(foley_core.transfer.training, "keeps_finetuned_vocoder", lambda finetuned, base_: next(answers))
    result = CliRunner().invoke(main, ["finetune", str(recordings), "--profile", str(profile_file), "--train", "all"])
    assert result.exit_code == 0, result.output
    assert "promoted ft-" in result.output and "CLAP zero-shot" in result.output

    folder = latest_pipeline_dir(profile)
    assert folder != base and folder.name.startswith("ft-")
    config = json.loads((folder / PIPELINE_CONFIG).read_text())
    lineage = config["transfer"]
    assert lineage["base_model_version"] == base.name
    assert lineage["classes"] == ["DogBark", "GunShot"] and lineage["train"] == "all"
    assert len(lineage["source_data_version"]) == 16 and lineage["settings"]["steps"] == TINY["steps"]
    # classes without recordings generate with the base, saved beside the fine-tuned model; GunShot with the
    # fine-tuned model and the base's vocoder
    assert config["class_models"] == {**{c: "base" for c in profile.class_names if c not in ("DogBark", "GunShot")},
                                      "DogBark": None, "GunShot": "base-vocoder"}
    assert (folder / "models/base" / PIPELINE_CONFIG).is_file()

    tuned, original = FoleyPipeline.from_pretrained(folder), FoleyPipeline.from_pretrained(base)
    assert not torch.equal(tuned.adapter.linear.weight, original.adapter.linear.weight)
    changed = [n for n, p in tuned.ldm.unet.state_dict().items() if not torch.equal(p, original.ldm.unet.state_dict()[n])]
    assert changed  # --train all: the UNet learned too
    assert any(not torch.equal(p, original.ldm.vocoder.state_dict()[n]) for n, p in tuned.ldm.vocoder.state_dict().items())
    kept = FoleyPipeline.from_pretrained(folder / "models/base-vocoder")
    assert all(torch.equal(p, original.ldm.vocoder.state_dict()[n]) for n, p in kept.ldm.vocoder.state_dict().items())
    assert all(torch.equal(p, tuned.ldm.unet.state_dict()[n]) for n, p in kept.ldm.unet.state_dict().items())
    record = json.loads((profile.artifact_dir("transfer", "my-recordings") / "transfer.json").read_text())
    assert {c: row["vocoder"] for c, row in record["vocoder"]["choice"].items()} == {"DogBark": "finetuned", "GunShot": "base"}
    distances = record["vocoder"]["choice"]["GunShot"]["to_training_recordings"]
    assert all(np.isfinite(distances[who][k]) for who in ("finetuned", "base") for k in ("fad", "kad"))
    assert set(record["gate"]["base"]["per_class"]) == {"DogBark", "GunShot"}
    assert all(np.isfinite(v["fad"]) for v in record["gate"]["finetuned"]["per_class"].values())
    assert record["split"]["DogBark"]["val"] >= 1 and record["split"]["DogBark"]["train"] >= 1

    # `foley generate` uses it: a held class with the fine-tuned model, another with the base
    for label, expected in (("DogBark", folder), ("Rain", folder / "models/base")):
        out = recordings.parent / f"{label}.wav"
        result = CliRunner().invoke(main, ["generate", "--class", label, "-n", "1", "-o", str(out),
                                           "--profile", str(profile_file)])
        assert result.exit_code == 0, result.output
        assert out.is_file()
    from foley_core.generation.submission import pipeline_for_class

    default = FoleyPipeline.from_pretrained(folder)
    assert pipeline_for_class(default, folder, profile, "DogBark") is default
    assert pipeline_for_class(default, folder, profile, "Rain") is not default
    gunshot = pipeline_for_class(default, folder, profile, "GunShot")
    assert gunshot is not default and torch.equal(gunshot.ldm.vocoder.conv_pre.weight, original.ldm.vocoder.conv_pre.weight)


def test_a_fine_tune_that_fails_the_gate_is_not_promoted_and_the_base_stays(own_model, recordings, monkeypatch):
    profile, profile_file = own_model
    base = latest_pipeline_dir(profile)
    before = sorted(p.name for p in base.parent.iterdir())
    _verdict(monkeypatch, ["mean kad 0.9 > accepted 0.5 + 0% margin"])
    result = CliRunner().invoke(main, ["finetune", str(recordings), "--profile", str(profile_file)])
    assert result.exit_code == 3, result.output
    assert "not promoted" in result.output and base.name in result.output
    assert latest_pipeline_dir(profile) == base
    assert sorted(p.name for p in base.parent.iterdir()) == before  # no new version folder

    out = recordings.parent / "dog.wav"
    result = CliRunner().invoke(main, ["generate", "--class", "DogBark", "-n", "1", "-o", str(out),
                                       "--profile", str(profile_file)])
    assert result.exit_code == 0, result.output


def test_a_lora_fine_tune_trains_only_its_factors_and_gives_back_a_plain_unet(own_model, tmp_path):
    from foley_core.core.layout import layout
    from foley_core.data.ingest import load_manifest
    from foley_core.transfer import finetune_generator

    profile, _ = own_model
    profile = profile.model_copy(update={"transfer": profile.transfer.model_copy(update={"unet_lora_rank": 2})})
    base = FoleyPipeline.from_pretrained(latest_pipeline_dir(profile))
    rows = load_manifest(layout(profile).dataset, profile.class_names).head(8)
    run, _, unet = finetune_generator(profile, base, rows, "unet", tmp_path / "work")
    original = base.ldm.unet.state_dict()
    assert 0 < run["unet_trained_parameters"] < sum(p.numel() for p in original.values()) / 4
    assert set(unet.state_dict()) == set(original)  # merged: the same keys, no LoRA factors left
    changed = [n for n, p in unet.state_dict().items() if not torch.equal(p, original[n])]
    assert changed and all(n.split(".")[-2] in ("conv1", "conv2", "time_emb_proj", "class_embedding") for n in changed)


def test_a_folder_with_no_recording_to_hold_out_is_refused_with_the_reason(own_model, tmp_path):
    _, profile_file = own_model
    root = tmp_path / "single"
    (root / "DogBark").mkdir(parents=True)
    for take in (1, 2):
        sf.write(root / "DogBark" / f"bark-{take}.wav", _burst(16000, 0.5, 400.0, take), 16000)
    result = CliRunner().invoke(main, ["finetune", str(root), "--profile", str(profile_file)])
    assert result.exit_code == 2
    assert "no class has two or more recordings" in result.output


def test_a_class_with_one_held_out_clip_is_left_out_not_a_crash_in_the_gate(own_model, tmp_path):
    """Three one-clip recordings: one is held out, one clip, too few for a FAD; the class is left out with the
    reason (before: the gate crashed measuring it), here leaving nothing to fine-tune on."""
    _, profile_file = own_model
    root = tmp_path / "thin"
    (root / "DogBark").mkdir(parents=True)
    for name in ("alpha", "bravo", "charlie"):
        sf.write(root / "DogBark" / f"{name}.wav", _burst(16000, 0.5, 400.0, len(name)), 16000)
    result = CliRunner().invoke(main, ["finetune", str(root), "--profile", str(profile_file)])
    assert result.exit_code == 2, result.output
    assert "two held-out clips" in result.output
