"""The one ``--keep-fp32`` matcher: patterns against the reference ONNX's nodes, with one meaning everywhere.

A pattern is an exact node name, an fnmatch glob over node names or output tensor names (``/model.24/*``), a
module scope (``head`` or ``model.24`` matches every node under ``/head/...``), or ``op:TYPE`` (every node of that
ONNX op type). It is matched once, against the reference graph every backend is
converted from, before any conversion; a pattern that matches nothing is a config error naming the closest node
names (a silent no-match would quantize exactly what the user meant to protect). Backends then translate the matched
ONNX node names into their own layers.
"""

from __future__ import annotations

import difflib
import fnmatch
from pathlib import Path

from edgeconv.core.errors import ConfigError
from edgeconv.core.lazy import require


def graph_nodes(onnx_path: str | Path) -> list[tuple[str, str, tuple[str, ...]]]:
    """(name, op_type, outputs) of every node of the graph, without loading external weights."""
    onnx = require("onnx", "onnx")
    model = onnx.load(str(onnx_path), load_external_data=False)
    return [(n.name, n.op_type, tuple(n.output)) for n in model.graph.node]


def match(nodes: list[tuple[str, str, tuple[str, ...]]], patterns: tuple[str, ...] | list[str]) -> dict[str, list[str]]:
    """pattern -> matched node names; raises ConfigError for a pattern that matches no node."""
    out: dict[str, list[str]] = {}
    for p in patterns:
        p = str(p).strip()
        if not p:
            continue
        if p.startswith("op:"):
            hits = [n for n, op, _ in nodes if op == p[3:]]
        else:
            scope = p.strip("/")
            hits = [n for n, _, outs in nodes
                    if n == p or fnmatch.fnmatchcase(n, p) or any(fnmatch.fnmatchcase(o, p) for o in outs)
                    or (scope and (n.startswith(f"/{scope}/") or n.startswith(f"{scope}/")))]
        if not hits:
            if p.startswith("op:"):
                types = sorted({op for _, op, _ in nodes})
                close = difflib.get_close_matches(p[3:], types, n=3) or types[:8]
                hint = f"op types in this graph include: {', '.join(close)}"
            else:
                close = difflib.get_close_matches(p, [n for n, _, _ in nodes], n=3, cutoff=0.3)
                hint = (f"closest node names: {', '.join(close)}" if close else "see `edgeconv inspect` for names") \
                    + "; globs like '/model.24/*' and op:TYPE work too"
            raise ConfigError(f"--keep-fp32 '{p}' matches no layer of the reference graph", hint=hint)
        out[p] = hits
    return out


def resolve(onnx_path: str | Path, patterns: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """The node names matched by ``patterns``, in graph order (deduplicated)."""
    if not patterns:
        return ()
    nodes = graph_nodes(onnx_path)
    hit = {n for names in match(nodes, patterns).values() for n in names}
    return tuple(n for n, _, _ in nodes if n in hit)
