"""ONNX simplification: onnxsim first, onnxslim as the fallback, each verified by comparing outputs."""

from __future__ import annotations

import collections
from pathlib import Path
from typing import Any

import numpy as np

from edgeconv.core.compare import compare_outputs
from edgeconv.core.console import log
from edgeconv.core.lazy import available
from edgeconv.export.onnx_export import onnx_outputs


def op_histogram(model: Any) -> dict[str, int]:
    return dict(sorted(collections.Counter(n.op_type for n in model.graph.node).items()))


def _run_onnxsim(model: Any) -> Any:
    import onnxsim

    simplified, ok = onnxsim.simplify(model)
    if not ok:
        raise RuntimeError("onnxsim's own check failed")
    return simplified


def _run_onnxslim(model: Any) -> Any:
    import onnxslim

    return onnxslim.slim(model)


SIMPLIFIERS = {"onnxsim": ("onnxsim", _run_onnxsim), "onnxslim": ("onnxslim", _run_onnxslim)}


def simplify(src: Path, dst: Path, feeds: list[dict[str, np.ndarray]], *, enabled: bool = True,
             atol: float = 1e-5) -> dict[str, Any]:
    """Simplify ``src`` into ``dst``; if every simplifier fails or changes the outputs, ``dst`` is ``src``."""
    import onnx

    model = onnx.load(str(src))
    before = len(model.graph.node)
    record: dict[str, Any] = {"nodes_before": before, "ops_before": op_histogram(model), "attempts": []}
    if enabled:
        ref = [onnx_outputs(src, f) for f in feeds]
        for name, (module, fn) in SIMPLIFIERS.items():
            if not available(module):
                record["attempts"].append({"tool": name, "ok": False, "error": "not installed"})
                continue
            try:
                out = fn(model)
                onnx.checker.check_model(out)
                data = out.SerializeToString()
                got = [onnx_outputs(data, f) for f in feeds]
                drift = compare_outputs(ref, got)
                if not drift["shape_ok"] or drift["max_abs"] > atol * max(1.0, max(
                        float(np.abs(v).max()) for r in ref for v in r.values())):
                    raise RuntimeError(f"outputs changed (max_abs {drift.get('max_abs')})")
            except Exception as e:
                msg = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
                log.debug("simplifier %s failed: %s", name, msg)
                record["attempts"].append({"tool": name, "ok": False, "error": msg})
                continue
            dst.write_bytes(data)
            record["attempts"].append({"tool": name, "ok": True})
            record.update(simplifier=name, nodes_after=len(out.graph.node), ops_after=op_histogram(out))
            return record
    dst.write_bytes(src.read_bytes())
    record.update(simplifier=None, nodes_after=before, ops_after=record["ops_before"])
    return record
