"""Lazy imports of heavy backends.

``import edgeconv`` must stay fast and must work with no backend installed, so backends are imported only inside the
functions that use them, through :func:`require`, which turns an ImportError into a ``MissingDependencyError`` naming
the pip extra.  :func:`available` asks ``importlib.util.find_spec`` and never imports the module.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
from types import ModuleType

from edgeconv.core.errors import MissingDependencyError


def available(module: str) -> bool:
    """True when ``module`` could be imported, without importing it."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def require(module: str, extra: str, *, target: str | None = None) -> ModuleType:
    """Import ``module`` or raise a MissingDependencyError whose hint installs ``edgeconv[extra]``."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise MissingDependencyError(
            f"python package '{module}' is not installed ({e})",
            hint=f"pip install 'edgeconv[{extra}]'",
            target=target,
        ) from e


def version(dist: str) -> str | None:
    """Installed version of a distribution, or None; used for manifests and `edgeconv doctor`."""
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None
