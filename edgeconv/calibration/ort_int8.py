"""ONNX Runtime INT8: a QDQ model from ``quantize_static`` (after ``quant_pre_process``), per-channel weights.

This is the reference INT8 path other backends are compared with.  Activation ranges come from the shared
statistics (``stats.compute_stats``) through ORT's own ``calibration_cache_path`` JSON, so ORT does not recalibrate
and every backend quantizes with the same ranges.

Defaults (measured on the bundled models, see ``benchmarks/ort_int8_accuracy.py``): U8 asymmetric activations,
S8 symmetric per-channel weights with ``reduce_range`` (7-bit weights).  On x86 CPUs without VNNI, ORT's U8S8 kernels
use ``vpmaddubsw``, whose 16-bit intermediate sums saturate with full-range weights; ORT documents ``reduce_range``
for such CPUs.  ``quant_pre_process`` runs shape inference only (the reference is already simplified): optimising
again could rename tensors and orphan their ranges.
"""

from __future__ import annotations

import fnmatch
import shutil
import tempfile
from pathlib import Path
from typing import Any

from edgeconv.calibration.dataset import CalibrationSet
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


def match_nodes(onnx_path: Path, patterns: tuple[str, ...]) -> list[str]:
    """Node names matching ``--keep-fp32`` entries (exact names, fnmatch globs, or op types like ``op:Sigmoid``)."""
    if not patterns:
        return []
    onnx = require("onnx", "onnx")
    model = onnx.load(str(onnx_path), load_external_data=False)
    out = []
    for node in model.graph.node:
        for p in patterns:
            if (p.startswith("op:") and node.op_type == p[3:]) or node.name == p or fnmatch.fnmatchcase(node.name, p) \
                    or any(fnmatch.fnmatchcase(o, p) for o in node.output):
                out.append(node.name)
                break
    return out


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


def quantize_qdq(reference: Any, calib: CalibrationSet, out_path: Path, *, keep_fp32: tuple[str, ...] = (),
                 options: dict[str, Any] | None = None) -> dict[str, Any]:
    """Quantize ``reference`` (a ReferenceModel: ``onnx_path``, ``sha256``) to a QDQ ONNX at ``out_path``.

    Options (profile ``[options]`` / ``--option``): ``calib_method`` (minmax|entropy|percentile), ``percentile``,
    ``num_bins``, ``num_quantized_bins``, ``activation_type`` (uint8|int8), ``weight_type``, ``reduce_range``,
    ``per_channel``, ``symmetric_activations``, ``keep_outputs_fp32``, ``op_types``,
    ``use_cache``.  Returns the manifest record.
    """
    opts = {**DEFAULTS, **(options or {})}
    require("onnxruntime", "onnxruntime")
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from edgeconv.calibration.stats import compute_stats

    method = str(opts["calib_method"])
    params = {k: opts[k] for k in ("percentile", "num_bins", "num_quantized_bins") if k in opts}
    stats = compute_stats(Path(reference.onnx_path), reference.sha256, calib, method, params,
                          use_cache=bool(opts.get("use_cache", True)))
    excluded = match_nodes(Path(reference.onnx_path), tuple(keep_fp32))
    if opts["keep_outputs_fp32"]:
        excluded += [n for n in output_nodes(Path(reference.onnx_path)) if n not in excluded]
    if keep_fp32 and not excluded:
        log.warning("--keep-fp32 %s matched no node of the graph", ", ".join(keep_fp32))
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
    return {"quantizer": "onnxruntime.quantize_static", "quant_format": "QDQ", "calib_method": method,
            "calib_params": stats.params, "stats_key": stats.key, "stats_cache": stats.cache,
            "activation_type": act, "weight_type": wt, "per_channel": bool(opts["per_channel"]),
            "reduce_range": bool(opts["reduce_range"]),
            "symmetric_activations": bool(opts["symmetric_activations"]), "kept_fp32": excluded,
            "op_types": list(opts["op_types"]) if opts["op_types"] else "all",
            "calibration": calib.manifest()}
