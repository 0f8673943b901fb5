"""Every hash the project computes, in one place: content versions of files, folders, JSON
settings and tensors, and the stable seeds derived from names. All are SHA-256.

Why one module: a version is only as good as its agreement with every other version of the
same thing. With twenty hand-rolled ``hashlib`` calls, two "clip seeds" derived different
values and nothing said which to use. The source-code hashes (code versions) are derived in
``foley_core.core.code_version``, from the syntax tree, through ``new_digest``.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Iterable

BLOCK = 1 << 22  # files are read in 4 MiB blocks: checkpoints can be GBs


def new_digest(*parts: bytes | str):
    """A SHA-256 object fed with ``parts`` (str as UTF-8), for hashes built up piece by piece."""
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part.encode() if isinstance(part, str) else part)
    return digest


def sha256_hex(*parts: bytes | str) -> str:
    """Hex SHA-256 of the concatenated ``parts``."""
    return new_digest(*parts).hexdigest()


def json_hash(value: Any, *, sort_keys: bool = True, default=None) -> str:
    """Hex SHA-256 of ``value`` as JSON: the version of a set of settings. ``sort_keys=False`` only
    where a version was first defined that way (changing it would change recorded versions)."""
    return sha256_hex(json.dumps(value, sort_keys=sort_keys, default=default))


def file_hash(path: Path | str) -> str:
    """Hex SHA-256 of a file's bytes, read in blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(BLOCK), b""):
            digest.update(block)
    return digest.hexdigest()


def files_hash(root: Path, relative_paths: Iterable[Path]) -> str:
    """Content hash of files below ``root``: each relative path and its bytes' hash (32 hex digits)."""
    digest = hashlib.sha256()
    for rel in relative_paths:
        digest.update(Path(rel).as_posix().encode() + b"\0")
        digest.update(bytes.fromhex(file_hash(Path(root) / rel)))
    return digest.hexdigest()[:32]


def folder_hash(folder: Path, pattern: str = "*") -> str:
    """``files_hash`` of the files matching ``pattern`` below a folder (hidden files skipped): the
    data version of sources outside DVC, and the content version of model and clip folders."""
    folder = Path(folder)
    paths = sorted(p for p in folder.rglob(pattern) if p.is_file() and not p.name.startswith("."))
    return files_hash(folder, [p.relative_to(folder) for p in paths])


def stable_seed(*parts: object, bits: int, byteorder: str = "big") -> int:
    """A seed derived from ``parts`` (joined by ``|``), the same in every process and on every
    platform (Python's ``hash()`` is salted): the first ``bits`` bits of their SHA-256.

    Each seed of the project names its width where it is derived (``generation.pipeline``
    ``candidate_seed``: 63, ``generation.generate.slot_seed``: 32, ``data.synth.clip_seed``: 64
    little-endian, ``data.recordings``: 48); the widths are those the seeds were first made
    with, so the synthetic corpus and the generated clips stay what they were."""
    digest = hashlib.sha256("|".join(str(p) for p in parts).encode()).digest()
    width = (bits + 7) // 8
    return int.from_bytes(digest[:width], byteorder) >> (8 * width - bits)
