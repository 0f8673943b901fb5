"""Import laion-clap's ``clap_module`` without running ``laion_clap/__init__.py``.

``import laion_clap.clap_module`` first executes the parent package's ``__init__``,
which imports ``hook.py``: that builds RoBERTa tokenizers at import time, which
downloads from the hub (an ~11 minute DNS hang offline) or, with ``HF_HUB_OFFLINE=1``,
silently yields an empty tokenizer. ``clap_module`` itself only uses relative imports
and works offline, so we load that sub-package alone under a private module name:
the parent ``__init__`` never runs and the real ``laion_clap`` name stays untouched.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from functools import cache
from pathlib import Path
from types import ModuleType

PRIVATE_NAME = "_foley_laion_clap_module"


def laion_package_dir() -> Path:
    spec = importlib.util.find_spec("laion_clap")  # locates the package; does not execute it
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("laion-clap is not installed (pip install laion-clap==1.1.7)")
    return Path(list(spec.submodule_search_locations)[0])


@cache
def clap_module() -> ModuleType:
    """laion-clap's ``clap_module`` package (CLAP, ClipLoss, tokenize, add_model_config, ...)."""
    if PRIVATE_NAME in sys.modules:
        return sys.modules[PRIVATE_NAME]
    folder = laion_package_dir() / "clap_module"
    spec = importlib.util.spec_from_file_location(
        PRIVATE_NAME, folder / "__init__.py", submodule_search_locations=[str(folder)]
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[PRIVATE_NAME] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(PRIVATE_NAME, None)
        raise
    return module


def submodule(name: str) -> ModuleType:
    """A module inside ``clap_module`` (e.g. ``"model"``, ``"pann_model"``, ``"loss"``)."""
    clap_module()
    return importlib.import_module(f"{PRIVATE_NAME}.{name}")
