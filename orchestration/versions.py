"""code_version for assets: derived from the code each asset's stage function may run and the
profile sections that code reads (``foley_core.core.code_version``). Editing either makes the asset
stale; nothing else does, and no module list is typed by hand."""

from __future__ import annotations

from typing import Callable

from foley_core.core.code_version import profile_sections_read_by, source_version
from foley_core.core.config import Profile

SECTIONS = frozenset(Profile.model_fields)


def code_version(profile: Profile, stage: Callable) -> str:
    sections = profile_sections_read_by(stage, SECTIONS)
    settings = profile.fingerprint(*sections)[:8] if sections else "none"
    return f"{source_version(stage)[:12]}-{settings}"
