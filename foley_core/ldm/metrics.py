"""Distances between waveforms/spectrograms: training losses and reconstruction reports share them."""

from __future__ import annotations

import torch

from foley_core.ldm.mel import MelFrontEnd

# (n_fft, hop) pairs for 16 kHz audio: ~16, 32 and 64 ms windows.
STFT_RESOLUTIONS = ((256, 64), (512, 128), (1024, 256))
LOG_EPS = 1e-5  # added (not clamped) before logs, so gradients flow through near-silent outputs


def _stft_magnitude(waves: torch.Tensor, n_fft: int, hop: int) -> torch.Tensor:
    window = torch.hann_window(n_fft, device=waves.device, dtype=waves.dtype)
    spec = torch.view_as_real(torch.stft(waves, n_fft=n_fft, hop_length=hop, window=window, center=True, return_complex=True))
    return (spec.square().sum(-1) + 1e-10).sqrt()  # smooth at 0: a silent output still gets a gradient


def multi_resolution_stft(predicted: torch.Tensor, target: torch.Tensor, per_item: bool = False) -> torch.Tensor:
    """Spectral convergence + log-magnitude L1, averaged over ``STFT_RESOLUTIONS`` (Parallel WaveGAN's loss).

    ``predicted`` and ``target`` are ``(n, samples)``; returns a scalar, or ``(n,)`` with ``per_item``.
    """
    if predicted.shape != target.shape:
        raise ValueError(f"shape mismatch: {tuple(predicted.shape)} vs {tuple(target.shape)}")
    total = torch.zeros(predicted.shape[0], device=predicted.device)
    for n_fft, hop in STFT_RESOLUTIONS:
        p, t = _stft_magnitude(predicted, n_fft, hop), _stft_magnitude(target, n_fft, hop)
        convergence = torch.linalg.norm((t - p).flatten(1), dim=1) / torch.linalg.norm(t.flatten(1), dim=1)
        log_l1 = ((t + LOG_EPS).log() - (p + LOG_EPS).log()).abs().flatten(1).mean(dim=1)
        total = total + convergence + log_l1
    total = total / len(STFT_RESOLUTIONS)
    return total if per_item else total.mean()


def mel_l1(front_end: MelFrontEnd, predicted: torch.Tensor, target_log_mel: torch.Tensor, per_item: bool = False) -> torch.Tensor:
    """Mean |log-mel(predicted waveform) - target log-mel| (natural-log units).

    The predicted mel uses ``log(mel + 1e-5)`` rather than the front end's clamp so it is
    differentiable everywhere (identical wherever the mel is well above the floor)."""
    magnitude = (front_end.mel_basis @ _smooth_magnitude(front_end, predicted)).transpose(1, 2).unsqueeze(1)
    predicted_mel = (magnitude + LOG_EPS).log()
    frames = min(predicted_mel.shape[-2], target_log_mel.shape[-2])
    diff = (predicted_mel[..., :frames, :] - target_log_mel[..., :frames, :]).abs().flatten(1).mean(dim=1)
    return diff if per_item else diff.mean()


def _smooth_magnitude(front_end: MelFrontEnd, waves: torch.Tensor) -> torch.Tensor:
    audio = front_end.audio
    spec = torch.stft(waves, n_fft=audio.n_fft, hop_length=audio.hop_length, win_length=audio.win_length,
                      window=front_end.window, center=True, pad_mode="reflect", return_complex=True)  # fmt: skip
    power = torch.view_as_real(spec).square().sum(-1)[..., : front_end.frames_for(waves.shape[-1])]
    return (power + 1e-10).sqrt()
