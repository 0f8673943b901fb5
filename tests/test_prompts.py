"""The best prompt per class as an asset (issue 25): every candidate prompt scored on the class's
training clips, the winner recorded with its lineage, generated with, and shown in the report."""

from __future__ import annotations

import json

import numpy as np
import yaml
from click.testing import CliRunner

from foley_core.cli import main
from foley_core.clap.evaluate import load_paraphrases
from foley_core.core.config import load_profile
from foley_core.core.layout import SELECTION, layout
from foley_core.generation.prompts import candidate_prompts, choose, chosen_prompt
from foley_core.registry import latest_pipeline_dir
from foley_core.stages import model_version


def test_candidates_are_the_configured_prompts_the_paraphrases_and_the_users_own():
    profile = load_profile("smoke", {"classes": [
        {"name": "DogBark", "prompts": ["a dog bark", "a dog barking"], "extra_prompts": ["a terrier yapping", "a dog bark"]}]})
    rows = candidate_prompts(profile, "DogBark")
    paraphrases = list(load_paraphrases().query("`class` == 'DogBark'")["prompt"])
    assert [r["prompt"] for r in rows] == ["a dog bark", "a dog barking", *paraphrases, "a terrier yapping"]
    assert {r["prompt"]: r["source"] for r in rows}["a dog bark"] == "configured"  # listed twice, tried once
    assert rows[-1]["source"] == "extra"


def test_the_highest_margin_wins_and_a_tie_keeps_the_configured_prompt():
    rows = [{"prompt": "a", "margin": 0.1}, {"prompt": "b", "margin": 0.3}, {"prompt": "c", "margin": 0.3}]
    assert choose(rows) == "b"


def test_without_a_search_a_class_uses_its_first_prompt(tmp_path):
    profile = load_profile("smoke", {"paths": {"data_dir": str(tmp_path / "d"), "artifacts_dir": str(tmp_path / "a"),
                                               "outputs_dir": str(tmp_path / "o")}})
    assert chosen_prompt(profile, "Rain") == profile.class_config("Rain").prompts[0]


def test_the_prompt_asset_ran_in_the_graph_and_generation_used_its_winners(smoke_run):
    profile = smoke_run["profile"]
    record = json.loads(layout(profile).prompts.read_text())
    assert record["model_version"] == model_version(profile)  # lineage: which model the prompts were scored with
    assert record["clips_per_prompt"] == profile.generation.prompt_search_clips > 0
    assert set(record["classes"]) == set(profile.class_names)
    for label, entry in record["classes"].items():
        rows = entry["candidates"]
        assert [r["prompt"] for r in rows] == [c["prompt"] for c in candidate_prompts(profile, label)]
        for row in rows:
            assert -1.0 <= row["own"] <= 1.0 and -1.0 <= row["other"] <= 1.0
            assert np.isclose(row["margin"], row["own"] - row["other"], atol=2e-4)
        assert entry["winner"] == max(rows, key=lambda r: r["margin"])["prompt"]
        for variant in ("adapter", "identity"):  # both arms of the ablation hear the same prompt
            selection = json.loads((layout(profile).generation(variant, label) / SELECTION).read_text())
            assert selection["prompt"] == entry["winner"]
    report = (smoke_run["outcome"].output_dir / "report.html").read_text()
    assert "Prompt per class" in report
    assert any(e["winner"] in report for e in record["classes"].values())


def test_cli_generate_by_class_uses_the_winner_and_free_text_stays_free(smoke_run, tmp_path):
    profile = smoke_run["profile"]
    profile_file = tmp_path / "smoke-run.yaml"
    profile_file.write_text(yaml.safe_dump(profile.model_dump(mode="json")))
    winner = json.loads(layout(profile).prompts.read_text())["classes"]["GunShot"]["winner"]
    model = str(latest_pipeline_dir(profile))
    runner = CliRunner()
    by_class = runner.invoke(main, ["generate", "--class", "GunShot", "-n", "1", "-o", str(tmp_path / "g.wav"),
                                    "--profile", str(profile_file), "--model", model])
    assert by_class.exit_code == 0, by_class.output
    assert f"for {winner!r}" in by_class.output
    free = runner.invoke(main, ["generate", "a kettle whistling", "-n", "1", "-o", str(tmp_path / "k.wav"),
                                "--profile", str(profile_file), "--model", model])
    assert free.exit_code == 0, free.output
    assert "for 'a kettle whistling'" in free.output
