"""ONNX node → PyTorch module: the names a model's author knows, recovered from what the exporters leave behind.

Sources, best first, per node:

1. ``metadata_props`` ``pkg.torch.onnx.name_scopes`` (the dynamo exporter writes the module scope of every node;
   the last entry is the FX node, the one before it the innermost module);
2. legacy-exporter node names, which carry the module path (``/inner/backbone.0/conv/Conv`` → ``backbone.0.conv``);
3. the initializer name of a Conv/Gemm/MatMul weight (``inner.b1.0.conv.weight`` → ``b1.0.conv``): both exporters
   name parameters by their state-dict key, and the simplifier keeps those names;
4. a fresh dynamo export of the module (``reexport=True``, when the torch module is at hand): onnxsim strips
   ``metadata_props``, so the simplified reference usually has none; its tensor names survive, so the fresh export's
   scopes are matched to the reference by output tensor name. Cached per reference hash.
5. otherwise the nearest upstream node that has a module, marked ``source="upstream"``.

``inner.`` is dropped: it is the export wrapper's attribute (``edgeconv.export.onnx_export._Flatten``), not part of
the user's model.
"""

from __future__ import annotations

import ast
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeconv.core import cache
from edgeconv.core.console import log
from edgeconv.core.lazy import require

WEIGHTED = ("Conv", "ConvTranspose", "Gemm", "MatMul")
WRAPPER_PREFIX = "inner."
MAP_VERSION = 1


@dataclass(frozen=True)
class ModuleName:
    """The PyTorch module of one ONNX node and where that name came from."""

    module: str | None
    source: str  # metadata | legacy-name | weight | reexport | upstream | none

    def label(self) -> str:
        if self.module is None:
            return "?"
        name = self.module or "(model forward)"
        return name if self.source != "upstream" else f"{name} (after)"


def _strip(path: str) -> str:
    path = path.strip(".")
    if path == "inner":
        return ""
    return path[len(WRAPPER_PREFIX):] if path.startswith(WRAPPER_PREFIX) else path


def scope_module(scopes: list[str]) -> str:
    """The innermost module of a ``pkg.torch.onnx.name_scopes`` list (its last entry names the FX node); "" is the
    model's own forward."""
    mods = [s for s in scopes[:-1] if s]
    return _strip(mods[-1]) if mods else ""


def _metadata_module(node: Any) -> str | None:
    for p in node.metadata_props:
        if p.key == "pkg.torch.onnx.name_scopes":
            try:
                scopes = ast.literal_eval(p.value)
            except (ValueError, SyntaxError):
                return None
            if isinstance(scopes, list):
                return scope_module([str(s) for s in scopes])
    return None


def legacy_module(node_name: str) -> str | None:
    """``/inner/backbone.0/conv/Conv`` → ``backbone.0.conv``, ``/inner/Add`` → "" (the model's own forward); names
    without a module path give None."""
    if not node_name.startswith("/") or node_name.count("/") < 2:
        return None
    parts = [p for p in node_name.split("/")[1:-1] if p]
    return _strip(".".join(parts))


def weight_module(node: Any, initializers: set[str]) -> str | None:
    if node.op_type not in WEIGHTED or len(node.input) < 2 or node.input[1] not in initializers:
        return None
    name = node.input[1]
    if "::" in name or not name.endswith(".weight"):
        return None
    return _strip(name[: -len(".weight")]) or None


def _reexport_scopes(module: Any, input_shapes: list[tuple[int, ...]]) -> dict[str, str]:
    """output tensor name → module, from a dynamo export of ``module`` (metadata kept: no simplification)."""
    torch = require("torch", "torch")
    onnx = require("onnx", "onnx")
    args = tuple(torch.zeros(*s) for s in input_shapes)
    with tempfile.TemporaryDirectory(prefix="edgeconv-modmap-") as d:
        path = Path(d) / "scopes.onnx"
        with torch.no_grad():
            prog = torch.onnx.export(module, args, dynamo=True, opset_version=18, verbose=False)
        prog.save(str(path))
        model = onnx.load(str(path), load_external_data=False)
    out: dict[str, str] = {}
    for n in model.graph.node:
        m = _metadata_module(n)
        if m is not None:
            for o in n.output:
                out[o] = m
    return out


def _cached_reexport(key: str, module: Any, input_shapes: list[tuple[int, ...]]) -> dict[str, str]:
    from edgeconv.core.hashing import sha256_json

    ck = sha256_json({"reference": key, "v": MAP_VERSION, "shapes": [list(s) for s in input_shapes]})
    hit = cache.lookup("module-maps", ck)
    if hit is not None:
        return json.loads((hit / "scopes.json").read_text())
    try:
        scopes = _reexport_scopes(module, input_shapes)
    except Exception as e:  # noqa: BLE001 - names are an aid: a model the dynamo exporter rejects keeps the rest
        log.info("module names: a dynamo re-export for scopes failed (%s); using weights and node names", e)
        return {}
    with tempfile.TemporaryDirectory(prefix="edgeconv-modmap-") as d:
        (Path(d) / "scopes.json").write_text(json.dumps(scopes))
        cache.store("module-maps", ck, Path(d))
    return scopes


def module_map(onnx_path: str | Path, *, module: Any = None, input_shapes: list[tuple[int, ...]] | None = None,
               key: str | None = None, reexport: bool = True) -> dict[str, ModuleName]:
    """node name → ModuleName for every node of the ONNX graph (see the module docstring for the sources).

    ``module``/``input_shapes``/``key`` (the reference sha256) enable the re-export source; without them only what
    the file itself says is used.
    """
    onnx = require("onnx", "onnx")
    model = onnx.load(str(onnx_path), load_external_data=False)
    inits = {i.name for i in model.graph.initializer}
    scopes: dict[str, str] = {}
    out: dict[str, ModuleName] = {}
    pending = []
    for n in model.graph.node:
        m = _metadata_module(n)
        if m is not None:
            out[n.name] = ModuleName(m, "metadata")
            continue
        m = legacy_module(n.name)
        if m is not None:
            out[n.name] = ModuleName(m, "legacy-name")
            continue
        pending.append(n)
    if pending and reexport and module is not None and input_shapes:
        scopes = _cached_reexport(key or str(onnx_path), module, input_shapes)
    producer: dict[str, str] = {}
    for n in model.graph.node:
        for o in n.output:
            producer[o] = n.name
    for n in model.graph.node:
        if n.name in out:
            continue
        m = weight_module(n, inits)
        if m:
            out[n.name] = ModuleName(m, "weight")
            continue
        m = next((scopes[o] for o in n.output if o in scopes), None)
        if m is not None:
            out[n.name] = ModuleName(m, "reexport")
            continue
        up = next((out[producer[i]] for i in n.input if i in producer and producer[i] in out
                   and out[producer[i]].module is not None), None)
        out[n.name] = ModuleName(up.module, "upstream") if up else ModuleName(None, "none")
    return out


def reference_module_map(ref: Any, reexport: bool = True) -> dict[str, ModuleName]:
    """``module_map`` of a ReferenceModel (its torch module, input shapes and hash enable the re-export)."""
    module = None
    try:
        module = ref.module
    except Exception:  # noqa: BLE001 - an ONNX-only reference has no module
        module = None
    shapes = [tuple(s.static_shape) for s in ref.inputs] if getattr(ref, "inputs", None) else None
    return module_map(ref.onnx_path, module=module, input_shapes=shapes, key=getattr(ref, "sha256", None),
                      reexport=reexport)
