"""code_version for assets: the source of the foley_core modules an asset runs, plus the
profile sections it reads. Editing either makes the asset stale; nothing else does."""

from __future__ import annotations

import hashlib
import importlib

from foley_core.config import Profile


def code_version(profile: Profile, modules: list[str], sections: list[str]) -> str:
    digest = hashlib.sha256()
    for name in sorted(modules):
        module = importlib.import_module(name)
        with open(module.__file__, "rb") as handle:
            digest.update(handle.read())
    return f"{digest.hexdigest()[:12]}-{profile.fingerprint(*sections)[:8]}"
