"""The mel front end shared by VAE, vocoder and metrics (AudioLDM-compatible by default).

``log(clamp(mel_magnitude, 1e-5))`` of a Hann-window STFT magnitude through a slaney
mel filterbank (librosa's), exactly the AudioLDM recipe, so AudioLDM weights fit.
Layout ``(n, 1, frames, n_mels)``: time is the image height, frequency the width.

Normalisation: the front end itself never normalises (the vocoder and metrics see the
raw log-mel, as in AudioLDM). The VAE sees ``(log_mel - mean) / std`` with one global
mean/std measured on the training clips (``MelNormalisation``); imported AudioLDM
components use the identity (mean 0, std 1), which is what AudioLDM trained on.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch

from foley_core.core.config import AudioConfig

LOG_FLOOR = 1e-5  # AudioLDM's clamp before the log


@dataclass(frozen=True)
class MelNormalisation:
    mean: float = 0.0
    std: float = 1.0

    def normalise(self, log_mel: torch.Tensor) -> torch.Tensor:
        return (log_mel - self.mean) / self.std

    def denormalise(self, image: torch.Tensor) -> torch.Tensor:
        return image * self.std + self.mean

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def measure(cls, log_mels: torch.Tensor) -> "MelNormalisation":
        return cls(mean=float(log_mels.mean()), std=float(log_mels.std().clamp_min(1e-3)))


class MelFrontEnd(torch.nn.Module):
    """Waveforms ``(n, samples)`` -> log-mel ``(n, 1, samples // hop, n_mels)``."""

    def __init__(self, audio: AudioConfig):
        super().__init__()
        import librosa

        self.audio = audio
        basis = librosa.filters.mel(
            sr=audio.sample_rate, n_fft=audio.n_fft, n_mels=audio.n_mels, fmin=audio.f_min, fmax=audio.f_max
        )
        self.register_buffer("mel_basis", torch.from_numpy(basis).float(), persistent=False)
        self.register_buffer("window", torch.hann_window(audio.win_length), persistent=False)

    @property
    def hop_length(self) -> int:
        return self.audio.hop_length

    def frames_for(self, samples: int) -> int:
        return samples // self.audio.hop_length

    def magnitude(self, waveforms: torch.Tensor) -> torch.Tensor:
        """Linear STFT magnitude ``(n, n_fft // 2 + 1, frames)``, frames cropped to ``samples // hop``."""
        if waveforms.ndim != 2:
            raise ValueError(f"waveforms must be (n, samples), got shape {tuple(waveforms.shape)}")
        spec = torch.stft(
            waveforms.float(), n_fft=self.audio.n_fft, hop_length=self.audio.hop_length,
            win_length=self.audio.win_length, window=self.window, center=True, pad_mode="reflect",
            return_complex=True,
        )  # fmt: skip
        return spec.abs()[..., : self.frames_for(waveforms.shape[-1])]

    def forward(self, waveforms: torch.Tensor) -> torch.Tensor:
        mel = self.mel_basis @ self.magnitude(waveforms)
        return torch.log(mel.clamp_min(LOG_FLOOR)).transpose(1, 2).unsqueeze(1)


def silence_level() -> float:
    """The log-mel value of digital silence (used to pad spectrograms)."""
    return float(np.log(LOG_FLOOR))


def pad_frames(log_mel: torch.Tensor, multiple: int) -> torch.Tensor:
    """Pad the time axis (dim -2) with silence up to a multiple of ``multiple``."""
    frames = log_mel.shape[-2]
    extra = (-frames) % multiple
    if extra == 0:
        return log_mel
    return torch.nn.functional.pad(log_mel, (0, 0, 0, extra), value=silence_level())


def griffin_lim(log_mel: torch.Tensor, audio: AudioConfig, iterations: int) -> torch.Tensor:
    """Fallback vocoder: pseudo-inverse of the mel filterbank, then librosa's fast Griffin-Lim.

    ``log_mel`` is ``(n, 1, frames, n_mels)``; returns ``(n, frames * hop)`` float32.
    """
    import librosa

    basis = librosa.filters.mel(sr=audio.sample_rate, n_fft=audio.n_fft, n_mels=audio.n_mels, fmin=audio.f_min, fmax=audio.f_max)
    inverse = np.linalg.pinv(basis)
    mels = torch.exp(log_mel[:, 0]).transpose(1, 2).cpu().numpy()  # (n, n_mels, frames)
    samples = log_mel.shape[-2] * audio.hop_length
    waves = []
    for mel in mels:
        magnitude = np.maximum(inverse @ mel, 0.0)
        magnitude = np.pad(magnitude, ((0, 0), (0, 1)), mode="edge")  # librosa's centred STFT has frames + 1
        wave = librosa.griffinlim(
            magnitude, n_iter=iterations, hop_length=audio.hop_length, win_length=audio.win_length,
            n_fft=audio.n_fft, length=samples, random_state=0,
        )  # fmt: skip
        waves.append(wave.astype(np.float32))
    return torch.from_numpy(np.stack(waves))
