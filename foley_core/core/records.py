"""What a pipeline stage produced, as a small typed record: where, which version, made from what.

Every stage returns an ``Artifact``; the Dagster IO manager stores it as JSON in the layout's
``records/`` folder and hands it to the stages downstream as their input. Lineage is the
``inputs`` map (upstream name -> the version it was made from), so "is this stage fresh?"
is a comparison of records: same code version, same input versions.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from foley_core.core.fsutil import write_text_atomic


@dataclass(frozen=True)
class Artifact:
    name: str  # the stage (asset) that made it
    version: str  # content version of what it wrote: equal content, equal version
    path: str  # the file or folder it wrote
    partition: str | None = None
    code_version: str = ""
    inputs: dict[str, str] = field(default_factory=dict)  # "upstream[partition]" -> version

    @property
    def location(self) -> Path:
        return Path(self.path)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "Artifact":
        return cls(**json.loads(text))


def input_versions(inputs: dict[str, "Artifact | dict[str, Artifact]"]) -> dict[str, str]:
    """Flatten a stage's inputs to ``{"name": version, "name[part]": version}``."""
    flat: dict[str, str] = {}
    for name, value in sorted(inputs.items()):
        if isinstance(value, Artifact):
            flat[name] = value.version
        else:
            for part, artifact in sorted(value.items()):
                flat[f"{name}[{part}]"] = artifact.version
    return flat


def write_record(path: Path, artifact: Artifact) -> None:
    write_text_atomic(path, artifact.to_json())


def read_record(path: Path) -> Artifact | None:
    """The stored record, or None when the stage has not produced one (or it is unreadable)."""
    try:
        return Artifact.from_json(path.read_text())
    except (OSError, ValueError, TypeError):
        return None


def lineage_rows(records_root: Path) -> dict[str, str]:
    """``stage[partition]`` -> "version · code · made from ..." for every stored record: the
    lineage table of the report."""
    rows = {}
    for path in sorted(records_root.rglob("*.json")):
        artifact = read_record(path)
        if artifact is None:
            continue
        name = artifact.name + (f"[{artifact.partition}]" if artifact.partition else "")
        inputs = ", ".join(f"{k} {v}" for k, v in artifact.inputs.items())
        rows[name] = f"version {artifact.version} · code {artifact.code_version or '?'}" + (
            f" · from {inputs}" if inputs else "")
    return rows
