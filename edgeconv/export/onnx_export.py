"""torch → ONNX with the dynamo and the legacy exporter, each candidate verified before it is accepted.

Real third-party models break one exporter or the other, so both are tried in a configurable order; a candidate
wins only if ``onnx.checker`` (full check) passes, ONNX Runtime loads it and its outputs match torch on sample inputs.
The manifest records the winner and why every other attempt failed.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgeconv.core.compare import compare_outputs
from edgeconv.core.errors import ExportError
from edgeconv.core.lazy import require
from edgeconv.core.tensors import TensorSpec

EXPORTERS = ("dynamo", "legacy")


@dataclass
class DynamicSpec:
    """Opt-in dynamic axes: which axes of every image input may vary, and the min/opt/max shapes TensorRT needs."""

    batch: bool = False
    spatial: bool = False
    max_batch: int = 8
    min_hw: tuple[int, int] | None = None
    max_hw: tuple[int, int] | None = None

    @property
    def enabled(self) -> bool:
        return self.batch or self.spatial

    def axes(self, spec: TensorSpec) -> dict[int, str]:
        out: dict[int, str] = {}
        if self.batch:
            out[0] = "batch"
        if self.spatial and len(spec.shape) == 4:
            h, w = (2, 3) if (spec.layout or "NCHW") == "NCHW" else (1, 2)
            out[h], out[w] = "height", "width"
        return out

    def profile(self, spec: TensorSpec) -> dict[str, list[int]]:
        """min/opt/max shapes for one input, opt being the shape the user gave."""
        opt = list(spec.shape)
        lo, hi = list(opt), list(opt)
        if self.batch:
            lo[0], hi[0] = 1, max(self.max_batch, opt[0])
        if self.spatial and len(opt) == 4:
            h, w = (2, 3) if (spec.layout or "NCHW") == "NCHW" else (1, 2)
            mn = self.min_hw or (max(32, opt[h] // 2), max(32, opt[w] // 2))
            mx = self.max_hw or (opt[h] * 2, opt[w] * 2)
            lo[h], lo[w], hi[h], hi[w] = mn[0], mn[1], mx[0], mx[1]
        return {"min": lo, "opt": opt, "max": hi}


class _Flatten:
    """Builds a wrapper module whose forward returns a flat tuple of tensors.

    Wrapping (instead of exporting the user's module directly) sidesteps attributes that shadow nn.Module methods
    and nested/dict outputs, which both exporters handle differently.
    """

    @staticmethod
    def wrap(module: Any) -> Any:
        torch = require("torch", "torch")

        class ExportWrapper(torch.nn.Module):
            def __init__(self, inner: Any) -> None:
                super().__init__()
                self.inner = inner

            def forward(self, *args: Any) -> tuple[Any, ...]:
                return tuple(flatten_outputs(self.inner(*args)))

        from edgeconv.intake.loader import set_eval

        wrapper = ExportWrapper(module)
        set_eval(wrapper)
        return wrapper


def flatten_outputs(out: Any) -> list[Any]:
    """Tensors of a model's output in a stable order (tuples/lists in order, dicts by insertion order)."""
    if isinstance(out, dict):
        return [t for v in out.values() for t in flatten_outputs(v)]
    if isinstance(out, (list, tuple)):
        return [t for v in out for t in flatten_outputs(v)]
    return [out]


def torch_outputs(module: Any, feeds: dict[str, np.ndarray], inputs: list[TensorSpec]) -> list[np.ndarray]:
    torch = require("torch", "torch")
    with torch.inference_mode():
        out = module(*[torch.from_numpy(np.ascontiguousarray(feeds[s.name])) for s in inputs])
    return [t.detach().cpu().numpy() for t in flatten_outputs(out)]


def onnx_outputs(path: Path | bytes, feeds: dict[str, np.ndarray], *, optimize: bool = True) -> dict[str, np.ndarray]:
    ort = require("onnxruntime", "onnxruntime")
    so = ort.SessionOptions()
    so.log_severity_level = 3
    if not optimize:
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(str(path) if isinstance(path, Path) else path, so, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(names, feeds), strict=True))


def _export_one(route: str, wrapper: Any, args: tuple, path: Path, inputs: list[TensorSpec], output_names: list[str],
                opset: int, dynamic: DynamicSpec) -> int:
    torch = require("torch", "torch")
    in_names = [s.name for s in inputs]
    sink = io.StringIO()
    with warnings.catch_warnings(), contextlib.redirect_stdout(sink):
        warnings.simplefilter("ignore")
        logging.getLogger("torch").setLevel(logging.ERROR)
        if route == "legacy":
            dyn = {s.name: dynamic.axes(s) for s in inputs} if dynamic.enabled else None
            if dyn is not None and dynamic.batch:
                dyn.update({n: {0: "batch"} for n in output_names})
            torch.onnx.export(wrapper, args, str(path), dynamo=False, opset_version=opset, input_names=in_names,
                              output_names=output_names, dynamic_axes=dyn, do_constant_folding=True)
            return opset
        if route == "dynamo":
            require("onnxscript", "torch", target=None)
            dyn_shapes = None
            if dynamic.enabled:
                dyn_shapes = tuple({ax: torch.export.Dim.AUTO for ax in dynamic.axes(s)} for s in inputs)
            prog = torch.onnx.export(wrapper, args, dynamo=True, opset_version=max(opset, 18), input_names=in_names,
                                     output_names=output_names, dynamic_shapes=dyn_shapes, optimize=True,
                                     verbose=False)
            prog.save(str(path), external_data=False)
            return max(opset, 18)
    raise ExportError(f"unknown exporter '{route}'", hint=f"use one of {EXPORTERS}")


def verify_onnx(path: Path, ref_outputs: list[list[np.ndarray]], feeds: list[dict[str, np.ndarray]],
                output_names: list[str], atol: float) -> dict[str, Any]:
    """Full onnx.checker, loads in ONNX Runtime, outputs match ``ref_outputs`` within ``atol`` (scaled by
    magnitude). Raises ExportError with the reason."""
    onnx = require("onnx", "onnx")
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except Exception as e:
        raise ExportError(f"onnx.checker: {str(e).splitlines()[0]}") from e
    try:
        gots = [onnx_outputs(path, f) for f in feeds]
    except Exception as e:
        raise ExportError(f"onnxruntime cannot run it: {str(e).splitlines()[0][:300]}") from e
    got_lists = [[g[n] for n in output_names] if all(n in g for n in output_names) else list(g.values())
                 for g in gots]
    refs = [dict(zip(output_names, r, strict=True)) for r in ref_outputs]
    got_named = [dict(zip(output_names, g, strict=False)) for g in got_lists]
    drift = compare_outputs(refs, got_named)
    if not drift["shape_ok"]:
        raise ExportError(f"output shapes differ from torch: {drift['per_output']}")
    scale = max(1.0, max(float(np.abs(r).max()) for rr in ref_outputs for r in rr))
    if drift["max_abs"] > atol * scale:
        raise ExportError(f"outputs differ from torch: max_abs {drift['max_abs']:.3g} > {atol * scale:.3g}")
    return drift


def export_verified(module: Any, inputs: list[TensorSpec], output_names: list[str] | None, out_path: Path, *,
                    opset: int = 17, exporters: tuple[str, ...] = EXPORTERS, dynamic: DynamicSpec | None = None,
                    sample_feeds: list[dict[str, np.ndarray]], atol: float = 1e-4) -> dict[str, Any]:
    """Try each exporter in order; keep the first verified graph at ``out_path``. Returns the export record."""
    dynamic = dynamic or DynamicSpec()
    # Always verify on an input the exporter did not trace with: a trace that baked the sample in as a constant
    # would otherwise pass.
    from edgeconv.core.tensors import random_feeds

    sample_feeds = [*sample_feeds, random_feeds(inputs, seed=12345)]
    wrapper = _Flatten.wrap(module)
    ref = [torch_outputs(wrapper, f, inputs) for f in sample_feeds]
    n_out = len(ref[0])
    if output_names is None:
        output_names = ["output"] if n_out == 1 else [f"output{i}" for i in range(n_out)]
    if len(output_names) != n_out:
        raise ExportError(f"the model returns {n_out} tensor(s) but {len(output_names)} output name(s) were given")
    torch = require("torch", "torch")
    args = tuple(torch.from_numpy(sample_feeds[0][s.name]) for s in inputs)
    attempts: list[dict[str, Any]] = []
    for route in exporters:
        cand = out_path.with_name(f"{out_path.stem}.{route}.onnx")
        try:
            used_opset = _export_one(route, wrapper, args, cand, inputs, output_names, opset, dynamic)
            drift = verify_onnx(cand, ref, sample_feeds, output_names, atol)
        except Exception as e:
            reason = e.message if isinstance(e, ExportError) else f"{type(e).__name__}: {_first_line(e)}"
            attempts.append({"route": route, "ok": False, "error": reason})
            cand.unlink(missing_ok=True)
            continue
        cand.replace(out_path)
        attempts.append({"route": route, "ok": True, "opset": used_opset, "max_abs_vs_torch": drift["max_abs"]})
        return {"route": route, "opset": used_opset, "attempts": attempts, "output_names": output_names,
                "max_abs_vs_torch": drift["max_abs"]}
    reasons = "; ".join(f"{a['route']}: {a['error']}" for a in attempts)
    raise ExportError(f"no exporter produced a verified ONNX graph ({reasons})",
                      hint="try --opset 18, --exporter legacy, or fix the op the exporter names")


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    for line in text.splitlines():
        if line.strip():
            return line.strip()[:300]
    return type(e).__name__
