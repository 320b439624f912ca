"""ONNX Runtime INT8: a QDQ model from ``quantize_static`` (after ``quant_pre_process``), per-channel weights.

This is the reference INT8 path other backends are compared with. On x86 CPUs without VNNI, ORT's integer kernels
can saturate with full-range activations; ORT documents U8S8 + ``reduce_range`` for them, which is the default here
unless the profile/options say otherwise.
"""

from __future__ import annotations

import fnmatch
import shutil
import tempfile
from pathlib import Path
from typing import Any

from edgeconv.calibration.dataset import CalibrationSet
from edgeconv.core.console import status
from edgeconv.core.errors import ConversionError
from edgeconv.core.lazy import require


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


def quantize_qdq(reference: Any, calib: CalibrationSet, out_path: Path, *, keep_fp32: tuple[str, ...] = (),
                 options: dict[str, Any] | None = None) -> dict[str, Any]:
    options = dict(options or {})
    require("onnxruntime", "onnxruntime")
    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType
    from onnxruntime.quantization import quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    method = options.get("calib_method", "minmax")
    act = options.get("activation_type", "uint8")
    reduce_range = bool(options.get("reduce_range", True))
    symmetric = bool(options.get("symmetric_activations", False))
    excluded = match_nodes(reference.onnx_path, keep_fp32)

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = calib.feeds()

        def get_next(self) -> dict | None:
            return next(self.it, None)

    work = Path(tempfile.mkdtemp(prefix="edgeconv-ort-int8-"))
    try:
        pre = work / "pre.onnx"
        try:
            quant_pre_process(str(reference.onnx_path), str(pre), skip_symbolic_shape=False)
        except Exception:  # noqa: BLE001 - pre-processing is an optimisation; fall back to the plain graph
            shutil.copyfile(reference.onnx_path, pre)
        cm = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
              "percentile": CalibrationMethod.Percentile}[method]
        with status(f"calibrating ({method}) and quantizing with ONNX Runtime"):
            try:
                quantize_static(str(pre), str(out_path), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                                reduce_range=reduce_range,
                                activation_type=QuantType.QUInt8 if act == "uint8" else QuantType.QInt8,
                                weight_type=QuantType.QInt8, nodes_to_exclude=excluded, calibrate_method=cm,
                                extra_options={"ActivationSymmetric": symmetric, "WeightSymmetric": True})
            except Exception as e:
                raise ConversionError(f"onnxruntime quantize_static failed: {type(e).__name__}: {e}") from e
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return {"quantizer": "onnxruntime.quantize_static", "calib_method": method, "activation_type": act,
            "weight_type": "int8", "per_channel": True, "reduce_range": reduce_range, "kept_fp32": excluded,
            "calibration": calib.manifest()}
