"""User plug-in hook: resolve ``"module:function"`` or ``"path/to/file.py:function"`` to a callable.

Why: post-processing and task metrics are model-specific; rather than hard-coding them, model
descriptions (and users) name a callable, e.g. ``"edgeconv.bench.detection:decode_yolo"`` or
``"./my_post.py:decode"``.  File paths are loaded under a unique module name so two plug-in files
with the same basename do not clobber each other in ``sys.modules``.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edgeconv.core.errors import ConfigError

_HINT = "use 'package.module:function' or 'path/to/file.py:function'"


def _split(spec: str) -> tuple[str, str]:
    # rpartition so Windows drive letters ("C:\\x\\post.py:fn") keep working.
    target, sep, attr = spec.rpartition(":")
    if not sep or not target or not attr:
        raise ConfigError(f"bad plug-in spec {spec!r}", hint=_HINT)
    return target, attr


def _load_file_module(path: Path) -> Any:
    path = path.expanduser().resolve()
    if not path.is_file():
        raise ConfigError(f"plug-in file not found: {path}", hint=_HINT)
    name = f"edgeconv_plugin_{path.stem}_{hashlib.sha1(str(path).encode()).hexdigest()[:10]}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ConfigError(f"cannot import plug-in file {path}", hint=_HINT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def load_callable(spec: str) -> Callable[..., Any]:
    """Return the callable named by ``spec`` (``"pkg.mod:func"``, ``"file.py:func"``, dotted attrs ok).

    Every failure is a ``ConfigError`` (a user typo, not a crash), with the cause chained.
    """
    target, attr = _split(spec)
    if target.endswith(".py") or "/" in target or "\\" in target:
        obj: Any = _load_file_module(Path(target))
    else:
        try:
            obj = importlib.import_module(target)
        except ImportError as e:
            raise ConfigError(f"cannot import plug-in module {target!r}: {e}", hint=_HINT) from e
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError as e:
            raise ConfigError(f"plug-in {target!r} has no attribute {attr!r}", hint=_HINT) from e
    if not callable(obj):
        raise ConfigError(f"plug-in {spec!r} is a {type(obj).__name__}, not a callable", hint=_HINT)
    return obj
