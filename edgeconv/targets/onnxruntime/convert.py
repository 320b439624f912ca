"""ONNX Runtime conversion: fp32 is the reference graph itself; int8 is a QDQ model (see calibration.ort)."""

from __future__ import annotations

import shutil

from edgeconv.core.errors import ConfigError
from edgeconv.targets.base import ConversionResult, ConvertContext


def convert(ctx: ConvertContext) -> ConversionResult:
    if ctx.precision == "fp32":
        shutil.copyfile(ctx.reference.onnx_path, ctx.out_dir / "model.onnx")
        return ConversionResult(["model.onnx"], {"model": "model.onnx"}, {"format": "onnx"})
    if ctx.precision == "int8":
        if ctx.calibration is None:
            raise ConfigError("int8 needs calibration data", hint="pass --calib DIR (or use the bundled sample)")
        from edgeconv.calibration.ort_int8 import quantize_qdq

        meta = quantize_qdq(ctx.reference, ctx.calibration, ctx.out_dir / "model.onnx", keep_fp32=ctx.keep_fp32,
                            options=ctx.options)
        return ConversionResult(["model.onnx"], {"model": "model.onnx"}, {"format": "onnx-qdq", **meta})
    raise ConfigError(f"onnxruntime has no '{ctx.precision}' route", hint="use fp32 or int8")
