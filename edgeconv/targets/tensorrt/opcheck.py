"""Check every node of an ONNX graph against TensorRT's supported-operator matrix (embedded in ``operators.py``).

Why here, without TensorRT: the engine is built later, on the user's device; an unsupported operator found then
costs a round trip.  The check is static: operator support, the opset range, custom domains (which need a TensorRT
plugin), and the restrictions that can be verified from the graph alone (Q/DQ zero points, Resize modes, MaxPool
indices, pooling dilations, Reduce axes).  Restrictions that cannot be checked statically are listed as "unchecked",
never silently passed.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from edgeconv.core.lazy import require
from edgeconv.targets.tensorrt.operators import OPERATORS, OPSET_RANGE, SOURCE, TRT_VERSION

REPORT_FILE = "trt_opcheck.json"
_RESIZE_COORD = {"half_pixel", "pytorch_half_pixel", "tf_half_pixel_for_nn", "asymmetric", "align_corners"}
_RESIZE_MODE = {"nearest", "linear"}
_REDUCE = {"ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceMax", "ReduceMean", "ReduceMin",
           "ReduceProd", "ReduceSum", "ReduceSumSquare"}


def _attr(node: Any, name: str, default: Any = None) -> Any:
    onnx = require("onnx", "onnx")
    for a in node.attribute:
        if a.name == name:
            v = onnx.helper.get_attribute_value(a)
            return v.decode() if isinstance(v, bytes) else v
    return default


def _restriction(node: Any, consts: dict[str, np.ndarray], consumed: set[str]) -> tuple[str, str] | None:
    """(status, detail) for a node whose operator has a restriction we can verify; None if nothing applies."""
    op = node.op_type
    if op in ("QuantizeLinear", "DequantizeLinear"):
        if len(node.input) < 3 or not node.input[2]:
            return "ok", "no zero point (0)"
        zp = consts.get(node.input[2])
        if zp is None:
            return "unchecked", "zero point is not a constant"
        return ("ok", "zero point is 0") if not np.any(zp) else ("violated", "non-zero zero point (asymmetric)")
    if op == "Resize":
        mode, coord = _attr(node, "mode", "nearest"), _attr(node, "coordinate_transformation_mode", "half_pixel")
        if _attr(node, "antialias", 0):
            return "violated", "antialias is not supported"
        if mode not in _RESIZE_MODE:
            return "violated", f"mode '{mode}' (supported: nearest, linear)"
        if coord not in _RESIZE_COORD:
            return "violated", f"coordinate_transformation_mode '{coord}'"
        return "ok", f"mode {mode}, {coord}"
    if op == "MaxPool" and len(node.output) > 1 and node.output[1] and node.output[1] in consumed:
        return "violated", "the Indices output is used"
    if op in ("MaxPool", "AveragePool", "LpPool"):
        dil = _attr(node, "dilations")
        if dil and any(d != 1 for d in dil):
            return "violated", f"dilations {list(dil)}"
        return "ok", "dilations empty or ones"
    if op in _REDUCE and len(node.input) > 1 and node.input[1]:
        return ("ok", "axes constant") if node.input[1] in consts else ("violated", "axes is not an initializer")
    if op == "TopK" and len(node.input) > 1:
        k = consts.get(node.input[1])
        if k is None:
            return "unchecked", "K is not a constant"
        return ("ok", f"K={int(k.reshape(-1)[0])}") if int(k.reshape(-1)[0]) < 3840 else ("violated", "K >= 3840")
    return None


def check_model(onnx_path: Path, *, dynamic_profiles: dict[str, Any] | None = None) -> dict[str, Any]:
    """A JSON-able report: every operator's support status, restrictions checked, and an overall verdict."""
    onnx = require("onnx", "onnx")
    from onnx import numpy_helper

    model = onnx.load(str(onnx_path))
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    consts = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    for n in model.graph.node:
        if n.op_type == "Constant":
            v = _attr(n, "value")
            if v is not None:
                consts[n.output[0]] = numpy_helper.to_array(v)
    consumed = {i for n in model.graph.node for i in n.input} | {o.name for o in model.graph.output}
    counts = Counter(n.op_type if n.domain in ("", "ai.onnx") else f"{n.domain}::{n.op_type}" for n in model.graph.node)
    unsupported, unknown, restricted = [], [], []
    for n in model.graph.node:
        if n.domain not in ("", "ai.onnx"):
            unsupported.append({"node": n.name, "op": f"{n.domain}::{n.op_type}",
                                "reason": "custom domain: needs a TensorRT plugin"})
            continue
        row = OPERATORS.get(n.op_type)
        if row is None:
            unknown.append({"node": n.name, "op": n.op_type, "reason": "not in TensorRT's operator matrix"})
            continue
        supported, _types, text = row
        if not supported:
            unsupported.append({"node": n.name, "op": n.op_type, "reason": "not supported by TensorRT's ONNX parser"})
            continue
        checked = _restriction(n, consts, consumed)
        if checked is not None:
            restricted.append({"node": n.name, "op": n.op_type, "restriction": text, "status": checked[0],
                               "detail": checked[1]})
        elif text:
            restricted.append({"node": n.name, "op": n.op_type, "restriction": text, "status": "unchecked",
                               "detail": "cannot be verified statically"})
    violated = [r for r in restricted if r["status"] == "violated"]
    opset_ok = opset is not None and OPSET_RANGE[0] <= opset <= OPSET_RANGE[1]
    dynamic = {}
    for vi in model.graph.input:
        if vi.name in consts:
            continue
        dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in vi.type.tensor_type.shape.dim]
        if any(not isinstance(d, int) or d <= 0 for d in dims):
            dynamic[vi.name] = dims
    missing_profiles = [n for n in dynamic if n not in (dynamic_profiles or {})]
    ok = not unsupported and not violated and opset_ok and not missing_profiles
    problems = ([f"{u['op']} ({u['node']}): {u['reason']}" for u in unsupported]
                + [f"{v['op']} ({v['node']}): {v['detail']}" for v in violated]
                + ([] if opset_ok else [f"opset {opset} outside TensorRT's {OPSET_RANGE[0]}..{OPSET_RANGE[1]}"])
                + [f"input '{n}' has dynamic dims {dynamic[n]} but no optimization profile" for n in missing_profiles])
    return {
        "ok": ok, "problems": problems,
        "source": {"matrix": SOURCE, "tensorrt": TRT_VERSION, "opset_range": list(OPSET_RANGE)},
        "opset": opset, "opset_ok": opset_ok, "nodes": len(model.graph.node), "op_counts": dict(sorted(counts.items())),
        "unsupported": unsupported, "unknown": unknown,
        "restrictions": {"violated": violated, "checked_ok": sum(r["status"] == "ok" for r in restricted),
                         "unchecked": [r for r in restricted if r["status"] == "unchecked"]},
        "shapes": {"static": not dynamic, "dynamic_inputs": dynamic,
                   "profiles": {n: (dynamic_profiles or {}).get(n) for n in dynamic}},
    }


def write_report(report: dict[str, Any], out_dir: Path) -> str:
    (out_dir / REPORT_FILE).write_text(json.dumps(report, indent=1))
    return REPORT_FILE


def summary(report: dict[str, Any]) -> dict[str, Any]:
    """The short form kept in the manifest's conversion meta (the full report is a file in the artifact)."""
    return {"ok": report["ok"], "file": REPORT_FILE, "tensorrt_matrix": report["source"]["tensorrt"],
            "opset": report["opset"], "ops": len(report["op_counts"]), "unsupported": len(report["unsupported"]),
            "unknown": len(report["unknown"]), "violated": len(report["restrictions"]["violated"]),
            "unchecked": len(report["restrictions"]["unchecked"]), "problems": report["problems"][:10]}
