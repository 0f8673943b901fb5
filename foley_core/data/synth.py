"""Deterministic procedural Foley synthesiser: a download-free corpus for the pipeline.

Every clip is drawn from its own generator seeded by ``clip_seed(seed, type, index)``,
so clip *i* of a class is identical however many clips are made and in whatever order.
Each sound type has one ``_synth_*`` function that samples its parameters (size, surface,
speed, count, distance ...), renders the audio and builds a caption that names the
sampled variant. Only numpy, scipy.signal and soundfile are used.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np
from scipy import signal

from foley_core.core.audio import write_text_atomic, write_wav_atomic
from foley_core.core.hashing import stable_seed

DCASE_SOUND_TYPES: tuple[str, ...] = (
    "DogBark",
    "Footstep",
    "GunShot",
    "Keyboard",
    "MovingMotorVehicle",
    "Rain",
    "Sneeze_Cough",
)
EXTRA_SOUND_TYPES: tuple[str, ...] = ("Bell", "Water", "Wind", "Bird", "DoorKnock", "Siren", "Clock")
SOUND_TYPES: tuple[str, ...] = DCASE_SOUND_TYPES + EXTRA_SOUND_TYPES

MIN_SAMPLE_RATE = 8000
CAPTIONS_CSV = "captions.csv"
SPEED_OF_SOUND = 343.0

Rng = np.random.Generator
SynthResult = tuple[np.ndarray, str]
T = TypeVar("T")


@dataclass(frozen=True)
class SynthClip:
    sound_type: str
    index: int
    audio: np.ndarray  # float32 mono, peak in [0.3, 0.95]
    caption: str


# --------------------------------------------------------------------------- seeding


def clip_seed(base_seed: int, sound_type: str, index: int) -> int:
    """A 64-bit seed that is stable across processes and platforms (``hash()`` is salted)."""
    return stable_seed(int(base_seed), sound_type, int(index), bits=64, byteorder="little")


# --------------------------------------------------------------------------- shared helpers


def _clamp_band(sr: int, lo: float, hi: float) -> tuple[float, float]:
    """Keep a band inside (0, 0.45*sr) so filter design never fails at low sample rates."""
    hi = min(hi, 0.45 * sr)
    lo = min(max(lo, 10.0), 0.8 * hi)
    return lo, hi


def _bandpass(x: np.ndarray, sr: int, lo: float, hi: float, order: int = 2) -> np.ndarray:
    lo, hi = _clamp_band(sr, lo, hi)
    sos = signal.butter(order, (lo, hi), btype="bandpass", fs=sr, output="sos")
    return signal.sosfilt(sos, x)


def _lowpass(x: np.ndarray, sr: int, cutoff: float, order: int = 2) -> np.ndarray:
    sos = signal.butter(order, min(max(cutoff, 10.0), 0.45 * sr), btype="lowpass", fs=sr, output="sos")
    return signal.sosfilt(sos, x)


def _highpass(x: np.ndarray, sr: int, cutoff: float, order: int = 2) -> np.ndarray:
    sos = signal.butter(order, min(max(cutoff, 10.0), 0.45 * sr), btype="highpass", fs=sr, output="sos")
    return signal.sosfilt(sos, x)


def _resonator(x: np.ndarray, sr: int, freq: float, q: float) -> np.ndarray:
    """A second-order peak filter: one formant of a vocal tract or one mode of a body."""
    b, a = signal.iirpeak(min(freq, 0.45 * sr), q, fs=sr)
    return signal.lfilter(b, a, x)


def _unit(x: np.ndarray) -> np.ndarray:
    peak = float(np.max(np.abs(x))) if x.size else 0.0
    return x / peak if peak > 0 else x


def _seconds(n: int, sr: int) -> np.ndarray:
    return np.arange(n) / sr


def _attack_decay(n: int, sr: int, attack_s: float, tau_s: float) -> np.ndarray:
    """Linear attack then exponential decay with time constant ``tau_s``."""
    t = _seconds(n, sr)
    attack = max(attack_s, 1.0 / sr)
    rise = np.clip(t / attack, 0.0, 1.0)
    return rise * np.exp(-np.maximum(t - attack, 0.0) / max(tau_s, 1e-4))


def _fade_edges(x: np.ndarray, sr: int, fade_s: float = 0.003) -> np.ndarray:
    m = min(int(fade_s * sr), x.size // 2)
    if m > 0:
        ramp = np.linspace(0.0, 1.0, m)
        x = x.copy()
        x[:m] *= ramp
        x[-m:] *= ramp[::-1]
    return x


def _colored_noise(rng: Rng, n: int, exponent: float) -> np.ndarray:
    """Noise with power spectrum ~ 1/f**exponent (1: pink, 2: brown), unit std."""
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n)
    freqs[0] = freqs[1] if n > 1 else 1.0
    shaped = np.fft.irfft(spectrum / freqs ** (exponent / 2.0), n)
    std = float(np.std(shaped))
    return shaped / std if std > 0 else shaped


def _smooth_noise(rng: Rng, n: int, sr: int, rate_hz: float) -> np.ndarray:
    """A slowly wandering control signal in about [-1, 1] that changes ``rate_hz`` times a second."""
    points = max(int(n / sr * rate_hz) + 3, 3)
    knots = rng.uniform(-1.0, 1.0, points)
    pos = np.linspace(0.0, points - 1.0, n)
    # Cosine interpolation keeps the control curve free of corners (no zipper noise).
    i = np.minimum(np.floor(pos).astype(int), points - 2)
    frac = (1.0 - np.cos(np.pi * (pos - i))) / 2.0
    return knots[i] * (1.0 - frac) + knots[i + 1] * frac


def _harmonic_tone(
    f0: np.ndarray, sr: int, rng: Rng, n_harmonics: int = 30, rolloff: float = 1.0, amps: np.ndarray | None = None
) -> np.ndarray:
    """Sum of harmonics of a time-varying f0; partials above 0.45*sr are muted (no aliasing)."""
    phase = 2.0 * np.pi * np.cumsum(f0) / sr + rng.uniform(0.0, 2.0 * np.pi)
    out = np.zeros_like(f0, dtype=np.float64)
    for k in range(1, n_harmonics + 1):
        audible = k * f0 < 0.45 * sr
        if not audible.any():
            break
        amp = amps[k - 1] if amps is not None and k - 1 < len(amps) else k ** (-rolloff)
        out += amp * np.sin(k * phase) * audible
    return out


def _damped_sines(
    sr: int, rng: Rng, freqs: Sequence[float], amps: Sequence[float], taus: Sequence[float], length_s: float
) -> np.ndarray:
    """Modal synthesis: each resonant mode rings at its frequency and dies away exponentially."""
    t = _seconds(max(int(length_s * sr), 1), sr)
    out = np.zeros_like(t)
    for f, a, tau in zip(freqs, amps, taus):
        if f < 0.45 * sr:
            out += a * np.sin(2.0 * np.pi * f * t + rng.uniform(0, 2 * np.pi)) * np.exp(-t / tau)
    return out


def _noise_burst(rng: Rng, sr: int, length_s: float, attack_s: float, tau_s: float) -> np.ndarray:
    m = max(int(length_s * sr), 2)
    return rng.standard_normal(m) * _attack_decay(m, sr, attack_s, tau_s)


def _reverb(x: np.ndarray, sr: int, rng: Rng, rt60: float, wet: float, damping_hz: float = 5000.0) -> np.ndarray:
    """Convolve with a decaying noise impulse response (a cheap diffuse room/outdoor tail)."""
    m = max(int(rt60 * sr), 16)
    t = _seconds(m, sr)
    ir = rng.standard_normal(m) * np.exp(-6.91 * t / rt60)  # -60 dB at rt60
    ir = _lowpass(ir, sr, damping_hz)
    tail = signal.fftconvolve(x, ir)[: x.size]
    dry_rms = float(np.sqrt(np.mean(x**2))) or 1.0
    tail_rms = float(np.sqrt(np.mean(tail**2))) or 1.0
    return (1.0 - wet) * x + wet * tail * (dry_rms / tail_rms)


def _place(buf: np.ndarray, event: np.ndarray, start: int, gain: float = 1.0) -> None:
    """Mix ``event`` into ``buf`` at sample ``start``, cutting whatever runs past the end."""
    if start >= buf.size or start + event.size <= 0:
        return
    lo = max(start, 0)
    hi = min(start + event.size, buf.size)
    buf[lo:hi] += gain * event[lo - start : hi - start]


def _schedule(
    rng: Rng, count: int, first_s: tuple[float, float], gap_s: tuple[float, float], event_s: float, total_s: float
) -> list[float]:
    """Onset times of up to ``count`` events that each start early enough to be mostly heard.

    Always returns at least one onset, so captions can count events truthfully even for short clips.
    """
    start = min(rng.uniform(*first_s), max(total_s - event_s, 0.0))
    onsets = [start]
    while len(onsets) < count:
        start = onsets[-1] + event_s + rng.uniform(*gap_s)
        if start + 0.6 * event_s > total_s:
            break
        onsets.append(start)
    return onsets


def _impulse_train(
    buf_len: int, positions: np.ndarray, amps: np.ndarray, kernel: np.ndarray
) -> np.ndarray:
    """Many copies of one short kernel at given sample positions (fast Poisson textures)."""
    train = np.zeros(buf_len)
    np.add.at(train, positions, amps)
    return signal.fftconvolve(train, kernel)[:buf_len]


_NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")


def _number(count: int) -> str:
    return _NUMBER_WORDS[count] if 0 <= count < len(_NUMBER_WORDS) else str(count)


def _times(count: int) -> str:
    return {1: "once", 2: "twice"}.get(count, f"{_number(count)} times")


def _plural(count: int, noun: str, plural: str | None = None) -> str:
    return f"{_number(count)} {noun if count == 1 else (plural or noun + 's')}"


def _pick(rng: Rng, options: Sequence[T]) -> T:
    return options[int(rng.integers(len(options)))]


def _caption(rng: Rng, templates: Sequence[str], **fields: str) -> str:
    # Empty optional fields leave double spaces or " ," behind; normalise them away.
    text = " ".join(_pick(rng, templates).format(**fields).split())
    return text.replace(" ,", ",")


# --------------------------------------------------------------------------- DCASE classes


def _synth_dog_bark(rng: Rng, sr: int, n: int) -> SynthResult:
    size = _pick(rng, ("small", "medium", "large"))
    f0_range = {"small": (600.0, 900.0), "medium": (420.0, 650.0), "large": (300.0, 450.0)}[size]
    dur_range = {"small": (0.08, 0.15), "medium": (0.11, 0.2), "large": (0.15, 0.25)}[size]
    # Vocal-tract formants scale inversely with body size.
    scale = {"small": 1.3, "medium": 1.0, "large": 0.8}[size]
    formants = (rng.uniform(700, 1100) * scale, rng.uniform(1500, 2200) * scale, rng.uniform(2800, 3600) * scale)
    starts = _schedule(rng, int(rng.integers(1, 5)), (0.05, 0.4), (0.12, 0.5), dur_range[1], n / sr)
    out = np.zeros(n)
    for onset in starts:
        m = int(rng.uniform(*dur_range) * sr)
        u = np.linspace(0.0, 1.0, m)
        apex = rng.uniform(0.2, 0.45)
        peak_f0 = rng.uniform(*f0_range)
        # Pitch rises quickly to the apex, then falls: the characteristic "woof" contour.
        contour = np.where(u < apex, 0.75 + 0.25 * u / apex, 1.0 - 0.35 * (u - apex) / (1.0 - apex)) * peak_f0
        voiced = _harmonic_tone(contour, sr, rng, n_harmonics=25, rolloff=rng.uniform(0.6, 1.0))
        shaped = 0.35 * voiced + sum(
            g * _resonator(voiced, sr, f, q) for f, g, q in zip(formants, (1.0, 0.6, 0.3), (4.0, 6.0, 8.0))
        )
        env = _attack_decay(m, sr, rng.uniform(0.005, 0.015), rng.uniform(0.35, 0.7) * m / sr)
        bark = _unit(shaped) * env
        bark += 0.06 * _unit(_bandpass(rng.standard_normal(m), sr, 500, 4000)) * env  # breathiness
        onset_noise = _highpass(_noise_burst(rng, sr, 0.02, 0.001, 0.005), sr, 1000)
        bark[: onset_noise.size] += 0.35 * _unit(onset_noise)
        _place(out, _fade_edges(bark, sr), int(onset * sr), rng.uniform(0.7, 1.0))
    if rng.random() < 0.5:
        out = _reverb(out, sr, rng, rng.uniform(0.2, 0.6), rng.uniform(0.05, 0.2))
    count = len(starts)
    size_word = _pick(rng, {"small": ("small", "little"), "medium": ("", "medium-sized"), "large": ("large", "big")}[size])
    verb = _pick(rng, ("yaps", "barks")) if size == "small" else _pick(rng, ("barks", "woofs"))
    caption = _caption(
        rng,
        (
            "a {size} dog {verb} {times}",
            "{barks} from a {size} dog",
            "a {size} dog barking {times}",
            "a {size} dog lets out {barks}",
            "someone's {size} dog {verb} {times}",
        ),
        size=size_word,
        verb=verb,
        times=_times(count),
        barks=_plural(count, "bark") if count > 1 else "a single bark",
    )
    return out, caption


def _footstep_texture(rng: Rng, sr: int, surface: str) -> np.ndarray:
    """The surface's own sound for one contact: the surface decides the physics."""
    if surface == "wood":
        f1 = rng.uniform(70, 130)
        body = _damped_sines(
            sr, rng, (f1, f1 * rng.uniform(2.2, 2.8), f1 * rng.uniform(4.5, 6.0)), (1.0, 0.5, 0.25),
            (rng.uniform(0.04, 0.08), 0.03, 0.015), 0.25,
        )
        click = _lowpass(_noise_burst(rng, sr, 0.01, 0.0005, 0.002), sr, 3000)
        body[: click.size] += 0.4 * _unit(click)
        return body
    if surface == "gravel":
        length = rng.uniform(0.1, 0.2)
        m = int(length * sr)
        out = np.zeros(m)
        # Crunch = dozens of tiny stone-on-stone grains with a decaying density.
        for _ in range(int(rng.integers(25, 60))):
            pos = int(m * rng.beta(1.2, 3.0))
            grain = _noise_burst(rng, sr, rng.uniform(0.001, 0.004), 0.0002, 0.001)
            _place(out, grain, pos, rng.uniform(0.2, 1.0))
        out = _highpass(out, sr, rng.uniform(1200, 2500))
        thump = _lowpass(_noise_burst(rng, sr, 0.06, 0.002, 0.015), sr, 250)
        out[: thump.size] += 0.3 * _unit(thump) * np.max(np.abs(out))
        return out
    if surface == "concrete":
        click = _bandpass(_noise_burst(rng, sr, 0.015, 0.0002, rng.uniform(0.001, 0.003)), sr, 1000, 6000)
        body = _damped_sines(sr, rng, (rng.uniform(60, 100),), (0.25,), (0.02,), 0.08)
        body[: click.size] += _unit(click)
        scuff = _bandpass(rng.standard_normal(body.size), sr, 2000, 6000) * _attack_decay(body.size, sr, 0.01, 0.02)
        return body + 0.05 * _unit(scuff)
    # Snow: soft, slow-attack, muffled compression with a little low crunch.
    m = int(rng.uniform(0.15, 0.25) * sr)
    soft = _lowpass(rng.standard_normal(m), sr, rng.uniform(700, 1400), order=4)
    soft *= _attack_decay(m, sr, rng.uniform(0.02, 0.04), rng.uniform(0.04, 0.07))
    grains = _lowpass(rng.standard_normal(m) * (rng.random(m) < 0.02), sr, 1500)
    return _unit(soft) + 0.3 * _unit(grains) * _attack_decay(m, sr, 0.02, 0.05)


def _footstep_impact(rng: Rng, sr: int, surface: str) -> np.ndarray:
    """One heel or toe contact: the body-weight thud common to all surfaces plus the surface texture."""
    texture = _unit(_footstep_texture(rng, sr, surface))
    thud = _lowpass(_noise_burst(rng, sr, 0.12, 0.003, rng.uniform(0.015, 0.03)), sr, rng.uniform(150, 300), order=4)
    _place(texture, _unit(thud), 0, rng.uniform(0.5, 0.9) if surface != "wood" else 0.3)
    return texture


def _synth_footstep(rng: Rng, sr: int, n: int) -> SynthResult:
    surface = _pick(rng, ("wood", "gravel", "concrete", "snow"))
    running = rng.random() < 0.35
    interval = rng.uniform(0.3, 0.4) if running else rng.uniform(0.45, 0.7)
    wanted = int(rng.integers(3, 11))
    t = rng.uniform(0.05, 0.3)
    out = np.zeros(n)
    count = 0
    while count < wanted and t + 0.1 < n / sr:
        toe_delay = rng.uniform(0.03, 0.05) if running else rng.uniform(0.05, 0.09)
        level = rng.uniform(0.6, 1.0) * (0.85 if count % 2 else 1.0)  # left/right foot differ
        _place(out, _footstep_impact(rng, sr, surface), int(t * sr), level)
        _place(out, _footstep_impact(rng, sr, surface), int((t + toe_delay) * sr), level * rng.uniform(0.4, 0.8))
        count += 1
        t += interval * rng.uniform(0.93, 1.07)
    out = _reverb(out, sr, rng, rng.uniform(0.15, 0.5), rng.uniform(0.05, 0.2))
    where = {
        "wood": ("a wooden floor", "creaky floorboards", "wooden planks"),
        "gravel": ("gravel", "a gravel path", "loose stones"),
        "concrete": ("concrete", "a concrete floor", "pavement"),
        "snow": ("snow", "fresh snow", "a snowy path"),
    }[surface]
    pace = _pick(rng, ("quick", "running", "fast")) if running else _pick(rng, ("slow", "steady", "walking"))
    caption = _caption(
        rng,
        (
            "footsteps on {where}",
            "someone {moves} on {where}",
            "{steps} on {where}",
            "a person {moving} across {where}",
            "{pace} footsteps on {where}",
        ),
        where=_pick(rng, where),
        moves="runs" if running else "walks",
        moving="running" if running else "walking",
        steps=_plural(count, f"{pace} step"),
        pace=pace,
    )
    return out, caption


def _gunshot(rng: Rng, sr: int) -> np.ndarray:
    """Muzzle blast: broadband crack with a near-instant attack plus a low noise boom."""
    crack = _noise_burst(rng, sr, 0.25, 0.0003, rng.uniform(0.008, 0.025))
    boom = _lowpass(_noise_burst(rng, sr, 0.25, 0.001, rng.uniform(0.04, 0.09)), sr, rng.uniform(150, 300), order=4)
    return _unit(crack) + rng.uniform(0.4, 0.8) * _unit(boom)


def _synth_gunshot(rng: Rng, sr: int, n: int) -> SynthResult:
    variant = str(rng.choice(("close", "distant", "echo"), p=(0.5, 0.25, 0.25)))
    rapid = rng.random() < 0.5
    gap = (0.1, 0.3) if rapid else (0.5, 1.2)
    starts = _schedule(rng, int(rng.integers(1, 4)), (0.05, 0.3), gap, 0.1, n / sr)
    out = np.zeros(n)
    for onset in starts:
        _place(out, _gunshot(rng, sr), int(onset * sr), rng.uniform(0.8, 1.0))
    if variant == "distant":
        out = _lowpass(out, sr, rng.uniform(1500, 3000), order=4)
        out = _reverb(out, sr, rng, rng.uniform(1.0, 2.0), rng.uniform(0.55, 0.75), damping_hz=2500)
    elif variant == "echo":
        echoed = out.copy()
        delay = rng.uniform(0.25, 0.6)
        for k in range(1, 4):  # discrete reflections off a distant wall or hillside
            _place(echoed, _lowpass(out, sr, 3000), int(k * delay * sr), rng.uniform(0.25, 0.45) ** k)
        out = _reverb(echoed, sr, rng, rng.uniform(0.8, 1.5), rng.uniform(0.3, 0.5))
    else:
        out = _reverb(out, sr, rng, rng.uniform(0.3, 1.0), rng.uniform(0.2, 0.4))
    count = len(starts)
    where = {
        "close": ("", "nearby", "at close range"),
        "distant": ("in the distance", "far away", "from far off"),
        "echo": ("with a loud echo", "echoing off the hills", "echoing loudly"),
    }[variant]
    manner = "in quick succession" if rapid and count > 1 else ""
    caption = _caption(
        rng,
        (
            "a gun fires {times} {where} {manner}",
            "{shots} {where} {manner}",
            "the sound of {fired} {where}",
            "someone shoots a gun {times} {where}",
            "{gunshots} {where} {manner}",
        ),
        times=_times(count),
        where=_pick(rng, where),
        manner=manner,
        shots=_plural(count, "gunshot"),
        fired=_plural(count, "shot") + " being fired",
        gunshots=f"{_plural(count, 'gunshot')} ring out" if count > 1 else "a single gunshot rings out",
    )
    return out, caption


def _key_click(rng: Rng, sr: int, mechanical: bool) -> np.ndarray:
    """One key: a bright 2-8 kHz transient, plus a release click on mechanical switches."""
    m = int(0.12 * sr)
    tau = rng.uniform(0.002, 0.005) if mechanical else rng.uniform(0.001, 0.003)
    press = _bandpass(_noise_burst(rng, sr, 0.02, 0.0002, tau), sr, rng.uniform(1800, 2600), rng.uniform(6000, 8000))
    ring = _damped_sines(sr, rng, (rng.uniform(3000, 6000),), (0.3,), (0.003,), 0.02)
    out = np.zeros(m)
    _place(out, _unit(press) + ring, 0)
    if mechanical:
        thock = _lowpass(_noise_burst(rng, sr, 0.02, 0.0005, 0.004), sr, rng.uniform(500, 1000))
        _place(out, _unit(thock), 0, 0.3)
        _place(out, _unit(press), int(rng.uniform(0.04, 0.09) * sr), rng.uniform(0.3, 0.5))
    return out


def _space_bar(rng: Rng, sr: int) -> np.ndarray:
    """The space bar is longer and heavier: a lower thunk with a little stabiliser rattle."""
    thunk = _bandpass(_noise_burst(rng, sr, 0.06, 0.0005, rng.uniform(0.008, 0.015)), sr, 300, 2500)
    body = _damped_sines(sr, rng, (rng.uniform(150, 300),), (0.5,), (0.015,), 0.06)
    rattle = _bandpass(_noise_burst(rng, sr, 0.06, 0.003, 0.006), sr, 3000, 7000)
    return _unit(thunk) + body + 0.2 * _unit(rattle)


def _synth_keyboard(rng: Rng, sr: int, n: int) -> SynthResult:
    mechanical = rng.random() < 0.5
    rate = rng.uniform(5.0, 12.0)
    keys = [_key_click(rng, sr, mechanical) for _ in range(6)]  # each physical key sounds a bit different
    space = _space_bar(rng, sr)
    out = np.zeros(n)
    t = rng.uniform(0.05, 0.3)
    total = n / sr
    while t < total:
        for _ in range(int(rng.integers(2, 9))):
            _place(out, keys[int(rng.integers(len(keys)))], int(t * sr), rng.uniform(0.5, 1.0))
            t += rng.uniform(0.6, 1.4) / rate  # human timing jitter
        if rng.random() < 0.7:
            _place(out, space, int(t * sr), rng.uniform(0.9, 1.3))
            t += 1.0 / rate
        t += rng.uniform(0.1, 0.5) if rng.random() < 0.85 else rng.uniform(0.6, 1.2)  # pause between words
    out = _reverb(out, sr, rng, rng.uniform(0.15, 0.4), rng.uniform(0.05, 0.15))
    speed = "fast" if rate > 9.0 else ("slow" if rate < 7.0 else "")
    adverb = {"fast": ("quickly", "rapidly", "fast"), "slow": ("slowly", "leisurely", "slowly"), "": ("steadily", "", "")}[speed]
    board = _pick(rng, ("mechanical keyboard", "clicky keyboard")) if mechanical else _pick(
        rng, ("laptop keyboard", "keyboard", "computer keyboard")
    )
    caption = _caption(
        rng,
        (
            "someone typing {adverb} on a {board}",
            "{speed} typing on a {board}",
            "the clatter of keys on a {board} as someone types {adverb}",
            "a person types {adverb} on a {board}",
            "keys clicking {adverb} on a {board}",
        ),
        adverb=_pick(rng, adverb),
        speed=speed,
        board=board,
    )
    return out, caption


def _synth_moving_motor_vehicle(rng: Rng, sr: int, n: int) -> SynthResult:
    vehicle = _pick(rng, ("car", "truck", "motorbike"))
    motion = _pick(rng, ("pass_by", "approach", "recede", "cruise"))
    firing = {"car": (35.0, 70.0), "truck": (30.0, 50.0), "motorbike": (70.0, 120.0)}[vehicle]
    speed_range = {"car": (10.0, 30.0), "truck": (8.0, 20.0), "motorbike": (15.0, 35.0)}[vehicle]
    speed = rng.uniform(*speed_range)
    total = n / sr
    t = _seconds(n, sr)
    closest = rng.uniform(3.0, 12.0)
    t_closest = {
        "pass_by": rng.uniform(0.35, 0.65) * total,
        "approach": total + rng.uniform(0.3, 1.5),
        "recede": -rng.uniform(0.3, 1.5),
        "cruise": rng.uniform(0.0, total),
    }[motion]
    if motion == "cruise":
        closest = rng.uniform(30.0, 60.0)
    x = speed * (t - t_closest)
    dist = np.sqrt(x**2 + closest**2)
    radial = speed * x / dist  # > 0 while moving away
    doppler = SPEED_OF_SOUND / (SPEED_OF_SOUND + radial)
    gain = closest / dist  # spherical spreading, 1 at the closest point
    f_fire = rng.uniform(*firing) * (1.0 + 0.02 * _smooth_noise(rng, n, sr, 3.0)) * (1 + rng.uniform(-0.1, 0.15) * t / total)
    n_harm = {"car": 24, "truck": 30, "motorbike": 16}[vehicle]
    amps = np.arange(1, n_harm + 1) ** (-rng.uniform(0.5, 1.0)) * rng.uniform(0.3, 1.0, n_harm)
    freq = f_fire * doppler
    engine = _harmonic_tone(freq, sr, rng, n_harmonics=n_harm, amps=amps)
    # Combustion rasp: noise amplitude-modulated at the firing rate.
    phase = 2.0 * np.pi * np.cumsum(freq) / sr
    rasp = _bandpass(rng.standard_normal(n), sr, 200, 2500) * (0.5 + 0.5 * np.sin(phase)) ** 2
    road = _lowpass(_colored_noise(rng, n, 1.0), sr, rng.uniform(800, 2000))
    tyres = _bandpass(rng.standard_normal(n), sr, 1000, 4000)
    mix_rasp = {"car": 0.2, "truck": 0.3, "motorbike": 0.6}[vehicle]
    out = (
        _unit(engine)
        + mix_rasp * _unit(rasp)
        + 0.4 * (speed / 30.0) * _unit(road)
        + 0.1 * (speed / 30.0) * _unit(tyres)
    )
    # Air absorbs highs with distance: blend toward a lowpassed copy when the vehicle is far.
    far = np.clip((dist - closest) / 60.0, 0.0, 1.0)
    out = (1.0 - far) * out + far * _lowpass(out, sr, 800)
    out *= gain
    out = _reverb(out, sr, rng, rng.uniform(0.3, 0.8), rng.uniform(0.05, 0.2))
    fast = speed > 22.0
    slow = speed < 12.0
    noun = {
        "car": ("a car", "a passenger car", "an automobile"),
        "truck": ("a truck", "a heavy truck", "a lorry"),
        "motorbike": ("a motorcycle", "a motorbike", "a dirt bike"),
    }[vehicle]
    moves = {
        "pass_by": ("passes by", "drives past", "zooms past" if fast else "rolls past"),
        "approach": ("approaches", "drives closer", "comes closer"),
        "recede": ("drives away", "moves off into the distance", "pulls away"),
        "cruise": ("drives along a distant road", "rumbles along in the distance", "drives by far away"),
    }[motion]
    how = "quickly" if fast else ("slowly" if slow else "")
    caption = _caption(
        rng,
        (
            "{veh} {moves} {how}",
            "the engine of {veh} as it {moves} {how}",
            "{veh} with a {engine} engine {moves} {how}",
            "you can hear {veh} as it {moves} {how}",
            "engine noise: {veh} {moves}",
        ),
        veh=_pick(rng, noun),
        moves=_pick(rng, moves),
        how=how,
        engine=_pick(rng, ("rumbling", "humming", "roaring") if vehicle != "car" else ("humming", "purring", "loud")),
    )
    return out, caption


def _rain_drop_kernel(rng: Rng, sr: int, tin_roof: bool) -> np.ndarray:
    if tin_roof:
        # Metal sheet: drops excite a few high, ringing modes ("pings").
        f = rng.uniform(1500, 5000)
        return _damped_sines(
            sr, rng, (f, f * rng.uniform(1.3, 1.7), rng.uniform(200, 400)), (1.0, 0.5, 0.3),
            (rng.uniform(0.015, 0.05), 0.01, 0.03), 0.15,
        )
    click = _bandpass(_noise_burst(rng, sr, 0.008, 0.0002, rng.uniform(0.0008, 0.002)), sr, 1500, 6000)
    return _unit(click) + _damped_sines(sr, rng, (rng.uniform(1000, 3000),), (0.3,), (0.004,), 0.008)


def _synth_rain(rng: Rng, sr: int, n: int) -> SynthResult:
    intensity = _pick(rng, ("light", "moderate", "heavy"))
    tin_roof = rng.random() < 0.3
    total = n / sr
    cutoff = {"light": (2500, 4000), "moderate": (3000, 5500), "heavy": (4000, 7000)}[intensity]
    brown = rng.uniform(0.2, 0.6)
    bed = (1 - brown) * _colored_noise(rng, n, 1.0) + brown * _colored_noise(rng, n, 2.0)
    bed = _highpass(_lowpass(bed, sr, rng.uniform(*cutoff), order=3), sr, 100)
    bed *= 1.0 + 0.15 * _smooth_noise(rng, n, sr, 0.7)  # the shower breathes slowly
    bed_level = {"light": 0.25, "moderate": 0.6, "heavy": 1.0}[intensity]
    rate = rng.uniform(*{"light": (15, 50), "moderate": (60, 150), "heavy": (150, 400)}[intensity])
    drops = np.zeros(n)
    for _ in range(4):  # a few drop flavours, each placed as a Poisson train
        count = int(rng.poisson(rate * total / 4))
        if count:
            pos = rng.integers(0, n, count)
            amps = rng.lognormal(0.0, 0.6, count)
            drops += _impulse_train(n, pos, amps, _rain_drop_kernel(rng, sr, tin_roof))
    out = bed_level * _unit(bed) + (0.7 if tin_roof else 0.5) * _unit(drops)
    adjective = {
        "light": ("light", "gentle", "soft"),
        "moderate": ("steady", "constant", ""),
        "heavy": ("heavy", "pouring", "torrential"),
    }[intensity]
    noun = {"light": ("rain", "drizzle"), "moderate": ("rain", "rainfall"), "heavy": ("rain", "downpour")}[intensity]
    where = ("on a tin roof", "on a metal roof", "drumming on a tin roof") if tin_roof else (
        "on the ground", "outside", "on the pavement"
    )
    caption = _caption(
        rng,
        (
            "{adj} {noun} falling {where}",
            "the sound of {adj} {noun} {where}",
            "{adj} rain pattering {where}" if intensity == "light" else "{adj} rain pouring down {where}",
            "a {adj} {noun} {where}",
            "it is raining {hard} {where}",
        ),
        adj=_pick(rng, adjective),
        noun=_pick(rng, noun),
        where=_pick(rng, where),
        hard={"light": "lightly", "moderate": "steadily", "heavy": "heavily"}[intensity],
    )
    return out, caption


def _vowel(
    rng: Rng, sr: int, f0: np.ndarray, formants: Sequence[float], breath: float
) -> np.ndarray:
    """A glottal source (steep harmonic rolloff) filtered by vowel formants, with breath noise."""
    source = _harmonic_tone(f0, sr, rng, n_harmonics=40, rolloff=1.2)
    voiced = sum(g * _resonator(source, sr, f, 5.0) for f, g in zip(formants, (1.0, 0.5, 0.25)))
    noise = _bandpass(rng.standard_normal(f0.size), sr, 300, 5000)
    return _unit(voiced) + breath * _unit(noise)


def _cough(rng: Rng, sr: int, f0: float) -> np.ndarray:
    """Explosive onset with a short voiced part, then a turbulent noisy burst."""
    m = int(rng.uniform(0.15, 0.4) * sr)
    voiced_m = int(rng.uniform(0.03, 0.07) * sr)
    contour = np.linspace(f0 * 1.1, f0 * 0.9, voiced_m)
    formants = (rng.uniform(500, 750), rng.uniform(1100, 1600), rng.uniform(2300, 2900))
    voiced = _vowel(rng, sr, contour, formants, 0.3) * _attack_decay(voiced_m, sr, 0.004, 0.04)
    noise = rng.standard_normal(m)
    burst = 0.4 * _bandpass(noise, sr, 300, 5000) + sum(_resonator(noise, sr, f, 3.0) for f in formants[:2])
    burst = _unit(burst) * _attack_decay(m, sr, rng.uniform(0.003, 0.01), rng.uniform(0.25, 0.4) * m / sr)
    out = burst * rng.uniform(0.6, 0.9)
    _place(out, _unit(voiced), 0)
    return _fade_edges(out, sr)


def _sneeze(rng: Rng, sr: int, f0: float) -> np.ndarray:
    """A rising voiced "ah" inhale, a brief hold, then the explosive noisy "choo"."""
    inhale_m = int(rng.uniform(0.3, 0.7) * sr)
    contour = f0 * np.linspace(1.0, rng.uniform(1.3, 1.6), inhale_m)
    ah = _vowel(rng, sr, contour, (rng.uniform(700, 850), rng.uniform(1100, 1300), 2500.0), 0.5)
    ah *= np.linspace(0.05, 1.0, inhale_m) ** 1.5  # crescendo into the sneeze
    hold_m = int(rng.uniform(0.03, 0.08) * sr)
    choo_m = int(rng.uniform(0.15, 0.35) * sr)
    choo = _bandpass(rng.standard_normal(choo_m), sr, rng.uniform(800, 1500), 7000, order=3)
    choo = _unit(choo) * _attack_decay(choo_m, sr, 0.003, choo_m / sr * 0.3)
    oo = _vowel(rng, sr, np.full(choo_m, f0 * 1.2), (320.0, 800.0, 2300.0), 0.2)
    choo += 0.25 * _unit(oo) * _attack_decay(choo_m, sr, 0.02, choo_m / sr * 0.4)
    out = np.zeros(inhale_m + hold_m + choo_m)
    _place(out, 0.45 * _unit(ah), 0)
    _place(out, _unit(choo), inhale_m + hold_m)
    return _fade_edges(out, sr)


def _synth_sneeze_cough(rng: Rng, sr: int, n: int) -> SynthResult:
    sneeze = rng.random() < 0.4
    person = _pick(rng, ("man", "woman"))
    f0 = rng.uniform(130, 180) if person == "man" else rng.uniform(190, 260)
    out = np.zeros(n)
    if sneeze:
        _place(out, _sneeze(rng, sr, f0), int(rng.uniform(0.05, 0.3) * sr))
        count = 1
    else:
        starts = _schedule(rng, int(rng.integers(1, 4)), (0.05, 0.3), (0.1, 0.4), 0.3, n / sr)
        for onset in starts:
            _place(out, _cough(rng, sr, f0 * rng.uniform(0.95, 1.05)), int(onset * sr), rng.uniform(0.7, 1.0))
        count = len(starts)
    out = _reverb(out, sr, rng, rng.uniform(0.2, 0.6), rng.uniform(0.05, 0.2))
    who = _pick(rng, (f"a {person}", f"a {person}", "someone", "a person"))
    their = {"a man": "his", "a woman": "her"}.get(who, "their")
    if sneeze:
        templates = (
            "{who} sneezes",
            "{who} sneezes loudly",
            "a loud sneeze from {who}",
            "{who} inhales sharply and then sneezes",
            "{who} lets out a big sneeze",
        )
    else:
        templates = (
            "{who} coughs {times}",
            "{coughs} from {who}",
            "{who} coughing {times}",
            "{who} has a {kind} cough, coughing {times}",
            "{who} clears {their} throat and coughs {times}",
        )
    caption = _caption(
        rng, templates, who=who, their=their, times=_times(count), coughs=_plural(count, "cough"),
        kind=_pick(rng, ("dry", "harsh", "hacking")),
    )
    return out, caption


# --------------------------------------------------------------------------- extra classes


# Partial ratios of a minor-third church bell (hum, prime, tierce, quint, nominal, ...): inharmonic.
_BELL_RATIOS = (0.5, 1.0, 1.19, 1.5, 2.0, 2.52, 2.66, 3.01, 4.1)


def _synth_bell(rng: Rng, sr: int, n: int) -> SynthResult:
    size = _pick(rng, ("small", "medium", "large"))
    base = rng.uniform(*{"small": (900, 1600), "medium": (400, 800), "large": (150, 350)}[size])
    tau = rng.uniform(*{"small": (0.5, 1.2), "medium": (1.0, 2.5), "large": (2.5, 5.0)}[size])
    ratios = np.array(_BELL_RATIOS) * rng.uniform(0.985, 1.015, len(_BELL_RATIOS))
    amps = rng.uniform(0.3, 1.0, len(ratios)) / np.sqrt(np.arange(1, len(ratios) + 1))
    taus = tau * (1.0 / ratios) ** 0.7  # higher partials die faster
    gap = (0.8, 1.6) if size != "large" else (1.2, 2.2)
    starts = _schedule(rng, int(rng.integers(1, 4)), (0.05, 0.3), gap, 0.2, n / sr)
    out = np.zeros(n)
    for onset in starts:
        strike_len = min(tau * 4.0, n / sr)
        partials = _damped_sines(sr, rng, base * ratios, amps, taus, strike_len)
        # A slightly detuned twin of the nominal gives the slow beating of real bells.
        partials += _damped_sines(sr, rng, (base * ratios[4] * 1.003,), (amps[4] * 0.5,), (taus[4],), strike_len)
        strike = _highpass(_noise_burst(rng, sr, 0.01, 0.0002, 0.002), sr, 2000)
        partials[: strike.size] += 0.2 * _unit(strike)
        _place(out, partials, int(onset * sr), rng.uniform(0.8, 1.0))
    count = len(starts)
    noun = {"small": ("small bell", "little bell", "hand bell"), "medium": ("bell", "bell"), "large": (
        "large church bell", "big bell", "church bell")}[size]
    verb = {"small": ("chimes", "tinkles", "rings"), "medium": ("rings", "chimes"), "large": ("tolls", "rings", "booms")}[size]
    caption = _caption(
        rng,
        (
            "a {noun} {verb} {times}",
            "{strikes} of a {noun}",
            "the ringing of a {noun}, struck {times}",
            "a {noun} {verb} {times} and slowly fades",
        ),
        noun=_pick(rng, noun),
        verb=_pick(rng, verb),
        times=_times(count),
        strikes=_plural(count, "strike"),
    )
    return out, caption


def _bubble(rng: Rng, sr: int, f_range: tuple[float, float], tau_range: tuple[float, float]) -> np.ndarray:
    """A bubble rings near its Minnaert frequency and glides upward as it rises and shrinks."""
    f0 = rng.uniform(*f_range)
    tau = rng.uniform(*tau_range)
    t = _seconds(int(tau * 5 * sr), sr)
    freq = f0 * (1.0 + rng.uniform(0.5, 3.0) * t / t[-1])
    freq = np.minimum(freq, 0.45 * sr)
    return np.sin(2 * np.pi * np.cumsum(freq) / sr) * np.exp(-t / tau) * np.minimum(t / 0.001, 1.0)


def _synth_water(rng: Rng, sr: int, n: int) -> SynthResult:
    variant = _pick(rng, ("bubbling", "stream", "dripping"))
    total = n / sr
    out = np.zeros(n)
    if variant == "dripping":
        starts = _schedule(rng, 20, (0.05, 0.4), (0.15, 0.8), 0.1, total)
        for onset in starts:
            _place(out, _bubble(rng, sr, (500, 1500), (0.02, 0.06)), int(onset * sr), rng.uniform(0.5, 1.0))
        out = _reverb(out, sr, rng, rng.uniform(0.4, 1.0), rng.uniform(0.2, 0.4))
        count = len(starts)
    else:
        rate, f_range, bed_level = (
            (rng.uniform(30, 80), (300.0, 1500.0), 0.2) if variant == "bubbling" else (rng.uniform(100, 250), (800.0, 3000.0), 0.7)
        )
        for _ in range(int(rng.poisson(rate * total))):
            _place(out, _bubble(rng, sr, f_range, (0.004, 0.02)), int(rng.integers(0, n)), rng.uniform(0.2, 1.0))
        bed = _bandpass(_colored_noise(rng, n, 1.0), sr, 200, 4000) * (1.0 + 0.3 * _smooth_noise(rng, n, sr, 4.0))
        out = _unit(out) + bed_level * _unit(bed)
        count = 0
    templates = {
        "bubbling": ("water bubbling", "water bubbling and gurgling", "bubbles rising in water", "boiling water bubbling in a pot"),
        "stream": ("a stream of water flowing", "a babbling brook", "water running in a small stream", "a creek trickling over stones"),
        "dripping": ("water dripping {slowly}", "{drops} of water dripping into a sink", "a leaky tap drips", "drops of water falling {slowly} into a puddle"),
    }[variant]
    caption = _caption(rng, templates, slowly=_pick(rng, ("slowly", "steadily", "")), drops=_plural(max(count, 1), "drop"))
    return out, caption


def _synth_wind(rng: Rng, sr: int, n: int) -> SynthResult:
    variant = _pick(rng, ("breeze", "gusty", "howling"))
    noise = _colored_noise(rng, n, 1.0)
    edges = np.geomspace(100, min(4000, 0.45 * sr), 7)
    # Moving spectral balance: each band gets its own slowly wandering weight.
    out = np.zeros(n)
    for lo, hi in zip(edges[:-1], edges[1:]):
        weight = np.clip(0.6 + 0.5 * _smooth_noise(rng, n, sr, rng.uniform(0.2, 0.6)), 0.05, None)
        out += _bandpass(noise, sr, lo, hi) * weight / np.sqrt(hi / edges[0])
    env = 0.6 + 0.4 * _smooth_noise(rng, n, sr, rng.uniform(0.2, 0.5))
    t = _seconds(n, sr)
    total = n / sr
    if variant == "gusty":
        for _ in range(int(rng.integers(1, 4))):
            centre, width = rng.uniform(0.1, 0.9) * total, rng.uniform(0.3, 0.8)
            env += rng.uniform(1.0, 3.0) * np.exp(-0.5 * ((t - centre) / width) ** 2)
    out = _unit(out) * env
    if variant == "howling":
        # Howl: a narrow resonance whose pitch wanders with the wind speed.
        pitch = rng.uniform(300, 900) * (1.0 + 0.25 * _smooth_noise(rng, n, sr, 0.5))
        whistle = np.sin(2 * np.pi * np.cumsum(pitch) / sr) * (0.5 + 0.5 * _smooth_noise(rng, n, sr, 1.0))
        out += rng.uniform(0.2, 0.5) * whistle * env + 0.3 * _unit(_resonator(noise, sr, float(pitch.mean()), 30.0)) * env
    caption = _caption(
        rng,
        {
            "breeze": ("a gentle breeze blowing", "soft wind blowing steadily", "a light wind outdoors", "a calm breeze rustling"),
            "gusty": ("strong gusts of wind", "wind blowing in gusts", "gusty wind outdoors", "a sudden gust of wind blowing hard"),
            "howling": ("wind howling", "a howling wind whistles", "the wind howls through a gap", "whistling, howling wind"),
        }[variant],
    )
    return out, caption


def _chirp(rng: Rng, sr: int, shape: str) -> np.ndarray:
    dur = rng.uniform(0.03, 0.15)
    m = int(dur * sr)
    u = np.linspace(0.0, 1.0, m)
    lo, hi = sorted(rng.uniform(2000, min(6000, 0.42 * sr), 2))
    hi = max(hi, lo + 400)
    freq = {
        "up": lo + (hi - lo) * u,
        "down": hi - (hi - lo) * u,
        "arch": lo + (hi - lo) * np.sin(np.pi * u),
        "trill": (lo + hi) / 2 + (hi - lo) / 2 * np.sin(2 * np.pi * rng.uniform(20, 60) * u * dur),
    }[shape]
    freq = np.minimum(freq, 0.45 * sr)
    tone = _harmonic_tone(freq, sr, rng, n_harmonics=2, amps=np.array([1.0, 0.15]))
    return tone * np.sin(np.pi * u) ** 2


def _synth_bird(rng: Rng, sr: int, n: int) -> SynthResult:
    style = _pick(rng, ("up", "down", "arch", "trill"))
    starts = _schedule(rng, int(rng.integers(1, 5)), (0.05, 0.4), (0.3, 1.0), 0.5, n / sr)
    out = np.zeros(n)
    for onset in starts:
        t = onset
        for _ in range(int(rng.integers(2, 9))):
            shape = style if rng.random() < 0.75 else _pick(rng, ("up", "down", "arch", "trill"))
            chirp = _chirp(rng, sr, shape)
            _place(out, chirp, int(t * sr), rng.uniform(0.5, 1.0))
            t += chirp.size / sr + rng.uniform(0.02, 0.08)
    out = _reverb(out, sr, rng, rng.uniform(0.3, 0.8), rng.uniform(0.05, 0.2))
    count = len(starts)
    verb = {"up": "chirps", "down": "tweets", "arch": "sings", "trill": "trills"}[style]
    caption = _caption(
        rng,
        (
            "a bird {verb} {times}",
            "a small bird {verb}",
            "{phrases} of birdsong",
            "a songbird {verb} {times} outdoors",
            "birds {plain} in the trees",
        ),
        verb=verb,
        times=_times(count),
        phrases=_plural(count, "short phrase"),
        plain={"chirps": "chirping", "tweets": "tweeting", "sings": "singing", "trills": "trilling"}[verb],
    )
    return out, caption


def _synth_door_knock(rng: Rng, sr: int, n: int) -> SynthResult:
    hard = rng.random() < 0.5
    groups = 2 if rng.random() < 0.3 else 1
    modes = (rng.uniform(80, 160), rng.uniform(180, 300), rng.uniform(400, 900))
    out = np.zeros(n)
    t = rng.uniform(0.05, 0.4)
    count = 0
    for _ in range(groups):
        interval = rng.uniform(0.12, 0.3)
        for _ in range(int(rng.integers(2, 6)) if groups == 1 else int(rng.integers(2, 4))):
            if t + 0.1 > n / sr:
                break
            knock = _damped_sines(
                sr, rng, [f * rng.uniform(0.97, 1.03) for f in modes], (1.0, 0.6, 0.3),
                (rng.uniform(0.06, 0.12), 0.035, 0.015), 0.3,
            )
            click = _lowpass(_noise_burst(rng, sr, 0.01, 0.0003, 0.002), sr, 2500 if hard else 1200)
            knock[: click.size] += (0.8 if hard else 0.3) * _unit(click)
            _place(out, knock, int(t * sr), rng.uniform(0.7, 1.0))
            count += 1
            t += interval * rng.uniform(0.9, 1.1)
        t += rng.uniform(0.6, 1.2)
    out = _reverb(out, sr, rng, rng.uniform(0.2, 0.6), rng.uniform(0.1, 0.25))
    how, adj = (
        _pick(rng, (("loudly", "loud"), ("firmly", "firm"), ("hard", "heavy")))
        if hard
        else _pick(rng, (("softly", "soft"), ("gently", "gentle"), ("lightly", "light")))
    )
    caption = _caption(
        rng,
        (
            "someone knocks on a door {times}",
            "{knocks} on a wooden door",
            "a person knocking {how} on the door",
            "someone knocks {how} at the door",
            "{count} {adj} {knock} on a door",
        ),
        times=_times(count),
        knocks=_plural(count, "knock"),
        how=how,
        adj=adj,
        count=_number(count),
        knock="knock" if count == 1 else "knocks",
    )
    return out, caption


def _synth_siren(rng: Rng, sr: int, n: int) -> SynthResult:
    mode = _pick(rng, ("wail", "yelp", "hi-lo"))
    lo, hi = rng.uniform(600, 800), rng.uniform(1200, 1500)
    t = _seconds(n, sr)
    if mode == "wail":
        period = rng.uniform(2.0, 5.0)
        sweep = 0.5 - 0.5 * np.cos(2 * np.pi * t / period + rng.uniform(0, 2 * np.pi))
    elif mode == "yelp":
        period = rng.uniform(0.15, 0.35)
        sweep = ((t / period + rng.random()) % 1.0) ** 0.7  # fast rise, snap back
    else:
        period = rng.uniform(0.9, 1.4)
        sweep = ((t / period + rng.random()) % 1.0 < 0.5).astype(float)
        sweep = _lowpass(sweep, sr, 30.0)
    freq = lo + (hi - lo) * sweep
    approaching = rng.random() < 0.4
    if approaching:
        u = t / t[-1] if n > 1 else t
        freq = freq * (1.0 + 0.03 * (1.0 - u))  # doppler: slightly sharp while closing in
        gain = 0.3 + 0.7 * u**2
    else:
        gain = np.ones(n)
    tone = _harmonic_tone(freq, sr, rng, n_harmonics=8, rolloff=1.0) * gain
    out = _reverb(tone, sr, rng, rng.uniform(0.6, 1.4), rng.uniform(0.15, 0.35))
    vehicle = _pick(rng, ("police car", "ambulance", "fire engine", "emergency vehicle"))
    sound = {"wail": ("wailing", "wails"), "yelp": ("yelping", "yelps"), "hi-lo": ("two-tone", "alternates between two tones")}[mode]
    caption = _caption(
        rng,
        (
            "the {adj} siren of {a} {veh}",
            "{a} {veh} siren {verb}{near}",
            "a {adj} siren{near}",
            "{a} {veh} with its siren {adjv}{near}",
        ),
        adj=sound[0],
        verb=sound[1],
        adjv=sound[0] if mode != "hi-lo" else "blaring",
        veh=vehicle,
        a="an" if vehicle[0] in "aeiou" else "a",
        near=" as it approaches" if approaching else "",
    )
    return out, caption


def _synth_clock(rng: Rng, sr: int, n: int) -> SynthResult:
    rate = _pick(rng, (1.0, 2.0, 4.0))
    f = rng.uniform(1500, 3500)
    out = np.zeros(n)
    t = rng.uniform(0.0, 1.0 / rate)
    k = 0
    while t < n / sr:
        # Tick and tock differ slightly in pitch and level, as in a real escapement.
        pitch = f * (1.0 if k % 2 == 0 else rng.uniform(0.8, 0.9))
        tick = _damped_sines(sr, rng, (pitch, pitch * 2.3), (1.0, 0.4), (0.004, 0.002), 0.03)
        tick[: int(0.002 * sr)] += 0.3 * rng.standard_normal(int(0.002 * sr))
        _place(out, tick, int(t * sr), 1.0 if k % 2 == 0 else 0.8)
        t += 1.0 / rate * rng.uniform(0.995, 1.005)
        k += 1
    out = _reverb(out, sr, rng, rng.uniform(0.2, 0.5), rng.uniform(0.1, 0.25))
    pace, adj = {1.0: ("slowly", "slow"), 2.0: ("steadily", "steady"), 4.0: ("quickly", "quick")}[rate]
    caption = _caption(
        rng,
        ("a clock ticking {pace}", "the {adj} tick tock of a clock", "a wall clock ticks {pace}", "a mechanical clock ticking {pace}"),
        pace=pace,
        adj=adj,
    )
    return out, caption


_SYNTHS: dict[str, Callable[[Rng, int, int], SynthResult]] = {
    "DogBark": _synth_dog_bark,
    "Footstep": _synth_footstep,
    "GunShot": _synth_gunshot,
    "Keyboard": _synth_keyboard,
    "MovingMotorVehicle": _synth_moving_motor_vehicle,
    "Rain": _synth_rain,
    "Sneeze_Cough": _synth_sneeze_cough,
    "Bell": _synth_bell,
    "Water": _synth_water,
    "Wind": _synth_wind,
    "Bird": _synth_bird,
    "DoorKnock": _synth_door_knock,
    "Siren": _synth_siren,
    "Clock": _synth_clock,
}


# --------------------------------------------------------------------------- public API


def _check_sound_type(sound_type: str) -> None:
    if sound_type not in _SYNTHS:
        raise ValueError(f"unknown sound type {sound_type!r}; valid sound types: {', '.join(SOUND_TYPES)}")


def _finalize(audio: np.ndarray, sr: int, rng: Rng) -> np.ndarray:
    """Remove DC, add a faint noise floor (~-60 dB), fade the edges, set a random peak level."""
    audio = np.nan_to_num(np.asarray(audio, dtype=np.float64))
    audio = _unit(_highpass(audio, sr, 20.0, order=1))
    floor_db = rng.uniform(-65.0, -55.0)
    audio = audio + 10.0 ** (floor_db / 20.0) * rng.standard_normal(audio.size)
    audio = _fade_edges(audio, sr)
    return (_unit(audio) * rng.uniform(0.3, 0.95)).astype(np.float32)


def synthesize_clip(
    sound_type: str, index: int, *, sample_rate: int = 16000, duration_s: float = 4.0, seed: int = 0
) -> SynthClip:
    """Render clip ``index`` of ``sound_type``; identical for identical arguments."""
    _check_sound_type(sound_type)
    if sample_rate < MIN_SAMPLE_RATE:
        raise ValueError(f"sample_rate must be >= {MIN_SAMPLE_RATE}, got {sample_rate}")
    n = int(round(duration_s * sample_rate))
    if n < int(0.05 * sample_rate):
        raise ValueError(f"duration_s must be at least 0.05 s, got {duration_s}")
    if index < 0:
        raise ValueError(f"index must be >= 0, got {index}")
    rng = np.random.default_rng(clip_seed(seed, sound_type, index))
    audio, caption = _SYNTHS[sound_type](rng, sample_rate, n)
    return SynthClip(sound_type=sound_type, index=index, audio=_finalize(audio, sample_rate, rng), caption=caption)


def _captions_csv(rows: Sequence[tuple[str, str, str]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(("path", "caption", "class"))
    writer.writerows(rows)
    return buffer.getvalue()


def write_synthetic_corpus(
    out_dir: Path,
    sound_types: Sequence[str],
    clips_per_type: int | Mapping[str, int],
    *,
    sample_rate: int = 16000,
    duration_s: float = 4.0,
    seed: int = 0,
) -> Path:
    """Write ``<out_dir>/<Type>/<Type>_<i:04d>.wav`` (16-bit PCM) and ``captions.csv``; return the csv path."""
    if isinstance(sound_types, str):
        raise TypeError("sound_types must be a sequence of names, not a single string")
    for sound_type in sound_types:
        _check_sound_type(sound_type)
    counts = clips_per_type if isinstance(clips_per_type, Mapping) else dict.fromkeys(sound_types, clips_per_type)
    for sound_type in sound_types:
        if counts.get(sound_type, -1) < 0:
            raise ValueError(f"clips_per_type for {sound_type!r} must be >= 0, got {counts.get(sound_type)}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows: list[tuple[str, str, str]] = []
    for sound_type in dict.fromkeys(sound_types):  # de-duplicate, keep order
        (out_dir / sound_type).mkdir(exist_ok=True)
        for index in range(counts[sound_type]):
            clip = synthesize_clip(sound_type, index, sample_rate=sample_rate, duration_s=duration_s, seed=seed)
            rel = f"{sound_type}/{sound_type}_{index:04d}.wav"
            write_wav_atomic(out_dir / rel, clip.audio, sample_rate)
            rows.append((rel, clip.caption, sound_type))
    rows.sort()
    csv_path = out_dir / CAPTIONS_CSV
    write_text_atomic(csv_path, _captions_csv(rows))
    return csv_path
