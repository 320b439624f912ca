"""RKNN conversion, host side: turn the context into a toolkit recipe, run it in the ``rknn`` environment.

The preprocessing contract goes into the toolkit's own config, so one contract governs calibration and the device:
``(x*scale - mean)/std`` (or ``((x - mean)/std)*scale``) over raw pixels is exactly ``(x - mean_values)/std_values``
with ``mean_values = mean/scale`` (``mean``) and ``std_values = std/scale``, which the NPU applies to the raw
uint8 image.  The calibration sample is therefore written as raw pixels (the contract inverted, exact for images:
they are integers after resizing), and the toolkit normalizes them itself, as it will on the board.  Channel order
is carried by the data: the pixels are in the contract's order (RGB or BGR), the order the model consumes, so
``quant_img_RGB2BGR`` (which only reorders *image files* in a dataset) stays False.  When the contract cannot be
expressed (no contract, not a 1- or 3-channel 4-D image input, several inputs, or ``embed_preprocess = false``),
the model keeps float inputs and is fed preprocessed tensors instead; the recipe records which.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from edgeconv.core.console import log
from edgeconv.core.errors import ConfigError
from edgeconv.core.hashing import sha256_file
from edgeconv.targets.base import ConversionResult, ConvertContext

HANDLER = Path(__file__).with_name("handler.py")
MODEL = "model.rknn"
RECIPE = "rknn_build.json"
SIM_CALIB = "simulator/calibration.npz"
SIM_ONNX = "simulator/source.onnx"
ALGORITHMS = {"minmax": "normal", "entropy": "kl_divergence"}
LATENCY_NOTE = ("RKNN toolkit simulator on this x86 host (init_runtime with no target): p50 {p50:.1f} ms is the "
                "simulator's CPU time, not a device number; measure on the board with rknn-toolkit-lite2")


def toolkit_normalization(pp: Any, shape: tuple[int, ...]) -> tuple[list[float], list[float]] | None:
    """``(mean_values, std_values)`` for ``rknn.config`` equivalent to the contract, or None if inexpressible."""
    if pp is None or len(shape) != 4 or shape[1] not in (1, 3) or getattr(pp, "layout", "NCHW") != "NCHW":
        return None
    c = shape[1]
    mean = list(pp.mean) if len(pp.mean) == c else [float(pp.mean[0])] * c
    std = list(pp.std) if len(pp.std) == c else [float(pp.std[0])] * c
    s = float(pp.scale)
    if s <= 0:
        return None
    if pp.order == "scale-first":
        return [m / s for m in mean], [d / s for d in std]
    return list(mean), [d / s for d in std]


def to_raw(x: np.ndarray, norm: tuple[list[float], list[float]] | None) -> np.ndarray:
    """Invert the contract's normalization (NCHW float) back to raw pixel values; identity when not embedded."""
    if norm is None:
        return np.ascontiguousarray(x, dtype=np.float32)
    mean = np.asarray(norm[0], np.float32).reshape(1, -1, 1, 1)
    std = np.asarray(norm[1], np.float32).reshape(1, -1, 1, 1)
    return np.ascontiguousarray(x.astype(np.float32) * std + mean)


def recipe_for(ctx: ConvertContext) -> dict[str, Any]:
    """Everything the toolkit is told: the same recipe makes the artifact and the simulator's rebuild."""
    if ctx.precision not in ("fp16", "int8"):
        raise ConfigError(f"rknn has no '{ctx.precision}' route", hint="use fp16 or int8 (the NPU has no fp32)")
    if ctx.keep_fp32:
        raise ConfigError("rknn: --keep-fp32 is not supported (the toolkit's hybrid quantization is not wired)",
                          hint="drop --keep-fp32, or use quantized_algorithm = 'mmse' for a more accurate INT8")
    ref = ctx.reference
    shape = tuple(ref.inputs[0].static_shape)
    if any(s.dynamic for s in ref.inputs):
        raise ConfigError("rknn needs static input shapes", hint="export without --dynamic")
    norm = toolkit_normalization(ctx.preprocess, shape) if ctx.option("embed_preprocess", True) and \
        len(ref.inputs) == 1 else None
    method = ctx.option("calib_method")
    algorithm = ALGORITHMS.get(method) if method else str(ctx.option("quantized_algorithm", "normal"))
    if method and algorithm is None:
        raise ConfigError(f"rknn: calib_method '{method}' has no toolkit equivalent",
                          hint="use minmax (normal) or entropy (kl_divergence), or set quantized_algorithm")
    config: dict[str, Any] = {
        "target_platform": str(ctx.option("platform", "rk3588")),
        "optimization_level": int(ctx.option("optimization_level", 3)),
        "quant_img_RGB2BGR": False,
    }
    if norm is not None:
        config.update(mean_values=[norm[0]], std_values=[norm[1]])
    else:
        c = shape[1] if len(shape) == 4 else 1
        config.update(mean_values=[[0.0] * c], std_values=[[1.0] * c])
    if ctx.precision == "int8":
        config.update(quantized_dtype=str(ctx.option("quantized_dtype", "w8a8")), quantized_algorithm=algorithm,
                      quantized_method=str(ctx.option("quantized_method", "channel")))
    pp = ctx.preprocess
    return {
        "config": config, "quantize": ctx.precision == "int8",
        "input": {"name": ref.inputs[0].name, "shape": list(shape),
                  "embedded_preprocess": norm is not None,
                  "feeds": ("raw pixels (0-255) in the contract's channel order "
                            f"({getattr(pp, 'color', '?')}); the NPU applies mean_values/std_values")
                  if norm is not None else "preprocessed float tensors (the contract is applied by the caller)",
                  "contract": pp.to_dict() if pp is not None else None},
        "outputs": [o.name for o in ref.outputs],
    }


def write_calibration(ctx: ConvertContext, norm: tuple[list[float], list[float]] | None, dest: Path) -> dict[str, Any]:
    """The calibration sample as the toolkit will read it (raw pixels when embedded), compressed, kept in the
    artifact (outside its deployable files) so the simulator can rebuild the same INT8 model later."""
    if ctx.calibration is None:
        raise ConfigError("int8 needs calibration data", hint="pass --calib DIR (or use the bundled sample)")
    name = ctx.reference.inputs[0].name
    arrays: dict[str, np.ndarray] = {}
    integral = norm is not None
    for i, feed in enumerate(ctx.calibration.feeds(progress="rknn calibration sample")):
        raw = to_raw(feed[name], norm)
        if integral:
            r = np.rint(raw)
            integral = bool(np.abs(raw - r).max() < 1e-3 and r.min() >= 0 and r.max() <= 255)
            raw = r if integral else raw
        arrays[f"s{i}"] = raw
    if integral:
        arrays = {k: v.astype(np.uint8) for k, v in arrays.items()}
    dest.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(dest, **arrays)
    return {"file": SIM_CALIB, "samples": len(arrays), "sha256": sha256_file(dest),
            "dtype": "uint8 raw pixels" if integral else "float32", "bytes": dest.stat().st_size}


def link_or_copy(src: Path, dest: Path) -> Path:
    """The ONNX the simulator rebuilds from, kept beside the artifact (a hard link where the disk allows)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dest)
    except OSError:
        shutil.copyfile(src, dest)
    return dest


def convert(ctx: ConvertContext, env: Any) -> ConversionResult:
    from edgeconv.envs.client import run_job

    recipe = recipe_for(ctx)
    ref, out = ctx.reference, ctx.out_dir
    shape = tuple(recipe["input"]["shape"])
    norm = (recipe["config"]["mean_values"][0], recipe["config"]["std_values"][0]) \
        if recipe["input"]["embedded_preprocess"] else None
    work = Path(tempfile.mkdtemp(prefix="edgeconv-rknn-"))
    try:
        source = link_or_copy(Path(ref.onnx_path), out / SIM_ONNX)
        args: dict[str, Any] = {"recipe": recipe, "onnx": str(source), "out": str(out / MODEL),
                                "simulator_runs": int(ctx.option("simulator_runs", 10)), "input_shape": list(shape)}
        calib = None
        if recipe["quantize"]:
            calib = write_calibration(ctx, norm, out / SIM_CALIB)
            args["dataset"] = str(out / SIM_CALIB)
        sample = next(iter(ctx.calibration.feeds()), None) if ctx.calibration is not None else None
        if sample is not None:
            np.savez(work / "sample.npz", x=to_raw(sample[ref.inputs[0].name], norm))
            args["sample"] = str(work / "sample.npz")
        report = run_job(env.transport(), HANDLER, "convert", args, work=work / "job",
                         timeout=float(ctx.option("timeout_s", 1800.0)), what="rknn-toolkit2 conversion",
                         target=ctx.profile.name)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    cpu = report.get("cpu_layers") or []
    if cpu:
        log.warning("rknn %s: %d op(s) run on the CPU, not the NPU: %s", recipe["config"]["target_platform"],
                    len(cpu), ", ".join(sorted({r["op"] for r in cpu})))
    sim = report.get("simulator_ms") or {}
    meta: dict[str, Any] = {
        "format": "rknn", "platform": recipe["config"]["target_platform"], "toolkit": report.get("toolkit"),
        "environment": {"name": env.spec.name, "path": str(env.path), "versions": env.versions},
        "recipe_file": RECIPE, "embedded_preprocess": recipe["input"]["embedded_preprocess"],
        "mean_values": recipe["config"]["mean_values"], "std_values": recipe["config"]["std_values"],
        "npu_layers": report.get("npu_layers"), "layers": report.get("layers"),
        "cpu_layers": [f"{r['op']}:{r['name']}" for r in cpu], "layer_table_found": report.get("layer_table_found"),
        "build_seconds": report.get("build_seconds"), "simulator_latency_ms": sim or None,
        "latency_note": LATENCY_NOTE.format(p50=sim["p50"]) if sim.get("runs") else
        "RKNN simulator only: latency is not a device number",
        "toolkit_warnings": report.get("warnings"),
    }
    meta["simulator_source"] = {"file": SIM_ONNX, "sha256": ref.sha256}
    if calib:
        meta["simulator_calibration"] = calib
        meta["quantization"] = {"algorithm": recipe["config"]["quantized_algorithm"],
                                "method": recipe["config"]["quantized_method"],
                                "dtype": recipe["config"]["quantized_dtype"], "samples": calib["samples"],
                                "source": "the toolkit's own quantizer on edgeconv's calibration sample"}
    (out / RECIPE).write_text(json.dumps({"recipe": recipe, "report": report}, indent=1, default=str))
    note = ("verified on the rknn-toolkit2 simulator (the model rebuilt from its recipe in the 'rknn' environment; "
            "the toolkit cannot simulate a .rknn file), not on an NPU")
    return ConversionResult([MODEL, RECIPE], {"model": MODEL, "recipe": RECIPE}, meta, input_layout="NCHW",
                            runnable_here=True, verify_note=note)
