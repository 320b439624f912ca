"""Content-addressed cache of artifacts and intermediate graphs.

The key is the full sha256 of everything that determines the result (inputs' hashes, options, tool versions),
so a hit is always safe to reuse. Location: ``$EDGECONV_CACHE`` or ``~/.cache/edgeconv``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from edgeconv.core.artifact import replace_dir


def cache_root() -> Path:
    root = os.environ.get("EDGECONV_CACHE")
    return Path(root).expanduser() if root else Path.home() / ".cache" / "edgeconv"


def entry(kind: str, key: str) -> Path:
    return cache_root() / kind / key


def lookup(kind: str, key: str) -> Path | None:
    p = entry(kind, key)
    return p if (p / ".complete").is_file() else None


def store(kind: str, key: str, src: Path) -> Path:
    """Copy folder ``src`` into the cache under ``key`` (atomically). Failures to cache are not fatal."""
    dest = entry(kind, key)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{key[:16]}.tmp-", dir=dest.parent))
    try:
        shutil.copytree(src, tmp, dirs_exist_ok=True)
        (tmp / ".complete").write_text(key)
        replace_dir(tmp, dest)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return dest


def copy_out(cached: Path, dest: Path) -> None:
    """Copy a cached folder to ``dest`` (without the cache marker)."""
    shutil.copytree(cached, dest, dirs_exist_ok=True, ignore=shutil.ignore_patterns(".complete"))
