"""Efficiency against the machine's own limit: a model's work and traffic, the machine's measured peak, and the
fraction of it a row achieves.

Work comes from the reference ONNX graph (static shapes after shape inference): multiply-accumulates of Conv,
ConvTranspose, Gemm and MatMul (the layers that bound a vision model's compute; elementwise ops are left out, so
FLOPs here are 2 × MACs). Traffic is the minimum a runtime must move: weights once, plus every intermediate
activation written once and read once, at the row's element size (4 B fp32, 2 B fp16/bf16, 1 B int8).

The peak is measured here, not taken from a datasheet: a large GEMM in fp32 (ONNX Runtime's MLAS and numpy's BLAS,
the better of the two), int8 (ORT ``MatMulInteger``, VNNI where the CPU has it), bf16 (OpenVINO ``MatMul`` with
``INFERENCE_PRECISION_HINT=bf16``, only where the CPU has native bf16), and memory bandwidth from a copy far larger
than the last-level cache. Peaks are cached per CPU, thread count and tool versions (they take ~10 s to measure).

``roofline_block(artifact, latency_p50_ms)`` is what a report row carries: achieved GFLOP/s and GB/s, their
fractions of the measured peaks, the roofline bound (memory- or compute-bound at this arithmetic intensity), and
the layers that make the model memory-bound (low-intensity convolutions: 1×1 and depthwise on large maps).
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from edgeconv.core.lazy import require, version

BYTES = {"fp32": 4, "fp16": 2, "bf16": 2, "int8": 1}
COMPUTE_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
GEMM_N = 1024  # 2.1 GFLOP per fp32 product: long enough to time, small enough for a 2-core machine
COPY_MB = 256


# -- the model's work and traffic ------------------------------------------------------------------------------
def _shapes(model: Any) -> dict[str, tuple[int, ...]]:
    onnx = require("onnx", "onnx")
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False)
    out: dict[str, tuple[int, ...]] = {}
    for vi in [*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output]:
        dims = tuple(int(d.dim_value) if d.HasField("dim_value") else -1 for d in vi.type.tensor_type.shape.dim)
        out[vi.name] = dims
    for init in inferred.graph.initializer:
        out[init.name] = tuple(int(d) for d in init.dims)
    return out


def _attr(node: Any, name: str, default: Any) -> Any:
    for a in node.attribute:
        if a.name == name:
            return a.i if a.type == a.INT else list(a.ints)
    return default


def _macs(node: Any, shp: dict[str, tuple[int, ...]]) -> int:
    def s(i: int) -> tuple[int, ...]:
        return shp.get(node.input[i], ()) if len(node.input) > i else ()

    op = node.op_type
    out = shp.get(node.output[0], ())
    if any(d < 0 for d in out) or not out:
        return 0
    if op == "Conv":
        w = s(1)  # (Cout, Cin/group, kh, kw...)
        return int(np.prod(out)) * int(np.prod(w[1:])) if w else 0
    if op == "ConvTranspose":
        x, w = s(0), s(1)  # w: (Cin, Cout/group, kh, kw)
        return int(np.prod(x)) * int(np.prod(w[1:])) if x and w else 0
    if op == "Gemm":
        a = s(0)
        k = a[0] if _attr(node, "transA", 0) else a[-1]
        return int(np.prod(out)) * int(k) if a else 0
    if op == "MatMul":
        a = s(0)
        return int(np.prod(out)) * int(a[-1]) if a else 0
    return 0


def model_cost(onnx_path: str | Path, precision: str = "fp32") -> dict[str, Any]:
    """MACs, FLOPs and minimum bytes moved by one inference of ``onnx_path``; the per-layer table is sorted by
    arithmetic intensity (the lowest first: the layers a runtime cannot keep compute-bound)."""
    onnx = require("onnx", "onnx")
    model = onnx.load(str(onnx_path))
    shp = _shapes(model)
    inits = {i.name for i in model.graph.initializer}
    eb = BYTES.get(precision, 4)
    weight_elems = sum(int(np.prod(i.dims)) for i in model.graph.initializer)
    graph_io = {i.name for i in model.graph.input} | {o.name for o in model.graph.output}
    act_elems = 0
    for n in model.graph.node:
        for o in n.output:
            d = shp.get(o)
            if d and all(x >= 0 for x in d):
                act_elems += int(np.prod(d)) * (1 if o in graph_io else 2)  # written once, read once
    layers = []
    for n in model.graph.node:
        if n.op_type not in COMPUTE_OPS:
            continue
        macs = _macs(n, shp)
        x = shp.get(n.input[0], ())
        y = shp.get(n.output[0], ())
        w = sum(int(np.prod(shp.get(i, ()))) for i in n.input[1:] if i in inits)
        moved = (int(np.prod(x)) if x else 0) + (int(np.prod(y)) if y else 0) + w
        layers.append({"node": n.name, "op": n.op_type, "macs": macs, "bytes": moved * eb,
                       "kernel": _attr(n, "kernel_shape", []), "group": _attr(n, "group", 1),
                       "intensity": round(2 * macs / max(moved * eb, 1), 2)})
    macs = sum(la["macs"] for la in layers)
    total_bytes = (weight_elems + act_elems) * eb
    return {"precision": precision, "macs": macs, "flops": 2 * macs, "weight_bytes": weight_elems * eb,
            "activation_bytes": act_elems * eb, "bytes": total_bytes,
            "intensity": round(2 * macs / max(total_bytes, 1), 2), "compute_layers": len(layers),
            "layers": sorted(layers, key=lambda la: la["intensity"])}


# -- the machine's peak ------------------------------------------------------------------------------------------
def _time(fn: Any, min_s: float = 1.0, min_iters: int = 3) -> float:
    """Best-of time of ``fn`` in seconds: the peak is the best the machine does, not its average, and on a shared
    machine a longer window is likelier to contain a quiet moment."""
    fn()
    best, spent, n = math.inf, 0.0, 0
    while spent < min_s or n < min_iters:
        t0 = time.perf_counter()
        fn()
        dt = time.perf_counter() - t0
        best, spent, n = min(best, dt), spent + dt, n + 1
    return best


def _ort_gemm(dtype: str, threads: int, n: int) -> float | None:
    """GFLOP/s (GOP/s for int8) of an n×n×n product in ONNX Runtime (MatMul fp32 / MatMulInteger u8×s8)."""
    onnx = require("onnx", "onnx")
    ort = require("onnxruntime", "onnxruntime")
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    if dtype == "fp32":
        w = numpy_helper.from_array(rng.standard_normal((n, n)).astype(np.float32), "w")
        node = helper.make_node("MatMul", ["a", "w"], ["y"])
        a_t, y_t, a = TensorProto.FLOAT, TensorProto.FLOAT, rng.standard_normal((n, n)).astype(np.float32)
        inits = [w]
    else:
        w = numpy_helper.from_array(rng.integers(-127, 127, (n, n)).astype(np.int8), "w")
        node = helper.make_node("MatMulInteger", ["a", "w"], ["y"])
        a_t, y_t, a = TensorProto.UINT8, TensorProto.INT32, rng.integers(0, 255, (n, n)).astype(np.uint8)
        inits = [w]
    graph = helper.make_graph([node], "gemm", [helper.make_tensor_value_info("a", a_t, [n, n])],
                              [helper.make_tensor_value_info("y", y_t, [n, n])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = min(model.ir_version, 9)
    onnx.checker.check_model(model)
    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads, so.log_severity_level = threads, 1, 3
    try:
        sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    except Exception:  # noqa: BLE001 - an ORT build without the kernel: that peak is simply not measured
        return None
    t = _time(lambda: sess.run(None, {"a": a}))
    return 2 * n**3 / t / 1e9


def _ov_gemm(hint: str, threads: int, n: int) -> float | None:
    """GFLOP/s of an n×n×n MatMul in OpenVINO's CPU plugin at INFERENCE_PRECISION_HINT ``hint``."""
    try:
        ov = require("openvino", "openvino")
    except Exception:  # noqa: BLE001 - OpenVINO not installed: no OpenVINO peak
        return None
    import openvino.opset13 as ops

    rng = np.random.default_rng(0)
    a = ops.parameter([n, n], np.float32, name="a")
    w = ops.constant(rng.standard_normal((n, n)).astype(np.float32))
    model = ov.Model([ops.matmul(a, w, False, False)], [a], "gemm")
    try:
        compiled = ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": hint,
                                                          "INFERENCE_NUM_THREADS": threads,
                                                          "PERFORMANCE_HINT": "LATENCY"})
    except Exception:  # noqa: BLE001 - precision not supported by this CPU
        return None
    req = compiled.create_infer_request()
    x = rng.standard_normal((n, n)).astype(np.float32)
    t = _time(lambda: req.infer({0: x}))
    return 2 * n**3 / t / 1e9


def _numpy_gemm(n: int) -> float:
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((n, n)).astype(np.float32), rng.standard_normal((n, n)).astype(np.float32)
    return 2 * n**3 / _time(lambda: a @ b) / 1e9


def _bandwidth(mb: int = COPY_MB) -> float:
    """GB/s of a large array copy (read + write), far beyond the last-level cache."""
    src = np.ones(mb * 2**20 // 4, np.float32)
    dst = np.empty_like(src)
    t = _time(lambda: np.copyto(dst, src), min_s=0.3)
    return 2 * src.nbytes / t / 1e9


def _peak_cache(threads: int) -> Path:
    from edgeconv.core.cache import cache_root
    from edgeconv.core.env import cpu_info

    info = cpu_info()
    tag = "-".join(str(x) for x in (info["model"], info["cores"], threads, version("onnxruntime"),
                                    version("openvino"), version("numpy")))
    safe = "".join(c if c.isalnum() else "_" for c in tag)
    return cache_root() / "roofline" / f"peak-{safe}.json"


def measure_peak(threads: int | None = None, *, use_cache: bool = True, n: int = GEMM_N) -> dict[str, Any]:
    """The machine's measured peaks at ``threads`` (default: all cores): GFLOP/s per precision and GB/s."""
    from edgeconv.core.env import isa_features

    threads = int(threads or os.cpu_count() or 1)
    path = _peak_cache(threads)
    if use_cache and path.is_file():
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
            pass
    fp32 = {"onnxruntime": _ort_gemm("fp32", threads, n), "openvino": _ov_gemm("f32", threads, n)}
    if threads == (os.cpu_count() or 1):
        fp32["numpy"] = _numpy_gemm(n)  # numpy's BLAS uses every core; only comparable at full thread count
    int8 = {"onnxruntime": _ort_gemm("int8", threads, n)}
    isa = isa_features()
    bf16 = {"openvino": _ov_gemm("bf16", threads, n)} if isa.get("BF16") else {}
    best = {k: max((v for v in d.values() if v), default=None) for k, d in
            (("fp32", fp32), ("int8", int8), ("bf16", bf16))}
    peak = {"threads": threads, "gemm_n": n, "gflops": best,
            "by_runtime": {"fp32": fp32, "int8": int8, "bf16": bf16},
            "bandwidth_gbs": _bandwidth(), "isa": isa,
            "note": "best-of GEMM timings; int8 in GOP/s (MatMulInteger u8 x s8, VNNI when the CPU has it)"}
    if use_cache:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(peak, indent=1))
        except OSError:
            pass
    return peak


# -- one row -------------------------------------------------------------------------------------------------------
def compute_precision(precision: str, isa: dict[str, bool]) -> str:
    """The precision a row's arithmetic runs in on this CPU: fp16 computes in fp32 on x86 without AVX512-FP16."""
    if precision == "fp16" and not isa.get("FP16"):
        return "fp32"
    return precision if precision in ("fp32", "int8", "bf16") else "fp32"


def efficiency(cost: dict[str, Any], p50_ms: float, peak: dict[str, Any], precision: str) -> dict[str, Any]:
    """Achieved rates of one inference taking ``p50_ms`` against the measured peaks (the roofline)."""
    s = p50_ms / 1e3
    gflops = cost["flops"] / s / 1e9
    gbs = cost["bytes"] / s / 1e9
    cp = compute_precision(precision, peak.get("isa", {}))
    prec_peak = peak["gflops"].get(cp) or peak["gflops"].get("fp32")
    fp32_peak = peak["gflops"].get("fp32")
    bw = peak.get("bandwidth_gbs")
    attainable = min(prec_peak, cost["intensity"] * bw) if prec_peak and bw else prec_peak
    memory_bound = bool(bw and prec_peak and cost["intensity"] * bw < prec_peak)
    low = [la for la in cost["layers"] if bw and prec_peak and la["intensity"] * bw < prec_peak]
    low_macs = sum(la["macs"] for la in low)
    return {
        "gflops": round(gflops, 2), "gbs": round(gbs, 2), "compute_precision": cp,
        "peak_gflops": round(prec_peak, 1) if prec_peak else None,
        "fraction_of_peak": round(gflops / prec_peak, 4) if prec_peak else None,
        "fraction_of_fp32_peak": round(gflops / fp32_peak, 4) if fp32_peak else None,
        "fraction_of_bandwidth": round(gbs / bw, 4) if bw else None,
        "attainable_gflops": round(attainable, 1) if attainable else None,
        "fraction_of_attainable": round(gflops / attainable, 4) if attainable else None,
        "bound": "memory" if memory_bound else "compute",
        "memory_bound_layers": len(low), "memory_bound_macs_share": round(low_macs / max(cost["macs"], 1), 3),
    }


def roofline_block(artifact: Any, latency_p50_ms: float, *, threads: int | None = None,
                   peak: dict[str, Any] | None = None) -> dict[str, Any]:
    """The efficiency column of one report row: the artifact's work (from its bundled reference ONNX, at its
    precision's element size) against this machine's measured peak at ``threads``."""
    precision = artifact.manifest.get("precision", "fp32")
    cost = model_cost(artifact.reference_onnx, precision)
    peak = peak or measure_peak(threads)
    block = {"macs": cost["macs"], "flops": cost["flops"], "bytes": cost["bytes"], "intensity": cost["intensity"],
             "threads": peak["threads"], "peak": {"gflops": peak["gflops"], "bandwidth_gbs": peak["bandwidth_gbs"]},
             **efficiency(cost, latency_p50_ms, peak, precision)}
    block["lowest_intensity_layers"] = [{k: la[k] for k in ("node", "op", "kernel", "group", "intensity")}
                                        for la in cost["layers"][:5]]
    return block


def add_roofline(report: dict[str, Any], *, use_cache: bool = True,
                 measure: Any = None) -> dict[str, Any]:
    """Give every measured row of ``report`` its ``roofline`` block (what ``bench --roofline`` and
    ``run --roofline`` call before writing the report) and the report a ``roofline`` section with the peaks used.

    The peak is measured once per thread count the rows ran at (a row's ``threads``; none = every core), because a
    one-thread row judged against a two-core peak would look half as efficient as it is. A row whose block cannot be
    computed (no reference ONNX in its folder, shapes that do not infer) gets ``{"error": ...}`` and no numbers.
    ``measure(threads)`` replaces :func:`measure_peak` (tests pass a fixed peak). Returns ``report``.
    """
    from edgeconv.core.artifact import Artifact
    from edgeconv.core.errors import EdgeconvError

    measure = measure or (lambda t: measure_peak(t, use_cache=use_cache))
    peaks: dict[int, dict[str, Any]] = {}
    for row in report.get("results", []):
        p50 = (row.get("latency_ms") or {}).get("p50")
        path = (row.get("artifact") or {}).get("path")
        if row.get("status") != "ok" or not p50 or not path:
            continue
        threads = int(row.get("threads") or os.cpu_count() or 1)
        try:
            if threads not in peaks:
                peaks[threads] = measure(threads)
            row["roofline"] = roofline_block(Artifact.load(path), float(p50), peak=peaks[threads])
        except (EdgeconvError, OSError, ValueError, KeyError) as e:
            row["roofline"] = {"error": " ".join(f"{type(e).__name__}: {e}".split())[:300]}
    if peaks:
        report["roofline"] = {"peaks": {str(t): p for t, p in peaks.items()}}
    return report
