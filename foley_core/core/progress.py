"""Live progress of long stages in the terminal, and library warnings out of it.

A newcomer watching ``foley run`` must tell a 15-minute training from a hang. Every long loop
reports through a :class:`ProgressReporter`:

* on a terminal (a TTY): one line rewritten in place with ``\\r`` — stage, step/total, smoothed
  loss, elapsed time, ETA — at most every 0.2 s;
* elsewhere (CI, a pipe, a log file): a plain line at every 10 % of the work, and at least one
  every 30 s while the work goes on, so a log stays short but never silent;
* when done: a single summary line (stage, steps, final loss, wall time), in both modes.

:class:`TerminalProgress` is the Lightning callback (``fit`` adds it to every training run);
:func:`track` is the same for plain loops (generation: clips done / total).

Where the lines go. Dagster's compute-log capture (``LocalComputeLogManager``) swaps file
descriptors 1 and 2 for files while an asset runs in-process and relays those files to the
terminal with ``tail -F``: inside an asset, ``sys.stderr`` *and* ``sys.__stderr__`` are that file
(not a TTY, lines arrive late, and ``\\r`` updates would pile up in the log). :func:`attach_terminal`,
entered by the caller before ``materialize``, duplicates the real stderr descriptor so progress
bypasses the capture. Without it the lines go to ``sys.stderr`` (what pytest's ``capsys``/``capfd``
and ``contextlib.redirect_stderr`` see), i.e. under Dagster into the run's stderr log.

``FOLEY_PROGRESS=0`` (or ``off``/``false``/``no``) switches all of it off; ``FOLEY_PROGRESS=plain``
forces the plain-line mode even on a terminal. :func:`suppressed` switches it off for a block
(a caller that draws its own bar). :func:`warnings_to_log` routes ``warnings.warn`` (Lightning,
torch and diffusers deprecations, user warnings) to Python logging instead of stderr.
"""

from __future__ import annotations

import logging
import math
import os
import sys
import time
import warnings
from contextlib import contextmanager
from typing import Iterator, TextIO

from pytorch_lightning.callbacks import Callback

ENV = "FOLEY_PROGRESS"
TTY_INTERVAL_S = 0.2  # redraws of the live line at most this often
PLAIN_FRACTION = 0.1  # plain mode: a line at every 10 % of the work ...
PLAIN_HEARTBEAT_S = 30.0  # ... and at least one every 30 s
EMA_WEIGHT = 0.1  # loss smoothing: weight of the newest step
INDENT = "    "  # below the runner's one-line-per-stage output ("  <stage> ...")

_terminal: TextIO | None = None  # set by attach_terminal()
_suppressed = 0


def enabled() -> bool:
    return _suppressed == 0 and os.environ.get(ENV, "1").strip().lower() not in ("0", "off", "false", "no")


def stream() -> TextIO:
    """Where progress goes: the attached terminal, else the current ``sys.stderr``."""
    if _terminal is not None and not _terminal.closed:
        return _terminal
    return sys.stderr if sys.stderr is not None else sys.__stderr__


@contextmanager
def attach_terminal() -> Iterator[TextIO]:
    """Send progress to the stderr of *now* (a duplicate of its file descriptor) for the block.

    Enter it before ``dagster.materialize``: inside an asset, descriptor 2 is Dagster's capture
    file, while the duplicate still is the terminal (or the CI log) the user is watching."""
    global _terminal
    previous = _terminal
    try:
        fd = os.dup(sys.__stderr__.fileno())
    except (AttributeError, OSError, ValueError):  # no real stderr (e.g. pythonw): keep the fallback
        yield stream()
        return
    terminal = os.fdopen(fd, "w", buffering=1, encoding="utf-8", errors="replace")
    _terminal = terminal
    try:
        yield terminal
    finally:
        _terminal = previous
        terminal.close()


@contextmanager
def suppressed() -> Iterator[None]:
    """No progress output in the block (e.g. around a caller that shows its own bar)."""
    global _suppressed
    _suppressed += 1
    try:
        yield
    finally:
        _suppressed -= 1


def format_duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{seconds:02d}s"
    return f"{seconds}s"


def _fmt_loss(loss: float) -> str:
    return f"{loss:.4f}" if abs(loss) >= 1e-3 or loss == 0 else f"{loss:.3e}"


def _is_tty(out: TextIO) -> bool:
    try:
        return out.isatty()
    except (AttributeError, ValueError):
        return False


def _width(out: TextIO) -> int:
    try:
        return os.get_terminal_size(out.fileno()).columns or 100  # 0: a terminal of unknown size
    except (AttributeError, OSError, ValueError):
        return 100


class ProgressReporter:
    """Progress of one stage: ``update(done, loss=...)`` as work completes, ``finish()`` at the end.

    Callable as ``reporter(done, total)`` too, the ``progress`` callback signature of
    :func:`foley_core.generation.generate.generate_class`. ``tty``/``out`` default to the
    environment (see the module docstring); tests pass them explicitly."""

    def __init__(self, stage: str, total: int | None, *, unit: str = "steps", start: int = 0,
                 out: TextIO | None = None, tty: bool | None = None, clock=time.monotonic):  # fmt: skip
        self.stage, self.total, self.unit = stage, total, unit
        self.active = enabled()
        self.out = out if out is not None else stream()
        mode = os.environ.get(ENV, "").strip().lower()
        self.tty = tty if tty is not None else (mode != "plain" and _is_tty(self.out))
        self.clock = clock
        self.started = clock()
        self.start = self.done = start  # start > 0: resumed; rate and ETA count this run's work only
        self.loss: float | None = None  # smoothed
        self.finished = False
        self._last_write = -math.inf
        self._next_fraction = PLAIN_FRACTION
        self._line_open = False  # TTY: a live line waits for its newline

    # -- reporting -----------------------------------------------------------------------------
    def update(self, done: int, loss: float | None = None, *, total: int | None = None) -> None:
        if total is not None:
            self.total = total
        self.done = done
        if loss is not None and math.isfinite(loss):
            self.loss = loss if self.loss is None else (1 - EMA_WEIGHT) * self.loss + EMA_WEIGHT * loss
        if not self.active or self.finished:
            return
        now = self.clock()
        if self.tty:
            if now - self._last_write >= TTY_INTERVAL_S or done == self.total:
                line = self._line(now)[: max(10, _width(self.out) - 1)]
                self._write(f"\r{line}\x1b[K")
                self._line_open = True
                self._last_write = now
            return
        fraction = (done / self.total) if self.total else 0.0
        if fraction >= self._next_fraction or now - self._last_write >= PLAIN_HEARTBEAT_S:
            if self.total and done >= self.total:
                return  # the summary line says it
            self._write(self._line(now) + "\n")
            self._last_write = now
            while self.total and self._next_fraction <= fraction:
                self._next_fraction += PLAIN_FRACTION

    __call__ = update

    def finish(self, done: int | None = None, *, note: str = "") -> None:
        """The one summary line: stage, work done, final (smoothed) loss, wall time."""
        if done is not None:
            self.done = done
        if self.finished:
            return
        self.finished = True
        if not self.active:
            return
        seconds = self.clock() - self.started
        run = self.done - self.start
        parts = [f"{INDENT}{self.stage}: {self.done}" + (f"/{self.total}" if self.total and self.done != self.total else ""),
                 f" {self.unit} in {format_duration(seconds)}"]  # fmt: skip
        if seconds > 0 and run > 0:
            parts.append(f" ({run / seconds:.1f} {self.unit}/s)")
        if self.loss is not None:
            parts.append(f", final loss {_fmt_loss(self.loss)}")
        if self.start:
            parts.append(f", resumed at {self.start}")
        if note:
            parts.append(f", {note}")
        self._write(("\r\x1b[K" if self._line_open else "") + "".join(parts) + "\n")
        self._line_open = False

    def close(self) -> None:
        """After a failure: end a live line so the traceback starts on a line of its own."""
        if self._line_open and not self.finished:
            self._write("\n")
        self._line_open = False
        self.finished = True

    # -- internals -----------------------------------------------------------------------------
    def _line(self, now: float) -> str:
        elapsed = now - self.started
        if self.total:
            text = f"{INDENT}{self.stage}: {self.unit[:-1] if self.unit.endswith('s') else self.unit} {self.done}/{self.total} ({100 * self.done / self.total:3.0f}%)"
        else:
            text = f"{INDENT}{self.stage}: {self.done} {self.unit}"
        if self.loss is not None:
            text += f"  loss {_fmt_loss(self.loss)}"
        text += f"  elapsed {format_duration(elapsed)}"
        run = self.done - self.start
        if self.total and run > 0 and elapsed > 0:
            text += f"  ETA {format_duration((self.total - self.done) * elapsed / run)}"
        elif self.total:
            text += "  ETA ?"
        return text

    def _write(self, text: str) -> None:
        try:
            self.out.write(text)
            self.out.flush()
        except (OSError, ValueError):  # a closed or broken terminal must never fail a training run
            self.active = False


@contextmanager
def track(stage: str, total: int | None, *, unit: str = "steps", **kwargs) -> Iterator[ProgressReporter]:
    """A reporter for a plain loop: the summary line on success, a clean line end on failure."""
    reporter = ProgressReporter(stage, total, unit=unit, **kwargs)
    try:
        yield reporter
    except BaseException:
        reporter.close()
        raise
    reporter.finish()


def _loss(outputs) -> float | None:
    if isinstance(outputs, dict):
        outputs = outputs.get("loss")
    if outputs is None:
        return None
    try:
        return float(outputs)
    except (TypeError, ValueError, RuntimeError):
        return None


class TerminalProgress(Callback):
    """Lightning callback: live progress of a fit (global step / max_steps, smoothed loss, ETA)
    and one summary line at its end. Stateless (nothing goes into checkpoints) and read-only:
    adding it changes no weights. Only rank 0 reports."""

    def __init__(self, stage: str, total_steps: int | None = None, **reporter_kwargs) -> None:
        self.stage, self.total_steps = stage, total_steps
        self.reporter_kwargs = reporter_kwargs
        self.reporter: ProgressReporter | None = None

    def on_train_start(self, trainer, pl_module) -> None:
        if not trainer.is_global_zero:
            return
        total = self.total_steps if self.total_steps is not None else trainer.max_steps
        self.reporter = ProgressReporter(self.stage, total if total and total > 0 else None,
                                         start=trainer.global_step, **self.reporter_kwargs)  # fmt: skip
        self.reporter.update(trainer.global_step)  # the stage has started (step 0, or where it resumed)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.reporter is not None:
            self.reporter.update(trainer.global_step, _loss(outputs))

    def on_train_end(self, trainer, pl_module) -> None:
        if self.reporter is not None:
            self.reporter.finish(trainer.global_step)
            self.reporter = None

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        if self.reporter is not None:
            self.reporter.close()
            self.reporter = None


@contextmanager
def warnings_to_log(logger: str | logging.Logger = "py.warnings", level: int = logging.INFO) -> Iterator[logging.Logger]:
    """For the block, ``warnings.warn`` (Lightning, torch, diffusers deprecations, user warnings)
    becomes a ``level`` record on ``logger`` instead of text on stderr; restored afterwards.

    The warnings filters still decide what is shown (once per location by default). A warning
    written to an explicit ``file`` keeps going there, as with ``logging.captureWarnings``. The
    logger gets a NullHandler for the block, so with no handler configured a record is dropped
    rather than printed to stderr by logging's last-resort handler; its level is lowered to
    ``level`` if needed. INFO by default: Dagster's console logger (WARNING) does not echo it
    to the terminal, while a logger Dagster manages (``get_dagster_logger(...)``, or one listed
    in ``python_logs.managed_python_loggers``) puts it in the run's event log."""
    log = logging.getLogger(logger) if isinstance(logger, str) else logger
    shown_before = warnings.showwarning
    level_before = log.level
    null = logging.NullHandler()

    def show(message, category, filename, lineno, file=None, line=None) -> None:
        if file is not None:
            shown_before(message, category, filename, lineno, file, line)
            return
        log.log(level, "%s: %s (%s:%s)", category.__name__, message, filename, lineno)

    log.addHandler(null)
    if log.getEffectiveLevel() > level:
        log.setLevel(level)
    warnings.showwarning = show
    try:
        yield log
    finally:
        if warnings.showwarning is show:
            warnings.showwarning = shown_before
        log.removeHandler(null)
        log.setLevel(level_before)
