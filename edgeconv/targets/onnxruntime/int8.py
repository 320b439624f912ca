"""ONNX Runtime INT8: a QDQ model from ``quantize_static`` (after ``quant_pre_process``), per-channel weights.

This is the reference INT8 path other backends are compared with.  Activation ranges come from the shared
statistics (``ctx.statistics()``) through ORT's own ``calibration_cache_path`` JSON, so ORT does not recalibrate
and every backend quantizes with the same ranges. Layers kept in float are the reference nodes the one
``--keep-fp32`` matcher resolved (``ctx.keep_fp32_nodes``).

Defaults (measured on the bundled models, see ``benchmarks/ort_int8_accuracy.py``): U8 asymmetric activations,
S8 symmetric per-channel weights with ``reduce_range`` (7-bit weights).  On x86 CPUs without VNNI, ORT's U8S8 kernels
use ``vpmaddubsw``, whose 16-bit intermediate sums saturate with full-range weights; ORT documents ``reduce_range``
for such CPUs.  ``quant_pre_process`` runs shape inference only (the reference is already simplified): optimising
again could rename tensors and orphan their ranges.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

from edgeconv.core.console import log, status
from edgeconv.core.errors import ConfigError, ConversionError
from edgeconv.core.lazy import require

DEFAULTS: dict[str, Any] = {
    "calib_method": "minmax",
    "activation_type": "uint8",
    "weight_type": "int8",
    "reduce_range": True,
    "per_channel": True,
    "symmetric_activations": False,
    # Keep the nodes producing graph outputs (a detector's head convs) in float: measured on the bundled YOLO
    # (benchmarks/results/ort_int8_accuracy.json) this takes the mAP50-95 loss from 1.61 to 0.19 points, at a
    # tiny speed cost (3 of 60 convs).
    "keep_outputs_fp32": True,
    "op_types": None,  # None: every op ORT can quantize; e.g. ["Conv", "MatMul", "Gemm"] for compute ops only
}


def output_nodes(onnx_path: Path) -> list[str]:
    """Nodes whose outputs are graph outputs (a detector's head convs): the usual candidates to keep in float."""
    onnx = require("onnx", "onnx")
    model = onnx.load(str(onnx_path), load_external_data=False)
    outs = {o.name for o in model.graph.output}
    return [n.name for n in model.graph.node if any(o in outs for o in n.output)]


def _qtype(name: str) -> Any:
    from onnxruntime.quantization import QuantType

    table = {"uint8": QuantType.QUInt8, "int8": QuantType.QInt8}
    if name not in table:
        raise ConfigError(f"unsupported INT8 type '{name}'", hint="use uint8 or int8")
    return table[name]


def quantize_qdq(ctx: Any, out_path: Path) -> dict[str, Any]:
    """Quantize the context's reference to a QDQ ONNX at ``out_path``; returns the manifest record.

    Options (profile ``[options]`` / ``--option``, declared in the target's schema): ``calib_method``
    (minmax|entropy|percentile), ``percentile``, ``num_bins``, ``num_quantized_bins``, ``activation_type``
    (uint8|int8), ``weight_type``, ``reduce_range``, ``per_channel``, ``symmetric_activations``,
    ``keep_outputs_fp32``, ``op_types``.
    """
    reference, calib = ctx.reference, ctx.calibration
    opts = {k: ctx.option(k, v) for k, v in DEFAULTS.items()}
    extra = ("percentile", "num_bins", "num_quantized_bins")
    opts.update({k: ctx.option(k) for k in extra if ctx.option(k) is not None})
    require("onnxruntime", "onnxruntime")
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    method = str(opts["calib_method"])
    params = {k: opts[k] for k in ("percentile", "num_bins", "num_quantized_bins") if k in opts}
    stats = ctx.statistics(method, params)
    excluded = list(ctx.keep_fp32_nodes)
    if opts["keep_outputs_fp32"]:
        excluded += [n for n in output_nodes(Path(reference.onnx_path)) if n not in excluded]
    act, wt = str(opts["activation_type"]), str(opts["weight_type"])
    cm = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
          "percentile": CalibrationMethod.Percentile}[method]
    work = Path(tempfile.mkdtemp(prefix="edgeconv-ort-int8-"))
    try:
        pre = work / "pre.onnx"
        try:
            quant_pre_process(str(reference.onnx_path), str(pre), skip_optimization=True)
        except Exception as e:  # noqa: BLE001 - shape inference is an aid; the plain graph still quantizes
            log.debug("quant_pre_process failed (%s); quantizing the reference as is", e)
            shutil.copyfile(reference.onnx_path, pre)
        cache_json = work / "calibration.json"
        shutil.copyfile(stats.ort_cache_path, cache_json)  # type: ignore[arg-type]
        with status(f"quantizing with ONNX Runtime ({method} ranges, QDQ)"):
            try:
                quantize_static(str(pre), str(out_path), None, quant_format=QuantFormat.QDQ,
                                per_channel=bool(opts["per_channel"]), reduce_range=bool(opts["reduce_range"]),
                                activation_type=_qtype(act), weight_type=_qtype(wt), nodes_to_exclude=excluded,
                                calibrate_method=cm, calibration_cache_path=str(cache_json),
                                op_types_to_quantize=list(opts["op_types"]) if opts["op_types"] else None,
                                extra_options={"ActivationSymmetric": bool(opts["symmetric_activations"]),
                                               "WeightSymmetric": True})
            except Exception as e:
                raise ConversionError(f"onnxruntime quantize_static failed: {type(e).__name__}: {e}") from e
    finally:
        shutil.rmtree(work, ignore_errors=True)
    from edgeconv.core.env import isa_features

    vnni = bool(isa_features().get("VNNI"))
    return {"quantizer": "onnxruntime.quantize_static", "quant_format": "QDQ", "calib_method": method,
            # ORT's MLAS U8S8 GEMM/conv kernels dispatch to AVX512-VNNI / AVX-VNNI (vpdpbusd) when the CPU has them
            "vnni": vnni, "int8_kernels": "MLAS U8S8 " + ("VNNI" if vnni else "AVX2/AVX-512 (no VNNI: vpmaddubsw)"),
            "calib_params": stats.params, "stats_key": stats.key, "stats_cache": stats.cache,
            "activation_type": act, "weight_type": wt, "per_channel": bool(opts["per_channel"]),
            "reduce_range": bool(opts["reduce_range"]),
            "symmetric_activations": bool(opts["symmetric_activations"]), "kept_fp32": excluded,
            "op_types": list(opts["op_types"]) if opts["op_types"] else "all",
            "calibration": calib.manifest()}
