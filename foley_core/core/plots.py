"""Pictures a person can look at: log-mel spectrograms as PNG bytes."""

from __future__ import annotations

import io

import numpy as np

from foley_core.core.audio import log_mel_db


def spectrogram_png(clips: list[np.ndarray], sample_rate: int, title: str, hop_length: int = 160) -> bytes:
    """Side-by-side log-mel spectrograms of a few clips, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")  # no display on servers
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, max(1, len(clips)), figsize=(3.2 * max(1, len(clips)), 2.6), squeeze=False)
    for ax, clip in zip(axes[0], clips):
        ax.imshow(log_mel_db(clip, sample_rate, hop_length=hop_length), origin="lower", aspect="auto", cmap="magma")
        ax.set_xlabel(f"frames (hop {hop_length})")
        ax.set_yticks([])
    axes[0][0].set_ylabel("mel")
    fig.suptitle(title)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=80)
    plt.close(fig)
    return buffer.getvalue()
