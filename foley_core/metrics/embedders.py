"""Audio embedders for FAD/KAD: a common protocol and the weight-free and CLAP ones.

An embedder turns clips into rows of an (n, d) array. Each handles its own sample rate:
callers pass audio at whatever rate it has. ``n`` counts embeddings, not clips: VGGish
gives one per 16,000-sample window, the log-mel statistics one per 1 s window, CLAP one
per clip.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch

from foley_core.core.audio import log_mel_db, pad_to, read_audio, resample, to_mono
from foley_core.metrics.vggish import VGGishEmbedder

EMBEDDER_NAMES = ("logmel", "vggish", "clap")


@runtime_checkable
class Embedder(Protocol):
    name: str

    def embed(self, waveforms: Sequence[np.ndarray], sample_rate: int) -> np.ndarray:
        """1-D float waveforms at ``sample_rate`` -> (n, d) float64."""
        ...

    def embed_files(self, paths: Sequence[Path]) -> np.ndarray:
        """Audio files (any rate/format the embedder reads) -> (n, d) float64."""
        ...


def _mono(wave: np.ndarray) -> np.ndarray:
    wave = np.asarray(wave, dtype=np.float32)
    if wave.ndim == 2:
        wave = to_mono(wave)
    if wave.ndim != 1:
        raise ValueError(f"waveforms must be 1-D (or (samples, channels)), got shape {wave.shape}")
    if not np.isfinite(wave).all():
        raise ValueError("waveform contains NaN or infinite samples")
    return wave


def embed_files_by_rate(embedder: Embedder, paths: Sequence[Path], chunk: int = 32) -> np.ndarray:
    """Decode files with soundfile (any format ``read_audio`` handles) and embed them at their own rate.

    Rows keep the order of ``paths``; files are decoded ``chunk`` at a time to bound memory,
    and consecutive files of one rate go to the embedder together.
    """
    rows = []
    for start in range(0, len(paths), chunk):
        decoded = [read_audio(Path(p)) for p in paths[start : start + chunk]]
        run: list[np.ndarray] = []
        for i, (audio, rate, _) in enumerate(decoded):
            run.append(to_mono(audio))
            if i + 1 == len(decoded) or decoded[i + 1][1] != rate:
                rows.append(embedder.embed(run, rate))
                run = []
    return np.concatenate(rows) if rows else np.zeros((0, 0))


class LogMelStatsEmbedder:
    """Weight-free embedding: statistics of a log-mel spectrogram over 1 s windows.

    Per window and mel band: the mean level, its standard deviation over time (how
    impulsive or steady the band is) and the mean absolute frame-to-frame change (how fast
    it fluctuates: rain and keyboard vs. an engine). Audio is resampled to ``sample_rate``
    and peak-normalised (at most +20 dB, as the official FAD tool does), so level does not
    dominate. Dimension: 3 x ``n_mels`` (96 by default).

    It needs no download, so a metric always exists offline; it is not comparable with
    published FAD numbers, only between runs of this project.
    """

    def __init__(
        self,
        sample_rate: int = 16000,
        n_mels: int = 32,
        hop_length: int = 160,
        window_seconds: float = 1.0,
        hop_seconds: float = 0.5,
    ):
        if window_seconds <= 0 or hop_seconds <= 0:
            raise ValueError("window_seconds and hop_seconds must be > 0")
        self.sample_rate = sample_rate
        self.n_mels = n_mels
        self.hop_length = hop_length
        self.window_frames = max(2, int(round(window_seconds * sample_rate / hop_length)))
        self.hop_frames = max(1, int(round(hop_seconds * sample_rate / hop_length)))
        self.name = f"logmel{n_mels}"

    @property
    def dim(self) -> int:
        return 3 * self.n_mels

    def embed(self, waveforms: Sequence[np.ndarray], sample_rate: int) -> np.ndarray:
        rows = [self._embed_one(resample(_mono(w), sample_rate, self.sample_rate)) for w in waveforms]
        return np.concatenate(rows) if rows else np.zeros((0, self.dim))

    def embed_files(self, paths: Sequence[Path]) -> np.ndarray:
        return embed_files_by_rate(self, paths) if paths else np.zeros((0, self.dim))

    def _embed_one(self, wave: np.ndarray) -> np.ndarray:
        peak = float(np.max(np.abs(wave))) if wave.size else 0.0
        wave = wave / max(peak, 0.1)
        # At least one window of audio (short events are padded with silence).
        wave = pad_to(wave, max(wave.shape[0], self.window_frames * self.hop_length))
        mel = log_mel_db(wave, self.sample_rate, n_mels=self.n_mels, hop_length=self.hop_length).astype(np.float64)
        rows = []
        last_start = mel.shape[1] - self.window_frames
        for start in range(0, last_start + 1, self.hop_frames):
            window = mel[:, start : start + self.window_frames]
            change = np.abs(np.diff(window, axis=1)).mean(axis=1)
            rows.append(np.concatenate([window.mean(axis=1), window.std(axis=1), change]))
        return np.stack(rows)


class ClapAudioEmbedder:
    """CLAP audio embeddings from any encoder with ``encode_audio(waveforms, sample_rate) -> Tensor (n, d)``.

    Clips are mono-mixed, resampled to the encoder's ``sample_rate``, padded/trimmed to
    ``clip_seconds`` and passed as a float32 tensor (batch, samples), ``batch_size`` at a
    time, under ``torch.inference_mode``. One embedding per clip.
    """

    def __init__(self, encoder: Any, sample_rate: int, clip_seconds: float = 4.0, batch_size: int = 16, name: str = "clap"):
        if not callable(getattr(encoder, "encode_audio", None)):
            raise TypeError(f"{type(encoder).__name__} has no encode_audio(waveforms, sample_rate) method")
        self.encoder = encoder
        self.sample_rate = sample_rate
        self.clip_samples = int(round(clip_seconds * sample_rate))
        self.batch_size = batch_size
        self.name = name

    def embed(self, waveforms: Sequence[np.ndarray], sample_rate: int) -> np.ndarray:
        clips = [pad_to(resample(_mono(w), sample_rate, self.sample_rate), self.clip_samples) for w in waveforms]
        outputs = []
        with torch.inference_mode():
            for start in range(0, len(clips), self.batch_size):
                batch = torch.from_numpy(np.stack(clips[start : start + self.batch_size]))
                out = self.encoder.encode_audio(batch, self.sample_rate)
                out = out.detach().cpu().numpy() if isinstance(out, torch.Tensor) else np.asarray(out)
                if out.ndim != 2 or out.shape[0] != batch.shape[0]:
                    raise ValueError(
                        f"encode_audio returned shape {out.shape} for a batch of {batch.shape[0]}; expected (n, d)"
                    )
                outputs.append(out.astype(np.float64))
        return np.concatenate(outputs) if outputs else np.zeros((0, 0))

    def embed_files(self, paths: Sequence[Path]) -> np.ndarray:
        return embed_files_by_rate(self, paths)


def clap_scores(audio_embeddings: np.ndarray, text_embedding: np.ndarray) -> np.ndarray:
    """Cosine similarity of each audio embedding (n, d) with one text embedding (d,)."""
    audio = np.asarray(audio_embeddings, dtype=np.float64)
    text = np.asarray(text_embedding, dtype=np.float64).reshape(-1)
    if audio.ndim != 2 or audio.shape[1] != text.shape[0]:
        raise ValueError(f"audio embeddings {audio.shape} and text embedding {text.shape} do not match")
    audio = audio / np.maximum(np.linalg.norm(audio, axis=1, keepdims=True), 1e-12)
    return audio @ (text / max(np.linalg.norm(text), 1e-12))


def make_embedder(
    name: str,
    *,
    vggish_weights: str | Path | None = None,
    vggish_pca: str | Path | None = None,
    clap_encoder: Any = None,
    clap_sample_rate: int = 16000,
) -> Embedder:
    """Embedder by CLI name: ``logmel`` (no weights), ``vggish`` (needs a weights file), ``clap`` (needs an encoder)."""
    if name == "logmel":
        return LogMelStatsEmbedder()
    if name == "vggish":
        return VGGishEmbedder(vggish_weights, pca_params=vggish_pca)
    if name == "clap":
        if clap_encoder is None:
            raise ValueError("the 'clap' embedder needs the pipeline's CLAP model (an object with encode_audio)")
        return ClapAudioEmbedder(clap_encoder, clap_sample_rate)
    raise ValueError(f"unknown embedder {name!r}; choose one of {', '.join(EMBEDDER_NAMES)}")
