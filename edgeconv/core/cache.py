"""Content-addressed cache of artifacts, reference graphs and statistics that hands back only what it re-verified.

The key is the full sha256 of everything that determines the result, so a hit is safe to reuse *if its files are
the files that were stored*. Every entry therefore carries an index (``.index.json``: the sha256 and size of every
file) written when it is stored, and every hit re-hashes every file against it. A damaged entry (a truncated,
deleted, overwritten or added file, an unreadable index) is evicted with one warning and the caller rebuilds.

Failing to write the cache (read-only folder, full disk, a path that is a file) is a warning, never fatal:
the cache only ever saves time. ``disabled()`` turns every lookup and store into a no-op for ``--no-cache``.

Location: ``$EDGECONV_CACHE``, else the platform's user cache folder (``~/.cache/edgeconv`` on Linux).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from edgeconv.core.artifact import replace_dir
from edgeconv.core.console import log
from edgeconv.core.hashing import sha256_file

INDEX = ".index.json"
COMPLETE = ".complete"
_state = threading.local()


def cache_root() -> Path:
    root = os.environ.get("EDGECONV_CACHE")
    if root:
        return Path(root).expanduser()
    try:
        from platformdirs import user_cache_dir

        return Path(user_cache_dir("edgeconv", appauthor=False))
    except ImportError:
        return Path.home() / ".cache" / "edgeconv"


def enabled() -> bool:
    return not getattr(_state, "disabled", False)


@contextlib.contextmanager
def disabled(off: bool = True) -> Iterator[None]:
    """Within the block no cache is read or written (``--no-cache``); nested blocks restore the outer state."""
    before = getattr(_state, "disabled", False)
    _state.disabled = before or off
    try:
        yield
    finally:
        _state.disabled = before


def entry(kind: str, key: str) -> Path:
    if not key or any(c not in "0123456789abcdef" for c in key) or "/" in kind or kind.startswith("."):
        raise ValueError(f"bad cache key {kind}/{key}")
    return cache_root() / kind / key


def _index(folder: Path) -> dict[str, dict[str, int | str]]:
    return {p.relative_to(folder).as_posix(): {"sha256": sha256_file(p), "bytes": p.stat().st_size}
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name not in (INDEX, COMPLETE)}


def check_entry(path: Path) -> str | None:
    """None when every file of the entry is the file that was stored; else what is wrong, in a few words."""
    path = Path(path)
    if not (path / COMPLETE).is_file():
        return "incomplete (no completion marker)"
    try:
        index = json.loads((path / INDEX).read_text())
        if not isinstance(index, dict):
            raise ValueError("index is not a table")
    except (OSError, ValueError) as e:
        return f"unreadable index ({type(e).__name__})"
    try:
        present = {p.relative_to(path).as_posix() for p in path.rglob("*")
                   if p.is_file() and p.name not in (INDEX, COMPLETE)}
    except OSError as e:
        return f"unreadable ({e.strerror})"
    missing = sorted(set(index) - present)
    if missing:
        return f"missing {', '.join(missing[:3])}"
    extra = sorted(present - set(index))
    if extra:
        return f"unexpected {', '.join(extra[:3])}"
    for rel, rec in index.items():
        p = path / rel
        try:
            if p.stat().st_size != rec.get("bytes") or sha256_file(p) != rec.get("sha256"):
                return f"{rel} changed since it was cached"
        except OSError as e:
            return f"{rel} unreadable ({e.strerror})"
    return None


def evict(path: Path, why: str) -> None:
    log.warning("cache entry %s/%s is damaged (%s): evicted, rebuilding", path.parent.name, path.name[:16], why)
    shutil.rmtree(path, ignore_errors=True)


def lookup(kind: str, key: str) -> Path | None:
    """The verified entry for ``key``, or None (absent, disabled, or damaged and therefore evicted)."""
    if not enabled():
        return None
    p = entry(kind, key)
    if not p.exists():
        return None
    problem = check_entry(p)
    if problem is not None:
        with _lock(kind):
            # Another process may have been replacing the entry while it was read: judge it again under the lock.
            problem = check_entry(p) if p.exists() else None
            if problem is not None:
                evict(p, problem)
                return None
        return p if p.exists() and check_entry(p) is None else None
    return p


@contextlib.contextmanager
def _file_lock(kind: str, name: str, timeout: float) -> Iterator[None]:
    """An OS file lock ``name`` in the cache folder of ``kind`` (filelock comes with torch; released if the holder
    dies). Without filelock, on an OS error or past ``timeout`` the body runs unlocked: atomic renames still hold."""
    try:
        from filelock import FileLock, Timeout
    except ImportError:
        yield
        return
    folder = cache_root() / kind
    try:
        folder.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(folder / name), timeout=timeout)
        lock.acquire()
    except (OSError, Timeout):
        yield
        return
    try:
        yield
    finally:
        lock.release()


def _lock(kind: str) -> contextlib.AbstractContextManager[None]:
    """A cross-process lock per cache kind, held while an entry is replaced or evicted."""
    return _file_lock(kind, ".lock", 120.0)


def building(kind: str, key: str, timeout: float = 900.0) -> contextlib.AbstractContextManager[None]:
    """Held while one process builds the entry ``key``, so another process that wants the same entry at the same
    time (two plan workers needing one shared stage) waits for it and reads it back instead of building it too;
    past ``timeout`` (or with the cache off) the caller builds anyway."""
    if not enabled():
        return contextlib.nullcontext()
    return _file_lock(kind, f".{key[:32]}.building", timeout)


def store(kind: str, key: str, src: Path) -> Path | None:
    """Copy folder ``src`` into the cache under ``key`` (atomically, with its index); None when that failed."""
    if not enabled():
        return None
    dest = entry(kind, key)
    tmp: Path | None = None
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        with _lock(kind):
            tmp = Path(tempfile.mkdtemp(prefix=f".{key[:16]}.tmp-", dir=dest.parent))
            shutil.copytree(src, tmp, dirs_exist_ok=True, ignore=shutil.ignore_patterns(INDEX, COMPLETE))
            (tmp / INDEX).write_text(json.dumps(_index(tmp), indent=1))
            (tmp / COMPLETE).write_text(key)
            replace_dir(tmp, dest)
    except OSError as e:
        log.warning("could not write the cache at %s (%s); continuing without it", dest.parent,
                    e.strerror or type(e).__name__)
        return None
    finally:
        if tmp is not None and tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return dest


def copy_out(cached: Path, dest: Path) -> None:
    """Copy a cached folder to ``dest`` (without the cache's own bookkeeping files)."""
    shutil.copytree(cached, dest, dirs_exist_ok=True, ignore=shutil.ignore_patterns(INDEX, COMPLETE))


@dataclass
class CacheEntry:
    kind: str
    key: str
    path: Path
    bytes: int


def iter_entries() -> list[CacheEntry]:
    """Every entry in the cache (complete or not), for ``edgeconv cache info|verify``."""
    root = cache_root()
    out: list[CacheEntry] = []
    if not root.is_dir():
        return out
    for kind in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for e in sorted(p for p in kind.iterdir() if p.is_dir() and not p.name.startswith(".")):
            size = sum(f.stat().st_size for f in e.rglob("*") if f.is_file())
            out.append(CacheEntry(kind.name, e.name, e, size))
    return out


def clear(kind: str | None = None) -> int:
    """Delete every entry (of ``kind``); returns the bytes freed."""
    freed = 0
    for e in iter_entries():
        if kind is None or e.kind == kind:
            freed += e.bytes
            shutil.rmtree(e.path, ignore_errors=True)
    return freed
