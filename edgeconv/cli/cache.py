"""``edgeconv cache info|verify|clear``: the artifact cache's location, size, integrity, and clearing it.

The cache itself (keys, the per-entry index, eviction of damaged entries) is ``edgeconv.core.cache``; this is its
command line.
"""

from __future__ import annotations

import sys
from typing import Any

import click

from edgeconv.cli import handle_errors
from edgeconv.cli.inspect import _human
from edgeconv.core.console import emit_json, escape, print_table
from edgeconv.core.errors import ConfigError


@click.group("cache")
def cache_group() -> None:
    """The artifact cache: what is in it, whether it is intact, and clearing it."""


def _cache_mod() -> Any:
    from edgeconv.core import cache

    for name in ("iter_entries", "check_entry", "clear"):
        if not hasattr(cache, name):
            raise ConfigError(f"this edgeconv's cache has no {name}()", hint="update edgeconv")
    return cache


@cache_group.command("info")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@handle_errors
def cache_info(as_json: bool) -> None:
    """Where the cache is and how much each kind of entry takes."""
    from rich.table import Table

    cache = _cache_mod()
    entries = cache.iter_entries()
    kinds: dict[str, dict[str, int]] = {}
    for e in entries:
        k = kinds.setdefault(e.kind, {"entries": 0, "bytes": 0})
        k["entries"] += 1
        k["bytes"] += e.bytes
    doc = {"root": str(cache.cache_root()), "entries": len(entries), "bytes": sum(e.bytes for e in entries),
           "kinds": kinds}
    if as_json:
        emit_json(doc)
        return
    t = Table(title=f"edgeconv cache: {escape(doc['root'])}")
    for c in ("kind", "entries", "size"):
        t.add_column(c)
    for name, k in sorted(kinds.items()):
        t.add_row(escape(name), str(k["entries"]), _human(k["bytes"]))
    t.add_row("total", str(doc["entries"]), _human(doc["bytes"]))
    print_table(t)


@cache_group.command("verify")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@handle_errors
def cache_verify(as_json: bool) -> None:
    """Re-hash every entry against its index; exit 1 when one is damaged (a hit would evict it)."""
    cache = _cache_mod()
    rows = [{"kind": e.kind, "key": e.key, "path": str(e.path), "bytes": e.bytes, "problem": cache.check_entry(e.path)}
            for e in cache.iter_entries()]
    bad = [r for r in rows if r["problem"]]
    if as_json:
        emit_json({"entries": len(rows), "damaged": bad})
    else:
        for r in bad:
            click.echo(f"damaged  {r['kind']}/{r['key'][:16]}  {r['problem']}")
        click.echo(f"{len(rows) - len(bad)} of {len(rows)} entries intact")
    if bad:
        sys.exit(1)


@cache_group.command("clear")
@click.option("--kind", help="Only entries of this kind (see `edgeconv cache info`).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@handle_errors
def cache_clear(kind: str | None, as_json: bool) -> None:
    """Delete the cache's entries (all, or one kind); a later run rebuilds what it needs."""
    freed = _cache_mod().clear(kind)
    if as_json:
        emit_json({"kind": kind, "bytes_freed": freed})
    else:
        click.echo(f"freed {_human(freed)}")


COMMANDS = [cache_group]
