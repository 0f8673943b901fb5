"""Data versions: DVC for the tracked ``data/`` folder, content hashes elsewhere.

DVC lives in its own environment (``.venv-dvc``, made by ``make install``): its
hydra-core pins antlr4 4.9, which breaks Dagster's asset-selection parser, so we
drive it through its CLI instead of importing it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import yaml

from foley_core.core.config import PROJECT_ROOT
from foley_core.core.hashing import json_hash


class DvcError(RuntimeError):
    pass


def dvc_executable() -> str:
    """``$FOLEY_DVC``, else the project's ``.venv-dvc``, else ``dvc`` on PATH."""
    candidates = [os.environ.get("FOLEY_DVC"), str(PROJECT_ROOT / ".venv-dvc" / "bin" / "dvc"), shutil.which("dvc")]
    for candidate in candidates:
        if candidate and Path(candidate).is_file():
            return candidate
    raise DvcError("DVC not found: run `make install` (it creates .venv-dvc) or set FOLEY_DVC to a dvc executable")


def run_dvc(*args: str, cwd: Path = PROJECT_ROOT) -> str:
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    completed = subprocess.run(
        [dvc_executable(), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=3600
    )
    if completed.returncode != 0:
        message = (completed.stderr or completed.stdout).strip().splitlines()
        raise DvcError(f"`dvc {' '.join(args)}` failed: {message[-1] if message else completed.returncode}")
    return completed.stdout


def dvc_file_for(data_dir: Path) -> Path:
    return data_dir.with_name(data_dir.name + ".dvc")


def read_dvc_hash(dvc_file: Path) -> str | None:
    """The md5 DVC recorded for the tracked folder, or None if the .dvc file is absent."""
    if not dvc_file.is_file():
        return None
    outs = (yaml.safe_load(dvc_file.read_text()) or {}).get("outs") or []
    if not outs or "md5" not in outs[0]:
        raise DvcError(f"{dvc_file} has no `outs[0].md5`; is it a DVC file?")
    return outs[0]["md5"]


def track(data_dir: Path, *, push: bool = True, remote: str | None = None) -> str:
    """`dvc add` the folder (cheap when nothing changed: DVC caches file hashes), then push."""
    repo = data_dir.parent
    run_dvc("add", data_dir.name, cwd=repo)
    if push:
        run_dvc("push", *(["-r", remote] if remote else []), cwd=repo)
    version = read_dvc_hash(dvc_file_for(data_dir))
    assert version is not None  # dvc add just wrote it
    return version


def dvc_subtree_version(data_dir: Path, roots: list[Path]) -> str | None:
    """A version of the part of a DVC-tracked folder that lies under ``roots``: the hash of the
    (path, md5) entries DVC recorded for those files, read from the ``.dir`` manifest that
    ``data.dvc`` names. So a profile's data version moves only when *its* sources change, not
    when another profile adds its own corpus to ``data/``. None when the manifest is not in
    the local DVC cache (then the caller falls back to the whole folder's hash)."""
    whole = read_dvc_hash(dvc_file_for(data_dir))
    if not whole or not whole.endswith(".dir"):
        return None
    manifest = data_dir.parent / ".dvc" / "cache" / "files" / "md5" / whole[:2] / whole[2:]
    try:
        entries = json.loads(manifest.read_text())
    except (OSError, ValueError):
        return None
    prefixes = []
    for root in roots:
        try:
            prefixes.append(root.resolve().relative_to(data_dir.resolve()).as_posix())
        except ValueError:
            return None  # a source outside the tracked folder: DVC does not version it
    chosen = sorted((e["relpath"], e["md5"]) for e in entries
                    if any(p in ("", ".") or e["relpath"] == p or e["relpath"].startswith(p + "/") for p in prefixes))
    return "dvc-" + json_hash(chosen, sort_keys=False)[:24]
