"""Content hashing. Full sha256 hex everywhere: cache keys are never truncated."""

from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path
from typing import Any

_CHUNK = 1 << 20


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def sha256_tree(root: str | Path) -> str:
    """Hash of a folder: relative paths and contents, order-independent of the filesystem."""
    root = Path(root)
    h = hashlib.sha256()
    for p in sorted(x for x in root.rglob("*") if x.is_file()):
        h.update(p.relative_to(root).as_posix().encode())
        h.update(b"\0")
        h.update(sha256_file(p).encode())
    return h.hexdigest()


def canonical_json(obj: Any) -> str:
    """Deterministic JSON (sorted keys, no whitespace) so equal configs hash equal."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def sha256_json(obj: Any) -> str:
    return sha256_bytes(canonical_json(obj).encode())


@functools.lru_cache(maxsize=1)
def code_fingerprint() -> str:
    """The sha256 of edgeconv's own Python source: part of every artifact key, so an artifact made by other code —
    a fixed converter, a changed verification — is rebuilt, not replayed, even when the version number is the same
    (a development checkout, a patched install). Hashed once per process (~200 files, a few ms)."""
    root = Path(__file__).resolve().parents[1]
    h = hashlib.sha256()
    for p in sorted(root.rglob("*.py")):
        h.update(p.relative_to(root).as_posix().encode())
        h.update(b"\0")
        h.update(p.read_bytes())
    return h.hexdigest()
