"""Files the pipeline writes atomically get the mode the umask gives (issue 22), not mkstemp's 0600:
a team reading through a shared group must be able to open reports, metrics, clips and weights."""

import os
import stat

import numpy as np
import pytest

from foley_core.clap.cache import _save_npz_atomic
from foley_core.core.audio import write_wav_atomic
from foley_core.core.fsutil import write_text_atomic


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_atomic_writers_follow_the_umask(tmp_path, umask_022):
    write_text_atomic(tmp_path / "metrics.json", "{}")
    write_wav_atomic(tmp_path / "clip.wav", np.zeros(160, dtype=np.float32), 16000)
    _save_npz_atomic(tmp_path / "audio.npz", x=np.zeros(3))
    for name in ("metrics.json", "clip.wav", "audio.npz"):
        assert _mode(tmp_path / name) == 0o644, (name, oct(_mode(tmp_path / name)))
    os.umask(0o077)  # a private umask stays private
    write_text_atomic(tmp_path / "private.json", "{}")
    assert _mode(tmp_path / "private.json") == 0o600
