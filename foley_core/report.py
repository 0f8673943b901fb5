"""An HTML report a person can listen to: per-class audio players, spectrograms, metric
tables and lineage. Self-contained except the audio, which it links relatively."""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from foley_core.core.audio import write_text_atomic


@dataclass
class ClassSection:
    name: str
    prompt: str
    clips: list[tuple[str, str]] = field(default_factory=list)  # (path relative to the report, caption)
    spectrogram_png: bytes | None = None


STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; max-width: 1100px; color: #222; }
h1 { margin-bottom: 0.2em; } .muted { color: #666; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.9em; }
td, th { border: 1px solid #ccc; padding: 3px 8px; text-align: right; }
th { background: #f3f3f3; } .clip { display: inline-block; margin: 4px 12px 4px 0; }
.clip span { display: block; font-size: 0.8em; color: #555; } section { margin-bottom: 2em; }
"""


def render_report(title: str, summary: str, sections: list[ClassSection], tables: dict[str, pd.DataFrame],
                  lineage: dict[str, str]) -> str:
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
             f"<style>{STYLE}</style></head><body>", f"<h1>{html.escape(title)}</h1>",
             f"<p class='muted'>{html.escape(summary)}</p>"]
    for name, table in tables.items():
        parts.append(f"<h2>{html.escape(name)}</h2>")
        parts.append(table.to_html(float_format=lambda v: f"{v:.4g}", border=0))
    parts.append("<h2>Sounds</h2>")
    for section in sections:
        parts.append(f"<section><h3>{html.escape(section.name)} <span class='muted'>— “{html.escape(section.prompt)}”</span></h3>")
        for path, caption in section.clips:
            parts.append(f"<div class='clip'><audio controls preload='none' src='{html.escape(path)}'></audio>"
                         f"<span>{html.escape(caption)}</span></div>")
        if section.spectrogram_png:
            data = base64.b64encode(section.spectrogram_png).decode()
            parts.append(f"<div><img alt='spectrograms of {html.escape(section.name)}' src='data:image/png;base64,{data}'></div>")
        parts.append("</section>")
    parts.append("<h2>Lineage</h2><table>")
    parts += [f"<tr><th>{html.escape(k)}</th><td style='text-align:left'>{html.escape(str(v))}</td></tr>" for k, v in lineage.items()]
    parts.append("</table></body></html>")
    return "\n".join(parts)


def write_report(path: Path, *args, **kwargs) -> Path:
    write_text_atomic(path, render_report(*args, **kwargs))
    return path
