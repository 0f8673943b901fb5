"""Audio I/O and normalisation: decode, mono, resample, window, pad, level.

soundfile (libsndfile >= 1.1) decodes wav/flac/ogg/mp3; soxr resamples.
Writes are atomic: a partially written file never carries the final name.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from foley_core.core.fsutil import atomic_file, write_text_atomic  # noqa: F401  (write_text_atomic re-exported)
from foley_core.core.hashing import sha256_hex

AUDIO_EXTENSIONS = frozenset({".wav", ".flac", ".ogg", ".oga", ".mp3", ".aif", ".aiff", ".opus"})
# Sample rates a real recording can have. A header outside this range is corrupt or lying, and
# believing it is costly: a few MB of samples "at 1 Hz" resample to tens of GB at 16 kHz.
MIN_SAMPLE_RATE, MAX_SAMPLE_RATE = 1000, 384_000


class AudioDecodeError(ValueError):
    """A file could not be turned into usable audio; ``reason`` is a short machine-readable tag."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def is_audio_file(path: Path) -> bool:
    return path.suffix.lower() in AUDIO_EXTENSIONS


def read_audio(path: Path, max_seconds: float | None = None, max_bytes: int | None = None) -> tuple[np.ndarray, int, int]:
    """Decode a file to float32 of shape (frames, channels); returns (audio, rate, channels).

    The header is checked before any sample is decoded: an implausible sample rate is
    ``bad_sample_rate``. ``max_seconds`` decodes only the file's first seconds (memory is then
    bounded whatever the file's length); ``max_bytes`` refuses, as ``too_large``, a file whose
    decoded part (float32 x channels) would be larger than that, without decoding it.
    """
    try:
        handle = sf.SoundFile(str(path))
    except Exception as exc:  # libsndfile raises a few different types for bad files
        raise AudioDecodeError("unreadable", f"{type(exc).__name__}: {exc}") from exc
    with handle:
        rate, channels = int(handle.samplerate), int(handle.channels)
        if not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE:
            raise AudioDecodeError(
                "bad_sample_rate", f"header says {rate} Hz; recordings are {MIN_SAMPLE_RATE}-{MAX_SAMPLE_RATE} Hz"
            )
        # handle.frames is the header's count (an estimate for mp3): read() allocates that many
        # frames at most and returns fewer if the stream ends sooner.
        frames = handle.frames if max_seconds is None else min(handle.frames, math.ceil(max_seconds * rate))
        if max_bytes is not None and frames * channels * 4 > max_bytes:
            raise AudioDecodeError(
                "too_large",
                f"decoding {frames} frames x {channels} channels needs {frames * channels * 4 / 2**20:.0f} MiB, "
                f"over the {max_bytes / 2**20:.0f} MiB limit (data.max_decoded_bytes)",
            )
        try:
            audio = handle.read(frames, dtype="float32", always_2d=True)
        except MemoryError as exc:
            raise AudioDecodeError("too_large", f"out of memory decoding {frames} frames x {channels} channels") from exc
        except Exception as exc:
            raise AudioDecodeError("unreadable", f"{type(exc).__name__}: {exc}") from exc
    if audio.shape[0] == 0:
        raise AudioDecodeError("empty", "file holds zero samples")
    if not np.isfinite(audio).all():
        raise AudioDecodeError("non_finite", "audio contains NaN or infinite samples")
    return audio, rate, channels


def to_mono(audio: np.ndarray) -> np.ndarray:
    return audio.mean(axis=1) if audio.ndim == 2 else audio


def resample(audio: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    if rate_in == rate_out:
        return audio.astype(np.float32, copy=False)
    return soxr.resample(audio, rate_in, rate_out, quality="HQ").astype(np.float32)


def peak_db(audio: np.ndarray) -> float:
    peak = float(np.max(np.abs(audio))) if audio.size else 0.0
    return 20.0 * np.log10(peak) if peak > 0 else -np.inf


def split_into_windows(audio: np.ndarray, window: int, max_windows: int, min_fraction: float) -> list[np.ndarray]:
    """Cut into non-overlapping clip-length windows; pad short events and a long-enough tail.

    A recording shorter than one window is one (padded) window however short it is:
    single events (a gunshot, one footstep) are valid clips.
    """
    if audio.shape[0] <= window:
        return [pad_to(audio, window)]
    windows = []
    for start in range(0, audio.shape[0], window):
        piece = audio[start : start + window]
        if piece.shape[0] < window and piece.shape[0] < min_fraction * window:
            break
        windows.append(pad_to(piece, window))
        if len(windows) == max_windows:
            break
    return windows


def pad_to(audio: np.ndarray, length: int) -> np.ndarray:
    if audio.shape[0] >= length:
        return audio[:length]
    return np.pad(audio, (0, length - audio.shape[0]))


def normalise_peak(audio: np.ndarray, target_peak: float) -> np.ndarray:
    peak = float(np.max(np.abs(audio)))
    return (audio * (target_peak / peak)).astype(np.float32) if peak > 0 else audio


def pcm16(audio: np.ndarray) -> np.ndarray:
    return (np.clip(audio, -1.0, 1.0) * 32767.0).round().astype(np.int16)


def content_hash(audio: np.ndarray) -> str:
    """Hash of the 16-bit PCM samples: the clip's identity, whatever file it came from."""
    return sha256_hex(pcm16(audio).tobytes())


def write_wav_atomic(path: Path, audio: np.ndarray, rate: int) -> None:
    with atomic_file(path, ".wav.tmp") as tmp:
        sf.write(tmp, pcm16(audio), rate, subtype="PCM_16", format="WAV")


def log_mel_db(audio: np.ndarray, sample_rate: int, n_mels: int = 64, hop_length: int = 160, n_fft: int = 1024) -> np.ndarray:
    """Power log-mel in dB (librosa, 80 dB range): what the spectrogram pictures show and the log-mel
    statistics embedder measures. The other two log-mel front ends differ on purpose: the LDM's
    (``ldm.mel.MelFrontEnd``: torch, natural log, part of the model) and VGGish's
    (``metrics.vggish.log_mel``: the published recipe its weights were trained on)."""
    import librosa

    mel = librosa.feature.melspectrogram(
        y=audio.astype(np.float32), sr=sample_rate, n_fft=n_fft, hop_length=hop_length, n_mels=n_mels, power=2.0
    )
    return librosa.power_to_db(mel, ref=1.0, top_db=80.0)
