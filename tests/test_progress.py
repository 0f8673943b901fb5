"""Live progress of long stages (foley_core.core.progress): what a user sees while training runs,
and library warnings routed to logging instead of the terminal."""

from __future__ import annotations

import io
import logging
import re
import warnings
from types import SimpleNamespace

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

from foley_core.core import progress
from foley_core.core.progress import ProgressReporter, TerminalProgress, track, warnings_to_log

SUMMARY = re.compile(r"^    (?P<stage>[\w -]+): (?P<done>\d+) (?P<unit>\w+) in (?P<time>\S+)")


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Tiny(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(4, 1)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return torch.nn.functional.mse_loss(self.layer(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.05)


def _fit(steps: int, callback: TerminalProgress, tmp_path) -> pl.Trainer:
    torch.manual_seed(0)
    x = torch.randn(64, 4)
    data = DataLoader(TensorDataset(x, x.sum(dim=1, keepdim=True)), batch_size=8)
    trainer = pl.Trainer(max_steps=steps, max_epochs=-1, accelerator="cpu", devices=1, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         callbacks=[callback], default_root_dir=tmp_path)  # fmt: skip
    trainer.fit(Tiny(), data)
    return trainer


def test_a_lightning_fit_prints_steps_loss_and_eta_then_one_summary_line(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv(progress.ENV, raising=False)
    _fit(20, TerminalProgress("tiny", tty=False), tmp_path)  # pytest's capture is not a TTY: plain lines
    lines = capsys.readouterr().err.splitlines()
    live = [line for line in lines if "step " in line]
    assert live, lines
    assert all(re.search(r"tiny: step \d+/20 \( *\d+%\)", line) for line in live)
    assert any(re.search(r"loss \d\.\d{3}", line) and "ETA " in line and "elapsed " in line for line in live[1:])
    steps = [int(re.search(r"step (\d+)/", line).group(1)) for line in live]
    assert steps == sorted(steps) and steps[0] == 0 and steps[-1] >= 18  # starts at 0, reaches 90 %
    summaries = [m for m in map(SUMMARY.match, lines) if m]
    assert len(summaries) == 1 and lines[-1] == summaries[0].string  # one summary, the last line
    assert summaries[0]["stage"] == "tiny" and summaries[0]["done"] == "20" and summaries[0]["unit"] == "steps"
    assert "final loss " in lines[-1]


def test_a_tty_gets_one_live_line_rewritten_in_place_and_ended_by_the_summary(tmp_path):
    out = io.StringIO()
    _fit(12, TerminalProgress("tiny", out=out, tty=True), tmp_path)
    text = out.getvalue()
    assert text.count("\n") == 1 and text.endswith("\n")  # everything but the summary is rewritten in place
    redraws = text.split("\r")
    assert len(redraws) >= 3  # the start, at least the final step (always drawn), the summary
    assert "tiny: step 12/12 (100%)" in text and "loss " in text and "ETA " in text
    final = redraws[-1]
    assert final.startswith("\x1b[K    tiny: 12 steps in ") and "final loss" in final


def test_plain_mode_prints_a_bounded_number_of_lines_whatever_the_step_count():
    out, clock = io.StringIO(), Clock()
    reporter = ProgressReporter("unet", 10_000, out=out, tty=False, clock=clock)
    for step in range(10_001):
        clock.now = step * 0.001  # 10 s in all: no heartbeat
        reporter.update(step, loss=1.0 / (step + 1))
    reporter.finish()
    lines = out.getvalue().splitlines()
    assert 10 <= len(lines) <= 12  # the start, one per 10 % (100 % left to the summary), the summary
    assert [int(re.search(r"(\d+)%", line).group(1)) for line in lines[:-1]] == list(range(0, 100, 10))
    assert lines[-1].startswith("    unet: 10000 steps in 10s (1000.0 steps/s), final loss ")
    assert "\r" not in out.getvalue()


def test_plain_mode_never_stays_silent_longer_than_30_seconds():
    out, clock = io.StringIO(), Clock()
    reporter = ProgressReporter("unet", 1000, out=out, tty=False, clock=clock)
    for step in range(50):  # 50 slow steps (5 % of the work) over 245 s
        clock.now = step * 5.0
        reporter.update(step)
    lines = out.getvalue().splitlines()
    assert 7 <= len(lines) <= 10  # a line at start, then one every 30 s or so
    assert "ETA " in lines[-1] and "ETA ?" not in lines[-1]


def test_eta_counts_only_this_runs_steps_when_resumed():
    out, clock = io.StringIO(), Clock()
    reporter = ProgressReporter("vae", 100, start=50, out=out, tty=False, clock=clock)
    reporter.update(50)
    clock.now = 10.0
    reporter.update(60)  # 10 steps in 10 s: 40 left, 40 s
    clock.now = 50.0
    reporter.finish(100)
    lines = out.getvalue().splitlines()
    assert "ETA ?" in lines[0] and "ETA 40s" in lines[1]
    assert lines[-1] == "    vae: 100 steps in 50s (1.0 steps/s), resumed at 50"


def test_foley_progress_0_switches_it_off(tmp_path, capfd, monkeypatch):
    monkeypatch.setenv(progress.ENV, "0")
    _fit(5, TerminalProgress("tiny"), tmp_path)
    with track("generate Rain", 3, unit="clips") as reporter:
        reporter(3, 3)
    err = capfd.readouterr().err
    assert "tiny" not in err and "Rain" not in err
    monkeypatch.setenv(progress.ENV, "plain")  # forced plain lines, even where a TTY would be
    with track("generate Rain", 3, unit="clips", tty=None) as reporter:
        reporter(1, 3)
        reporter(3, 3)
    lines = capfd.readouterr().err.splitlines()
    assert lines[0].startswith("    generate Rain: clip 1/3 ( 33%)") and lines[-1].startswith("    generate Rain: 3 clips in ")


def test_suppressed_silences_a_block(capsys):
    with progress.suppressed():
        with track("inner", 2) as reporter:
            reporter.update(2)
    with track("outer", 2) as reporter:
        reporter.update(2)
    err = capsys.readouterr().err
    assert "inner" not in err and "outer: 2 steps in" in err


def test_a_failure_ends_the_live_line_without_a_summary():
    out = io.StringIO()
    with pytest.raises(RuntimeError):
        with track("unet", 10, out=out, tty=True) as reporter:
            reporter.update(3, loss=0.5)
            raise RuntimeError("boom")
    text = out.getvalue()
    assert text.endswith("\n") and text.count("\n") == 1  # the live line is ended, the traceback starts afresh
    assert "unet: step 3/10" in text and "steps in" not in text  # no summary: the stage did not finish


def test_generate_class_reports_clips_done_and_a_summary(smoke_profile, capsys):
    from foley_core.generation.generate import generate_class

    profile = smoke_profile()
    samples = profile.audio.clip_samples

    def pipeline(prompts, *, n_candidates=1, **_):
        scores = np.tile(np.linspace(0.5, 0.9, n_candidates), (len(prompts), 1))
        candidates = np.zeros((len(prompts), n_candidates, samples), dtype=np.float32)
        return SimpleNamespace(candidates=candidates, scores=scores)

    pipeline.sample_rate = profile.audio.sample_rate
    calls = []
    gen = generate_class(pipeline, profile, "DogBark", 5, progress=lambda done, total: calls.append((done, total)))
    assert calls[-1] == (5, 5) and gen.selected.shape == (5, samples)
    lines = capsys.readouterr().err.splitlines()
    assert lines[0].startswith("    generate DogBark: clip 0/5 (  0%)")
    assert lines[-1].startswith("    generate DogBark: 5 clips in ") and lines[-1].endswith("5 accepted, 0 regenerations")


def test_warnings_go_to_logging_not_the_terminal(capfd, caplog):
    before = warnings.showwarning
    with caplog.at_level(logging.INFO, logger="py.warnings"):
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            with warnings_to_log():
                warnings.warn("`old_api` is deprecated, use `new_api`", DeprecationWarning)
                warnings.warn("a user warning", UserWarning)
    err = capfd.readouterr().err
    assert "deprecated" not in err and "a user warning" not in err
    records = [r for r in caplog.records if r.name == "py.warnings"]
    assert [r.levelno for r in records] == [logging.INFO, logging.INFO]
    assert records[0].getMessage().startswith("DeprecationWarning: `old_api` is deprecated, use `new_api` (")
    assert "test_progress.py:" in records[0].getMessage()
    assert records[1].getMessage().startswith("UserWarning: a user warning")
    assert warnings.showwarning is before  # restored


def test_warnings_to_log_with_no_handler_anywhere_prints_nothing(capfd):
    """Without the NullHandler, logging's last-resort handler would print WARNING records to stderr."""
    name = "foley-test-unhandled.warnings"
    logger = logging.getLogger(name)
    logger.propagate = False
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            with warnings_to_log(name, level=logging.WARNING):
                warnings.warn("nobody listens", UserWarning)
        assert "nobody listens" not in capfd.readouterr().err
        assert logger.handlers == [] and logger.level == logging.NOTSET  # restored
    finally:
        logger.propagate = True


def test_under_dagster_progress_reaches_the_attached_terminal_and_warnings_the_run_log(tmp_path, capfd):
    """Dagster's compute-log capture swaps fd 2 for a file while an asset runs (and relays it with
    tail -F): attach_terminal() entered before materialize keeps progress on the real terminal,
    out of the captured log; warnings_to_log(get_dagster_logger(...)) puts warnings in the event log."""
    from dagster import DagsterInstance, asset, get_dagster_logger, materialize

    @asset
    def probe() -> int:
        with track("probe", 4, tty=False) as reporter:
            for step in range(5):
                reporter.update(step, loss=1.0)
        warnings.warn("a deprecation inside an asset", UserWarning)
        return 1

    (tmp_path / "dagster_home").mkdir()
    with DagsterInstance.local_temp(str(tmp_path / "dagster_home")) as instance:
        with progress.attach_terminal(), warnings_to_log(get_dagster_logger("warnings")):
            with warnings.catch_warnings():
                warnings.simplefilter("always")
                result = materialize([probe], instance=instance,
                                     run_config={"loggers": {"console": {"config": {"log_level": "WARNING"}}}})
        assert result.success
        messages = [e.user_message for e in instance.all_logs(result.run_id)]
    err = capfd.readouterr().err
    assert "    probe: 4 steps in " in err  # the terminal saw the summary
    assert "a deprecation inside an asset" not in err  # not on the terminal (nor relayed by tail -F)
    assert any("UserWarning: a deprecation inside an asset" in m for m in messages)  # in the run's event log
    captured = "".join(p.read_text() for p in (tmp_path / "dagster_home").rglob("*.err"))
    assert "probe:" not in captured  # not in Dagster's captured stderr
