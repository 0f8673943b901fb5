"""The `foley` CLI: JSON out for evaluate, one-line errors with exit code 2."""

import json

import numpy as np
import soundfile as sf
from click.testing import CliRunner

from orchestration.cli import main  # the whole `foley` command, `run` included


def _write_class_dir(root, seed):
    rng = np.random.default_rng(seed)
    for label, freq in (("DogBark", 600.0), ("Rain", None)):
        (root / label).mkdir(parents=True)
        for i in range(4):
            t = np.arange(22050 * 4) / 22050
            audio = 0.3 * np.sin(2 * np.pi * (freq + 20 * i) * t) if freq else rng.normal(0, 0.2, t.size)
            sf.write(root / label / f"{i:03d}.wav", audio.astype(np.float32), 22050, subtype="PCM_16")


def test_evaluate_prints_json_per_class(tmp_path):
    _write_class_dir(tmp_path / "gen", 0)
    _write_class_dir(tmp_path / "ref", 1)
    result = CliRunner().invoke(main, ["evaluate", str(tmp_path / "gen"), str(tmp_path / "ref"), "--out", str(tmp_path / "m.json")])
    assert result.exit_code == 0, result.output
    scores = json.loads((tmp_path / "m.json").read_text())
    assert set(scores["classes"]) == {"DogBark", "Rain"}
    assert all(row["fad"] >= 0 and row["kad"] is not None for row in scores["classes"].values())
    assert json.loads(result.output) == scores


def test_validate_dcase_names_the_offending_file(tmp_path):
    _write_class_dir(tmp_path / "sub", 0)
    result = CliRunner().invoke(main, ["validate-dcase", str(tmp_path / "sub"), "--clips-per-class", "4"])
    assert result.exit_code == 2
    assert "Footstep" in result.output  # missing class folder
    assert "problem(s)" in result.output


def test_unknown_profile_is_a_one_line_error():
    result = CliRunner().invoke(main, ["run", "--profile", "nope"])
    assert result.exit_code == 2
    assert result.output.strip().startswith("error: no profile 'nope'")


def test_a_prompt_of_control_characters_only_is_refused_like_an_empty_one(tmp_path):
    """Issue 22: `$'\\x01\\x02\\t'` has no text to condition on; refused before any model loads."""
    for prompt in ("\x01\x02\t", "\x7f\x00 ", "  \n"):
        result = CliRunner().invoke(main, ["generate", prompt, "--profile", "smoke", "--output", str(tmp_path / "x.wav")])
        assert result.exit_code == 2, result.output
        assert "the prompt is empty" in result.output
        assert not (tmp_path / "x.wav").exists()
