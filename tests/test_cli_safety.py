"""Bad input and faults in `foley export-dcase` / `foley generate`: nothing lost, nothing half-written.

The CLI checks run with no trained model: every bad value must be refused before a model loads
(``--model`` points at a folder that does not exist, so reaching the load gives "no pipeline").
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import soundfile as sf
import yaml
from click.testing import CliRunner

import foley_core.cli as cli
import foley_core.export as export
from foley_core.cli import main
from foley_core.core.config import load_profile
from foley_core.export import EXPORT_MARKER, export_dcase, export_dcase_dir, validate_dcase

CLASSES = ("DogBark", "Rain")
N = 3


def clip(seed: int, rate: int = 16000) -> np.ndarray:
    t = np.arange(4 * rate) / rate
    return (0.4 * np.sin(2 * np.pi * (200 + 50 * seed) * t)).astype(np.float32)


def clips(offset: int = 0, n: int = N) -> dict[str, list[np.ndarray]]:
    return {name: [clip(offset + 10 * c + i) for i in range(n)] for c, name in enumerate(CLASSES)}


def snapshot(root) -> dict[str, bytes]:
    """Every file under ``root`` (hidden ones too) by relative path -> its bytes."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def leftovers(parent) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


@pytest.fixture
def dev_set(tmp_path):
    """A user's folder in the DCASE dev-set layout: <Class>/0001.wav .. plus a readme."""
    root = tmp_path / "dev"
    for name in CLASSES:
        (root / name).mkdir(parents=True)
        for i in range(1, 5):
            sf.write(root / name / f"{i:04d}.wav", clip(i, 22050), 22050, subtype="PCM_16")
    (root / "README.txt").write_text("DCASE 2023 Task 7 development set")
    return root


# --- the library: export_dcase / export_dcase_dir -------------------------------------------


def test_export_refuses_a_folder_it_did_not_write_and_deletes_nothing(dev_set):
    before = snapshot(dev_set)
    with pytest.raises(ValueError, match=f"refusing to write into {dev_set}: it holds files foley did not write"):
        export_dcase(clips(), 16000, dev_set, clips_per_class=N)
    assert snapshot(dev_set) == before
    assert leftovers(dev_set.parent) == []  # no staging folder left beside it


def test_export_refuses_an_existing_file(tmp_path):
    target = tmp_path / "sub"
    target.write_text("mine")
    with pytest.raises(ValueError, match="is a file"):
        export_dcase(clips(), 16000, target, clips_per_class=N)
    assert target.read_text() == "mine"


def test_export_into_a_new_or_empty_folder_is_marked_and_valid(tmp_path):
    written = export_dcase(clips(), 16000, tmp_path / "new" / "sub", clips_per_class=N)  # parents are created
    (tmp_path / "empty").mkdir()
    export_dcase(clips(), 16000, tmp_path / "empty", clips_per_class=N)
    for root in (tmp_path / "new" / "sub", tmp_path / "empty"):
        assert validate_dcase(root, classes=CLASSES, clips_per_class=N) == []
        assert (root / EXPORT_MARKER).is_file()
    assert written["Rain"] == [tmp_path / "new" / "sub" / "Rain" / f"00{i}.wav" for i in range(N)]
    assert all(p.is_file() for p in written["Rain"])
    assert leftovers(tmp_path) == [] and leftovers(tmp_path / "new") == []


def test_re_export_replaces_a_previous_export_whole(tmp_path):
    root = tmp_path / "sub"
    export_dcase(clips(), 16000, root, clips_per_class=N)
    export_dcase({"Rain": [clip(90 + i) for i in range(2)]}, 16000, root, clips_per_class=2)
    assert sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()) == [
        EXPORT_MARKER, "Rain/000.wav", "Rain/001.wav"]
    assert leftovers(tmp_path) == []


def test_killed_re_export_leaves_the_previous_export_untouched(tmp_path, monkeypatch):
    root = tmp_path / "sub"
    export_dcase(clips(), 16000, root, clips_per_class=N)
    before = snapshot(root)
    real, calls = export.write_dcase_clip, []

    def dies_on_the_fourth_clip(*args, **kwargs):
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt  # a kill mid-export
        return real(*args, **kwargs)

    monkeypatch.setattr(export, "write_dcase_clip", dies_on_the_fourth_clip)
    with pytest.raises(KeyboardInterrupt):
        export_dcase(clips(offset=500), 16000, root, clips_per_class=N)
    assert snapshot(root) == before  # the old export whole, not old and new clips mixed
    assert leftovers(tmp_path) == []


def test_interrupt_between_the_swap_renames_puts_the_previous_export_back(tmp_path, monkeypatch):
    root = tmp_path / "sub"
    export_dcase(clips(), 16000, root, clips_per_class=N)
    before = snapshot(root)
    real, calls = export.os.rename, []

    def second_rename_interrupted(src, dst):
        calls.append(dst)
        if len(calls) == 2:  # old export moved aside, new one not yet in place
            raise KeyboardInterrupt
        return real(src, dst)

    monkeypatch.setattr(export.os, "rename", second_rename_interrupted)
    with pytest.raises(KeyboardInterrupt):
        export_dcase(clips(offset=500), 16000, root, clips_per_class=N)
    assert snapshot(root) == before
    assert leftovers(tmp_path) == []


def test_a_previous_export_with_a_users_file_added_is_refused(tmp_path):
    root = tmp_path / "sub"
    export_dcase(clips(), 16000, root, clips_per_class=N)
    (root / "Rain" / "notes.txt").write_text("keep me")
    before = snapshot(root)
    with pytest.raises(ValueError, match="notes.txt"):
        export_dcase(clips(offset=500), 16000, root, clips_per_class=N)
    assert snapshot(root) == before


def test_export_dcase_dir_refuses_a_users_folder_and_swaps_all_classes_at_once(dev_set, tmp_path):
    before = snapshot(dev_set)
    with pytest.raises(ValueError, match="refusing to write into"):
        export_dcase_dir(dev_set, dev_set, classes=CLASSES, clips_per_class=N)
    assert snapshot(dev_set) == before
    export_dcase_dir(dev_set, tmp_path / "out", classes=CLASSES, clips_per_class=N)
    export_dcase_dir(dev_set, tmp_path / "out", classes=CLASSES, clips_per_class=N)  # its own export: replaced
    assert validate_dcase(tmp_path / "out", classes=CLASSES, clips_per_class=N) == []


# --- the CLI ---------------------------------------------------------------------------------


@pytest.fixture
def profile_file(tmp_path):
    """The smoke profile with every path under tmp_path, as a YAML file `--profile` accepts."""
    paths = {"data_dir": str(tmp_path / "data"), "artifacts_dir": str(tmp_path / "artifacts"),
             "outputs_dir": str(tmp_path / "outputs")}
    path = tmp_path / "profile.yaml"
    path.write_text(yaml.safe_dump(load_profile("smoke", {"paths": paths}).model_dump(mode="json")))
    return path


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def assert_one_line_error(result, message, only_line=True):
    """Exit code 2, no traceback, and the last (by default the only) line is `error: ...message...`."""
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit), result.exception  # not an unhandled exception
    lines = result.output.strip().splitlines()
    assert lines[-1].startswith("error: ") and message in lines[-1], result.output
    assert len(lines) == 1 or not only_line, result.output


def test_cli_export_refuses_a_users_folder_before_any_model_loads(dev_set, tmp_path, profile_file):
    before = snapshot(dev_set)
    result = invoke("export-dcase", dev_set, "--model", tmp_path / "no-model", "--profile", profile_file)
    assert_one_line_error(result, f"refusing to write into {dev_set}")
    assert snapshot(dev_set) == before
    (tmp_path / "afile").write_text("x")
    result = invoke("export-dcase", tmp_path / "afile", "--model", tmp_path / "no-model", "--profile", profile_file)
    assert_one_line_error(result, "is a file")


def test_cli_export_rejects_a_bad_clip_count_before_any_model_loads(tmp_path, profile_file):
    for count in ("0", "-3", "1001"):
        result = invoke("export-dcase", tmp_path / "sub", "--clips-per-class", count,
                        "--model", tmp_path / "no-model", "--profile", profile_file)
        assert result.exit_code == 2 and "--clips-per-class" in result.output and "no pipeline" not in result.output
    assert not (tmp_path / "sub").exists()


class FakePipeline:
    """Stands in for a trained FoleyPipeline: returns a fixed waveform (or NaN) without any model."""

    sample_rate = 16000

    def __init__(self, wave):
        self.wave = wave

    def __call__(self, prompts, *, n_candidates=1, **_):
        waves = np.stack([self.wave] * len(prompts))
        return SimpleNamespace(waveforms=waves, sample_rate=self.sample_rate,
                               scores=np.full((len(prompts), n_candidates), 0.5), best=np.zeros(len(prompts), int))


def test_cli_export_replaces_its_own_export_and_a_kill_keeps_the_old_one(tmp_path, profile_file, monkeypatch):
    import foley_core.generation.submission as submission

    fake, offset = FakePipeline(clip(0)), [0]
    monkeypatch.setattr(cli, "_pipeline", lambda prof, model: (fake, tmp_path / "model"))
    monkeypatch.setattr(submission, "generate_selected",
                        lambda pipeline, prof, label, n, progress=None, stage=None: SimpleNamespace(
                            selected=[clip(offset[0] + len(label) + i) for i in range(n)]))
    out = tmp_path / "sub"
    result = invoke("export-dcase", out, "--clips-per-class", 2, "--profile", profile_file)
    assert result.exit_code == 0, result.output
    assert invoke("validate-dcase", out, "--clips-per-class", 2).exit_code == 0
    before = snapshot(out)
    offset[0] = 100  # the second export's clips differ from the first's
    real, calls = export.write_dcase_clip, []

    def killed_after_one_clip(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(export, "write_dcase_clip", killed_after_one_clip)
    result = invoke("export-dcase", out, "--clips-per-class", 2, "--profile", profile_file)
    assert result.exit_code != 0 and snapshot(out) == before
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize(("args", "message"), [
    (["x", "--guidance", "nan"], "--guidance must be a finite number >= 0, got nan"),
    (["x", "--guidance", "inf"], "--guidance must be a finite number >= 0, got inf"),
    (["x", "--guidance", "-1"], "--guidance must be a finite number >= 0, got -1.0"),
    (["--class", "Rain", "--guidance", "nan"], "--guidance"),
    (["--class", "Rain", "-n", "0"], "--n-candidates must be between 1 and 64, got 0"),
    (["x", "-n", "0"], "--n-candidates must be between 1 and 64, got 0"),
    (["x", "--seconds", "1e-9"], "--seconds must be between 0.1 and"),
    (["x", "--seconds", "0.05"], "got 0.05"),
    (["x", "--seconds", "nan"], "got nan"),
    (["x", "--seconds", "inf"], "got inf"),
    (["x", "--seed", "-1"], "--seed must be between 0 and 2**63 - 1, got -1"),
    (["x", "--seed", str(2**63)], f"got {2**63}"),
    (["x", "--steps", "0"], "--steps must be between 1 and 1000, got 0"),
])
def test_cli_generate_rejects_bad_numbers_before_any_model_loads(args, message, tmp_path, profile_file):
    result = invoke("generate", *args, "--model", tmp_path / "no-model", "--profile", profile_file,
                    "-o", tmp_path / "out.wav")
    assert_one_line_error(result, message)
    assert not (tmp_path / "out.wav").exists()


def test_cli_generate_refuses_an_existing_folder_as_output(tmp_path, profile_file):
    (tmp_path / "clips").mkdir()
    result = invoke("generate", "a dog barking", "--model", tmp_path / "no-model", "--profile", profile_file,
                    "-o", tmp_path / "clips")
    assert_one_line_error(result, f"cannot write {tmp_path / 'clips'}: it is a folder")
    assert list((tmp_path / "clips").iterdir()) == []


def test_cli_generate_writes_a_wav_and_turns_unusable_audio_into_an_error(tmp_path, profile_file, monkeypatch):
    pipelines = iter([FakePipeline(clip(0)), FakePipeline(np.full(64000, np.nan, np.float32))])
    monkeypatch.setattr(cli, "_pipeline", lambda prof, model: (next(pipelines), tmp_path / "model"))
    out = tmp_path / "out.wav"
    result = invoke("generate", "a dog barking", "--seconds", "0.1", "--profile", profile_file, "-o", out)
    assert result.exit_code == 0, result.output
    assert sf.info(out).frames == 2205  # 0.1 s at 22,050 Hz
    before = out.read_bytes()
    result = invoke("generate", "a dog barking", "--guidance", "1e30", "--profile", profile_file, "-o", out)
    assert_one_line_error(result, "NaN", only_line=False)  # after the "generating ..." progress line
    assert out.read_bytes() == before and leftovers(tmp_path) == []
