"""Explicit INT8 for TensorRT: a Q/DQ ONNX placed the way TensorRT's explicit-quantization mode expects.

TensorRT (10 with Q/DQ, and 11 where this is the only INT8 route) wants: symmetric INT8 (zero points 0, range
[-127, 127] for calibrated tensors), per-tensor activation scales, per-output-channel weight scales, Q/DQ on the
*inputs* of weighted layers (Conv, ConvTranspose, Gemm, MatMul) and not on their outputs (TensorRT fuses the
following activation and re-quantizes where the next Q says), float biases (TensorRT's DequantizeLinear takes
INT8/FP8/INT4, not INT32), and explicit Relu/Clip nodes (ONNX Runtime would otherwise fold them into asymmetric
ranges, which do not exist in TensorRT).  Residual ``Add`` nodes (two activation inputs) get Q/DQ on their inputs
too, so TensorRT can fuse conv + residual in INT8 (option ``qdq_residual_add``, default on).

Two producers, library first:
- NVIDIA ModelOpt's ONNX PTQ (``modelopt.onnx.quantization.quantize``) when importable - it runs on CPU, but its
  ``[onnx]`` extra pins another onnx and replaces onnxruntime with onnxruntime-gpu, so it is not in edgeconv's
  environment by default (``quantizer = "modelopt"`` to require it).
- ONNX Runtime's ``quantize_static`` (QDQ) with the settings above.  Its activation ranges are NOT re-collected: the
  shared statistics (``edgeconv.calibration.stats.activation_ranges``) are handed to it through ORT's calibration
  cache, so the Q/DQ model and TensorRT's implicit calibration cache use the very same ranges.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from edgeconv.calibration.dataset import CalibrationSet
from edgeconv.core.console import log, status
from edgeconv.core.errors import ConfigError, ConversionError
from edgeconv.core.lazy import available, require

WEIGHTED_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
QUANTIZERS = ("auto", "ort", "modelopt")


def _producers(model: Any) -> dict[str, Any]:
    return {o: n for n in model.graph.node for o in n.output}


def residual_adds(model: Any) -> list[str]:
    """Names of Add nodes whose two inputs are both computed activations (skip connections), not constants."""
    consts = {i.name for i in model.graph.initializer}
    consts |= {o for n in model.graph.node if n.op_type == "Constant" for o in n.output}
    prod = _producers(model)

    def from_weighted(t: str, depth: int = 0) -> bool:
        n = prod.get(t)
        if n is None or depth > 4:
            return False
        return n.op_type in WEIGHTED_OPS or any(from_weighted(i, depth + 1) for i in n.input if i and i not in consts)

    out = []
    for n in model.graph.node:
        if n.op_type == "Add" and len(n.input) == 2 and all(i and i not in consts for i in n.input) \
                and all(from_weighted(i) for i in n.input):
            out.append(n.name)
    return out


def nodes_to_quantize(onnx_path: Path, excluded: list[str], residual_add: bool = True) -> list[str]:
    """The nodes whose inputs get Q/DQ: weighted layers, plus residual Adds; minus ``--keep-fp32`` ones."""
    onnx = require("onnx", "onnx")
    model = onnx.load(str(onnx_path))
    unnamed = [n for n in model.graph.node if not n.name]
    if unnamed:
        raise ConversionError(f"{len(unnamed)} node(s) of the reference ONNX have no name; Q/DQ placement needs names")
    names = [n.name for n in model.graph.node if n.op_type in WEIGHTED_OPS]
    if residual_add:
        names += residual_adds(model)
    skip = set(excluded)
    return [n for n in names if n not in skip]


def quantized_tensors(qdq_path: Path) -> dict[str, float]:
    """{activation tensor: scale} for every activation a Q/DQ model quantizes (QuantizeLinear on a non-constant)."""
    onnx = require("onnx", "onnx")
    from onnx import numpy_helper

    model = onnx.load(str(qdq_path))
    inits = {i.name: i for i in model.graph.initializer}
    consts = {o for n in model.graph.node if n.op_type == "Constant" for o in n.output}
    out: dict[str, float] = {}
    for n in model.graph.node:
        if n.op_type != "QuantizeLinear" or n.input[0] in inits or n.input[0] in consts:
            continue
        scale = numpy_helper.to_array(inits[n.input[1]]) if n.input[1] in inits else None
        out[n.input[0]] = float(np.asarray(scale).reshape(-1)[0]) if scale is not None else float("nan")
    return out


def _ort_quantize(onnx_path: Path, ranges: dict[str, tuple[float, float]], out_path: Path, nodes: list[str],
                  excluded: list[str]) -> dict[str, Any]:
    require("onnxruntime", "onnxruntime")
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.calibrate import TensorData, TensorsData, save_tensors_data

    extra = {
        "ActivationSymmetric": True, "WeightSymmetric": True,  # zero points 0: TensorRT has no asymmetric INT8
        "QDQKeepRemovableActivations": True,  # keep Relu/Clip: their folding assumes asymmetric ranges
        "QuantizeBias": False,  # TensorRT's DequantizeLinear does not take INT32 biases
        "OpTypesToExcludeOutputQuantization": [*WEIGHTED_OPS, "Add"],  # Q/DQ on inputs only, as TensorRT expects
        "DedicatedQDQPair": False, "ForceQuantizeNoInputCheck": False,
    }
    data = TensorsData(CalibrationMethod.MinMax, {
        k: TensorData(lowest=np.float32(lo), highest=np.float32(hi)) for k, (lo, hi) in ranges.items()})
    work = Path(tempfile.mkdtemp(prefix="edgeconv-trt-qdq-"))
    try:
        cache = work / "ranges.json"
        save_tensors_data(data, cache)
        quantize_static(str(onnx_path), str(out_path), None, quant_format=QuantFormat.QDQ, per_channel=True,
                        reduce_range=False, activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                        nodes_to_quantize=nodes, nodes_to_exclude=excluded,
                        op_types_to_quantize=[*WEIGHTED_OPS, "Add"], calibrate_method=CalibrationMethod.MinMax,
                        extra_options=extra, calibration_cache_path=str(cache))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return {"quantizer": "onnxruntime.quantize_static (QDQ, TensorRT settings)",
            "extra_options": {k: v for k, v in extra.items()}}


def _modelopt_quantize(onnx_path: Path, calib: CalibrationSet, out_path: Path, nodes: list[str],
                       excluded: list[str]) -> dict[str, Any]:
    from modelopt.onnx.quantization import quantize  # type: ignore[import-not-found]

    feeds = [f[calib.input_name] for f in calib.feeds()]
    quantize(onnx_path=str(onnx_path), quantize_mode="int8", calibration_data={calib.input_name: np.concatenate(feeds)},
             calibration_method="max", calibration_eps=["cpu"], nodes_to_exclude=excluded or None,
             output_path=str(out_path), high_precision_dtype="fp32", log_level="WARNING")
    return {"quantizer": "modelopt.onnx.quantization (int8, max)", "modelopt_nodes_hint": len(nodes)}


def explicit_qdq(reference: Any, calib: CalibrationSet, out_path: Path, ranges: dict[str, tuple[float, float]], *,
                 excluded: list[str], quantizer: str = "auto", residual_add: bool = True) -> dict[str, Any]:
    """Write the Q/DQ ONNX to ``out_path``; returns metadata (producer, settings, quantized tensors)."""
    if quantizer not in QUANTIZERS:
        raise ConfigError(f"unknown quantizer '{quantizer}'", hint=f"options: quantizer = one of {QUANTIZERS}")
    use_mo = quantizer == "modelopt" or (quantizer == "auto" and available("modelopt.onnx"))
    nodes = nodes_to_quantize(reference.onnx_path, excluded, residual_add)
    if not nodes:
        raise ConversionError("nothing to quantize: the model has no Conv/Gemm/MatMul outside --keep-fp32")
    with status(f"writing the TensorRT Q/DQ ONNX ({'ModelOpt' if use_mo else 'ONNX Runtime'})"):
        try:
            if use_mo:
                try:
                    meta = _modelopt_quantize(reference.onnx_path, calib, out_path, nodes, excluded)
                except ImportError as e:
                    if quantizer == "modelopt":
                        raise ConfigError("quantizer = modelopt, but modelopt.onnx cannot be imported",
                                          hint="pip install 'nvidia-modelopt[onnx]' (in its own environment)") from e
                    log.warning("ModelOpt unusable (%s); using ONNX Runtime's QDQ quantizer", e)
                    meta = _ort_quantize(reference.onnx_path, ranges, out_path, nodes, excluded)
            else:
                meta = _ort_quantize(reference.onnx_path, ranges, out_path, nodes, excluded)
        except (ConfigError, ConversionError):
            raise
        except Exception as e:
            raise ConversionError(f"Q/DQ quantization failed: {type(e).__name__}: {e}") from e
    q = quantized_tensors(out_path)
    return {**meta, "nodes_quantized": len(nodes), "activations_quantized": len(q),
            "residual_add": residual_add, "kept_fp32": excluded, "weights": "int8 symmetric, per output channel",
            "activations": "int8 symmetric, per tensor"}


def save_scales(q: dict[str, float], path: Path) -> None:
    """The Q/DQ model's activation scales as JSON (what an engine built from it will use)."""
    path.write_text(json.dumps(q, indent=1, sort_keys=True))
