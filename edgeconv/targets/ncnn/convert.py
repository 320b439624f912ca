"""Reference ONNX → (rewrites) → pnnx → ncnn ``.param``/``.bin``; torch → pnnx as the fallback route.

After pnnx, the produced net is run once on a random input next to the reference, to map pnnx's blob names
(``out0``...) onto the reference outputs by size and value and to reject wrong shapes early: pnnx can be silently
wrong, and the pipeline's verification only sees what the blob table says.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from edgeconv.core.compare import tensor_drift
from edgeconv.core.console import log, status
from edgeconv.core.errors import ConfigError, ConversionError
from edgeconv.core.lazy import require
from edgeconv.targets.base import ConversionResult, ConvertContext
from edgeconv.targets.ncnn.pnnx_log import PnnxRun, describe_failure, run_pnnx

MAX_IR = 10  # pnnx's bundled onnxruntime rejects newer IR versions (IR 14 measured: "Unsupported model IR version")

# ncnn2table's default is KL; on the bundled detector KL thresholds cost 1.96 points of mAP50-95 and minmax 0.49
# (benchmarks/results/ncnn_int8_2026-11-25.json), so minmax is the default here; --calib-method entropy selects KL.
DEFAULT_CALIB = "minmax"


def prepare_onnx(onnx_path: Path, out: Path, rewrite: bool = True) -> list[dict[str, Any]]:
    """Write the pnnx input: the reference with ncnn rewrites applied and an IR version pnnx can read."""
    onnx = require("onnx", "onnx")
    from edgeconv.targets.ncnn.rewrites import apply_rewrites

    model = onnx.load(str(onnx_path))
    done: list[dict[str, Any]] = []
    if rewrite:
        model, done = apply_rewrites(model)
    model.ir_version = min(model.ir_version, MAX_IR)
    onnx.save(model, str(out))
    return done


def _input_shapes(ref: Any) -> list[tuple[list[int], str]]:
    return [(list(s.static_shape), s.dtype) for s in ref.inputs]


def _torch_route(ref: Any, work: Path, fp16: bool, timeout: float) -> PnnxRun:
    """pnnx's own route: trace the module to TorchScript and let pnnx convert it (no ONNX rewrites apply)."""
    torch = require("torch", "torch")
    feeds = ref.random_feeds(1)[0]
    args = tuple(torch.from_numpy(feeds[s.name]) for s in ref.inputs)
    module = ref.module.eval()
    with torch.no_grad():
        traced = torch.jit.trace(module, args, check_trace=False, strict=False)
    pt = work / "model.pt"
    traced.save(str(pt))
    return run_pnnx(pt, work / "torch", _input_shapes(ref), fp16=fp16, timeout=timeout, route="torch")


def map_blobs(ref: Any, param: Path, bin_: Path) -> tuple[dict[str, dict[str, str]], dict[str, Any]]:
    """Match ncnn input/output blobs to reference names: inputs in order, outputs by size then by value."""
    from edgeconv.targets.base import OrtRunner
    from edgeconv.targets.ncnn import ncnnfile
    from edgeconv.targets.ncnn.runner import NcnnRunner

    layers, _ = ncnnfile.parse_param(param.read_text())
    model = ncnnfile.NcnnModel(layers, 0)
    in_blobs, out_blobs = model.input_blobs, model.output_blobs
    if len(in_blobs) != len(ref.inputs) or len(out_blobs) != len(ref.outputs):
        raise ConversionError(f"pnnx produced {len(in_blobs)} input(s)/{len(out_blobs)} output(s), the reference has "
                              f"{len(ref.inputs)}/{len(ref.outputs)}")
    feeds = ref.random_feeds(1, seed=123)[0]
    with OrtRunner(ref.onnx_path) as r:
        want = r.infer(feeds)
    ins = {s.name: (b, tuple(s.static_shape)) for s, b in zip(ref.inputs, in_blobs, strict=True)}
    probe = NcnnRunner(param, bin_, inputs=ins, outputs={}, runtime={})
    ex = probe.net.create_extractor()
    owned = [np.array(feeds[s.name][0], np.float32, order="C", copy=True) for s in ref.inputs]  # Mat does not own it
    mats = [probe.ncnn.Mat(a) for a in owned]
    for s, m in zip(ref.inputs, mats, strict=True):
        ex.input(ins[s.name][0], m)
    got = {}
    for b in out_blobs:
        ret, mat = ex.extract(b)
        if ret != 0:
            raise ConversionError(f"the ncnn model cannot compute its output blob '{b}' (code {ret})")
        got[b] = np.array(mat, dtype=np.float32, copy=True)
        del mat
    del ex, mats  # Mats and extractors must die before the net: its pool allocator aborts the process otherwise
    probe.close()
    outs, report, free = {}, {}, list(out_blobs)
    for spec in ref.outputs:
        ref_arr = want[spec.name]
        same = [b for b in free if got[b].size == ref_arr.size]
        if not same:
            raise ConversionError(
                f"reference output '{spec.name}' has shape {tuple(ref_arr.shape)} but pnnx produced "
                f"{', '.join(f'{b}{tuple(got[b].shape)}' for b in out_blobs)}",
                hint="pnnx changed a shape (e.g. a reduction keeping an axis); try the torch route or another opset")
        best = max(same, key=lambda b: tensor_drift(ref_arr.ravel(), got[b].ravel())["cosine"])
        free.remove(best)
        outs[spec.name] = best
        d = tensor_drift(ref_arr.ravel(), got[best].ravel())
        report[spec.name] = {"blob": best, "ncnn_shape": list(got[best].shape), "probe_max_abs": d["max_abs"],
                             "probe_cosine": d["cosine"]}
    return {"inputs": {k: v[0] for k, v in ins.items()}, "outputs": outs}, report


def convert(ctx: ConvertContext) -> ConversionResult:
    ref = ctx.reference
    if ctx.precision not in ("fp32", "fp16", "int8"):
        raise ConfigError(f"ncnn has no '{ctx.precision}' route", hint="use fp32, fp16 or int8")
    if any(len(s.static_shape) == 0 or None in s.static_shape for s in ref.inputs):
        raise ConfigError("ncnn conversion needs static input shapes", hint="pass --input NAME:1x3xHxW")
    timeout = float(ctx.option("pnnx_timeout", 300))
    fp16_weights = ctx.precision == "fp16"
    work = Path(tempfile.mkdtemp(prefix="edgeconv-ncnn-"))
    meta: dict[str, Any] = {"format": "ncnn", "converter": "pnnx"}
    try:
        onnx_in = work / "model.onnx"
        with status("rewriting the ONNX graph for ncnn"):
            meta["rewrites"] = prepare_onnx(ref.onnx_path, onnx_in, rewrite=bool(ctx.option("rewrites", True)))
        for r in meta["rewrites"]:
            log.info("ncnn rewrite: %s (%s)", r["rewrite"], ", ".join(r["nodes"]))
        attempts = []
        with status("pnnx: ONNX → ncnn"):
            run = run_pnnx(onnx_in, work / "onnx", _input_shapes(ref), fp16=fp16_weights, timeout=timeout,
                           route="onnx")
        attempts.append({"route": "onnx", "ok": run.ok, "unsupported": run.unsupported, "messages": run.messages[-5:]})
        first_failure = None if run.ok else describe_failure(run, onnx_in)
        if not run.ok and ref.module is not None and ctx.option("torch_fallback", True):
            log.warning("%s; trying pnnx's torch route", first_failure)
            with status("pnnx: TorchScript → ncnn (fallback)"):
                run = _torch_route(ref, work, fp16_weights, timeout)
            attempts.append({"route": "torch", "ok": run.ok, "unsupported": run.unsupported,
                             "messages": run.messages[-5:]})
        if not run.ok:
            msg = first_failure or describe_failure(run)
            if run is not None and len(attempts) > 1:
                msg += f"; torch route: {describe_failure(run)}"
            raise ConversionError(msg, hint="ncnn lacks these operators: change the model, or pick another target")
        meta["route"] = run.route
        meta["pnnx_attempts"] = attempts
        if not run.bin.exists():
            run.bin.write_bytes(b"")
        blobs, probe = map_blobs(ref, run.param, run.bin)
        meta["blobs"] = blobs
        meta["probe"] = probe
        meta["output_shapes"] = {s.name: list(s.static_shape) for s in ref.outputs}
        files = ["model.param", "model.bin"]
        if ctx.precision == "int8":
            if ctx.calibration is None:
                raise ConfigError("int8 needs calibration data", hint="pass --calib DIR (or use the bundled sample)")
            from edgeconv.targets.ncnn.int8 import quantize

            with status("ncnn int8: calibrating and quantizing weights"):
                meta["int8"] = quantize(run.param, run.bin, ctx.out_dir / "model.param", ctx.out_dir / "model.bin",
                                        ctx.calibration, blobs["inputs"],
                                        method=str(ctx.option("calib_method", DEFAULT_CALIB)),
                                        keep_fp32=ctx.keep_fp32, table=ctx.out_dir / "model.table",
                                        keep_output_blobs=frozenset(blobs["outputs"].values())
                                        if ctx.option("keep_outputs_fp32", False) else frozenset(),
                                        winograd=bool(ctx.option("int8_winograd", True)))
            files.append("model.table")
        else:
            shutil.copyfile(run.param, ctx.out_dir / "model.param")
            shutil.copyfile(run.bin, ctx.out_dir / "model.bin")
        meta["weights_storage"] = {"fp32": "fp32", "fp16": "fp16", "int8": "int8 (conv/fc), fp32 rest"}[ctx.precision]
        meta["runtime"] = {
            "fp16_storage": ctx.precision == "fp16",
            "fp16_arithmetic": ctx.precision == "fp16" and bool(ctx.option("fp16_arithmetic", False)),
            "int8": ctx.precision == "int8",
            "light_mode": bool(ctx.option("light_mode", True)),
            "winograd": not (ctx.precision == "int8" and not ctx.option("int8_winograd", True)),
        }
        roles = {"model": "model.param", "weights": "model.bin"}
        if ctx.precision == "int8":
            roles["table"] = "model.table"
        return ConversionResult(files, roles, meta)
    finally:
        shutil.rmtree(work, ignore_errors=True)
