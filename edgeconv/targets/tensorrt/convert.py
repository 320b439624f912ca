"""TensorRT conversion: everything a device needs to build its engine, verified here on ONNX Runtime.

Artifact (by precision):
- ``model.onnx`` - the TRT-ready fp32 ONNX (the simplified reference; static shapes or dynamic with the optimization
  profile recorded in the manifest), checked node by node against TensorRT's operator matrix (``trt_opcheck.json``).
- fp16: ``model_fp16.onnx`` - an fp16-cast graph with fp32 inputs/outputs for TensorRT 11's strongly typed build;
  TensorRT 10 builds ``model.onnx`` with the FP16 flag (or this file with ``--stronglyTyped``).
- int8: ``model_qdq.onnx`` - explicit Q/DQ (TensorRT 10 and 11), and ``calibration.cache`` - TensorRT's implicit
  INT8 cache for TensorRT 10 (``--int8 --calib``), both from the same shared activation statistics;
  ``qdq_scales.json`` lists the activations the Q/DQ model quantizes and their scales.
- ``build_engine.sh`` - the trtexec lines for each generation; ``model.engine`` when TensorRT and a GPU are here.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from edgeconv.core.console import log, status
from edgeconv.core.errors import ConfigError, ConversionError
from edgeconv.core.lazy import require, version
from edgeconv.targets.base import ConversionResult, ConvertContext
from edgeconv.targets.tensorrt import opcheck
from edgeconv.targets.tensorrt.calib_cache import JETPACK6_TRT, CalibrationCache, trt_version_number
from edgeconv.targets.tensorrt.engine import ENGINE_FILE, SCRIPT_FILE, BuildPlan, build_engine, build_script

MODEL = "model.onnx"
FP16_MODEL = "model_fp16.onnx"
QDQ_MODEL = "model_qdq.onnx"
CACHE_FILE = "calibration.cache"
SCALES_FILE = "qdq_scales.json"
LATENCY_NOTE = ("TensorRT not installed here: latency not measured; drift measured on the {what} via ONNX Runtime")
GENERATIONS = ("auto", "10", "11")


def installed_generation() -> str | None:
    v = version("tensorrt")
    return v.split(".")[0] if v else None


def resolve_generations(option: str | int | None) -> list[str]:
    """Which TensorRT generations to prepare for: the profile's ``trt_version``; "auto" = the installed one, or
    both when none is installed (the artifact then carries the routes for 10 and 11)."""
    opt = str(option or "auto")
    if opt not in GENERATIONS:
        raise ConfigError(f"trt_version must be one of {GENERATIONS}, not {opt!r}")
    here = installed_generation()
    if opt == "auto":
        return [here] if here in ("10", "11") else ["10", "11"]
    if here and here != opt:
        log.warning("profile asks for TensorRT %s but TensorRT %s is installed; the engine is built for %s",
                    opt, here, here)
    return [opt]


def fp16_cast(src: Path, dst: Path, keep_nodes: list[str]) -> dict[str, Any]:
    """fp32 -> fp16 for every tensor except graph inputs/outputs (kept fp32 with Casts) and ``keep_nodes``.

    ONNX Runtime's converter (the onnxconverter-common algorithm it ships) is used rather than a pass of our own:
    it clamps out-of-range initializers to fp16's finite range and inserts Casts around blocked ops."""
    onnx = require("onnx", "onnx")
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16

    model = onnx.load(str(src))
    out = convert_float_to_float16(model, keep_io_types=True, node_block_list=keep_nodes or None,
                                   op_block_list=list(DEFAULT_OP_BLOCK_LIST))
    onnx.save(out, str(dst))
    casts = sum(n.op_type == "Cast" for n in out.graph.node)
    return {"cast": "onnxruntime.transformers.float16.convert_float_to_float16", "keep_io_types": True,
            "kept_fp32_nodes": keep_nodes, "cast_nodes": casts}


def _plans(precision: str, generations: list[str], int8_mode: str, keep_nodes: list[str]) -> list[BuildPlan]:
    plans: list[BuildPlan] = []
    for g in generations:
        if precision == "fp32":
            plans.append(BuildPlan(g, MODEL, "fp32"))
        elif precision == "fp16":
            if g == "10":
                plans.append(BuildPlan(g, MODEL, "fp16-flag", fp16_flag=True, layer_fp32=keep_nodes))
                plans.append(BuildPlan(g, FP16_MODEL, "fp16-typed", strongly_typed=True))
            else:
                plans.append(BuildPlan(g, FP16_MODEL, "fp16-typed", strongly_typed=True))
        else:
            explicit = BuildPlan(g, QDQ_MODEL, "int8-explicit", fp16_flag=g == "10", int8_flag=g == "10",
                                 strongly_typed=g != "10")
            if g == "10":
                implicit = BuildPlan(g, MODEL, "int8-implicit", fp16_flag=True, int8_flag=True, calib_cache=CACHE_FILE,
                                     layer_fp32=keep_nodes)
                plans += [implicit, explicit] if int8_mode == "implicit" else [explicit, implicit]
            else:
                plans.append(explicit)
    return plans


def _int8(ctx: ConvertContext, out: Path, generations: list[str], excluded: list[str]) -> dict[str, Any]:
    from edgeconv.targets.tensorrt.qdq import explicit_qdq, quantized_tensors, save_scales

    if ctx.calibration is None:
        raise ConfigError("int8 needs calibration data", hint="pass --calib DIR (or use the bundled sample)")
    ref = ctx.reference
    method = str(ctx.option("calib_method", "minmax"))
    params = dict(ctx.option("calib_params", {}) or {})
    ranges = ctx.statistics(method, params).ranges
    qmeta = explicit_qdq(ref, ctx.calibration, out / QDQ_MODEL, ranges, excluded=excluded,
                         quantizer=str(ctx.option("quantizer", "auto")),
                         residual_add=bool(ctx.option("qdq_residual_add", True)))
    q = quantized_tensors(out / QDQ_MODEL)
    save_scales(q, out / SCALES_FILE)
    meta: dict[str, Any] = {"statistics": {"method": method, "params": params, "tensors": len(ranges),
                                           "source": "shared statistics (ctx.statistics)"},
                            "explicit": {"file": QDQ_MODEL, "scales_file": SCALES_FILE, **qmeta}}
    if "10" in generations:
        trt_v = version("tensorrt") or str(ctx.option("trt_cache_version", JETPACK6_TRT))
        cache = CalibrationCache.from_ranges(ranges, version=trt_version_number(trt_v))
        cache.write(out / CACHE_FILE)
        back = CalibrationCache.read(out / CACHE_FILE)
        missing = sorted(set(q) - set(back.scales))
        if missing:
            raise ConversionError(f"the calibration cache lacks {len(missing)} tensor(s) the Q/DQ model quantizes, "
                                  f"e.g. {missing[:3]}")
        rel = [abs(back.scales[t] - s) / s for t, s in q.items() if s > 0]
        meta["implicit"] = {"file": CACHE_FILE, "header": back.header, "tensors": len(back.scales),
                            "covers_qdq_tensors": True, "for_tensorrt": trt_v,
                            "max_rel_scale_diff_vs_qdq": max(rel) if rel else 0.0,
                            "note": "scales = max(|min|,|max|)/127 of the shared statistics; header algorithm "
                                    "EntropyCalibration2 = the calibrator trtexec --calib uses"}
    return meta


def convert(ctx: ConvertContext, *, build: bool = False) -> ConversionResult:
    ref, out, precision = ctx.reference, ctx.out_dir, ctx.precision
    if precision not in ("fp32", "fp16", "int8"):
        raise ConfigError(f"tensorrt has no '{precision}' route", hint="use fp32, fp16 or int8")
    generations = resolve_generations(ctx.option("trt_version", "auto"))
    int8_mode = str(ctx.option("int8_mode", "explicit"))
    if int8_mode not in ("explicit", "implicit"):
        raise ConfigError(f"int8_mode must be explicit or implicit, not {int8_mode!r}")
    if int8_mode == "implicit" and generations == ["11"]:
        raise ConfigError("TensorRT 11 has no implicit INT8 (calibration caches were removed)",
                          hint="use int8_mode = explicit (Q/DQ), or trt_version = 10")
    workspace = int(ctx.option("workspace_mib", 1024))
    profiles = dict(ref.dynamic_profiles or {})
    excluded = list(ctx.keep_fp32_nodes)
    files, roles = [MODEL], {"onnx": MODEL}
    shutil.copyfile(ref.onnx_path, out / MODEL)
    meta: dict[str, Any] = {
        "format": "tensorrt-onnx", "generations": generations, "workspace_mib": workspace,
        "trt_ready": {"file": MODEL, "simplified": (ref.record.get("simplify") or {}).get("simplifier"),
                      "static_shapes": not any(s.dynamic for s in ref.inputs), "profiles": profiles or None},
        "kept_fp32": excluded,
    }
    proxy, what = MODEL, "TRT-ready fp32 ONNX"
    if precision == "fp16":
        with status("casting the ONNX to fp16 (fp32 I/O) for strongly typed builds"):
            meta["fp16"] = {"file": FP16_MODEL, **fp16_cast(out / MODEL, out / FP16_MODEL, excluded),
                            "tensorrt10": "FP16 builder flag on model.onnx (--fp16)",
                            "tensorrt11": "strongly typed network from model_fp16.onnx"}
        files.append(FP16_MODEL)
        roles["fp16_onnx"] = FP16_MODEL
        proxy, what = FP16_MODEL, "fp16-cast ONNX"
    elif precision == "int8":
        meta["int8"] = _int8(ctx, out, generations, excluded)
        files += [QDQ_MODEL, SCALES_FILE]
        roles.update(qdq_onnx=QDQ_MODEL, qdq_scales=SCALES_FILE)
        if (out / CACHE_FILE).is_file():
            files.append(CACHE_FILE)
            roles["calib_cache"] = CACHE_FILE
        proxy, what = QDQ_MODEL, "Q/DQ ONNX"
    reports = {f: opcheck.check_model(out / f, dynamic_profiles=profiles) for f in files if f.endswith(".onnx")}
    (out / opcheck.REPORT_FILE).write_text(json.dumps(reports, indent=1))
    files.append(opcheck.REPORT_FILE)
    roles["opcheck"] = opcheck.REPORT_FILE
    meta["opcheck"] = {f: opcheck.summary(r) for f, r in reports.items()}
    bad = {f: r["problems"] for f, r in reports.items() if not r["ok"]}
    if bad and ctx.option("opcheck", "error") == "error":
        first = next(iter(bad.items()))
        raise ConversionError(f"{first[0]} will not build on TensorRT: {'; '.join(first[1][:3])}",
                              hint="see trt_opcheck.json; replace the operators, or set options opcheck = 'warn'")
    for f, probs in bad.items():
        log.warning("TensorRT operator check of %s: %s", f, "; ".join(probs[:3]))

    plans = _plans(precision, generations, int8_mode, excluded)
    notes = [f"precision {precision}; routes: " + ", ".join(p.describe() for p in plans),
             "edgeconv verified these files on ONNX Runtime (proxy) unless an engine was built on this machine.",
             "Latency: run `trtexec --loadEngine=model.engine` on the device (edgeconv did not measure it here)."]
    (out / SCRIPT_FILE).write_text(build_script(plans, profiles, workspace, notes))
    (out / SCRIPT_FILE).chmod(0o755)
    files.append(SCRIPT_FILE)
    roles["build_script"] = SCRIPT_FILE
    meta["build"] = {"script": SCRIPT_FILE, "plans": [p.__dict__ for p in plans]}
    meta["proxy"] = {"file": proxy, "runtime": "onnxruntime", "graph_optimization": "disabled",
                     "why": "exact Q/DQ fake-quant emulation (TensorRT's math) instead of ORT's integer kernels"}
    roles["proxy"] = proxy
    roles["model"] = proxy

    verify_note = None
    if build:
        here = installed_generation()
        plan = next((p for p in plans if p.generation == here), None)
        if plan is None:
            raise ConfigError(f"no build route for the installed TensorRT {version('tensorrt')}")
        with status(f"building the TensorRT {version('tensorrt')} engine ({plan.route})"):
            meta["engine"] = build_engine(out, plan, profiles, workspace)
        files.append(ENGINE_FILE)
        roles["engine"] = ENGINE_FILE
        roles["model"] = ENGINE_FILE
    else:
        from edgeconv.targets.tensorrt import tensorrt_here

        reason = tensorrt_here()[1]
        meta["engine"] = {"built": False, "reason": reason}
        meta["latency_note"] = LATENCY_NOTE.format(what=what)
        verify_note = (f"{reason}: verified {proxy} on ONNX Runtime (graph optimizations disabled) as a proxy; "
                       "TensorRT latency was not measured")
    return ConversionResult(files, roles, meta, input_layout="NCHW", runnable_here=True, verify_note=verify_note)
