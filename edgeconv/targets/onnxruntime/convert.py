"""ONNX Runtime conversion: fp32 is the reference graph itself; fp16 casts weights and arithmetic to half with
float32 inputs/outputs kept (so applications feed the same tensors); int8 is a QDQ model (``int8.py``)."""

from __future__ import annotations

import shutil
from typing import Any

from edgeconv.core.errors import ConfigError, ConversionError
from edgeconv.core.lazy import require
from edgeconv.targets.base import ConversionResult, ConvertContext


def constants_to_initializers(model: Any) -> Any:
    """``model`` with each tensor-valued ``Constant`` node made an initializer of the same name (and that name's
    ``value_info`` dropped: an initializer carries its own type).

    The fp16 cast keeps an initializer that must stay float (a Resize's scales) in float32, but a Constant node's
    output is typed by its value_info, which the cast turns to float16, and then it casts it back with a Cast node
    that runs on every call: the YOLO11n reference had one more Cast than the same model's Ultralytics fp16 export
    (whose exporter wrote initializers), in ORT's optimised graph too. Nodes inside subgraphs are left alone."""
    from onnx import TensorProto

    g = model.graph
    nodes, moved = [], set()
    for n in g.node:
        if n.op_type == "Constant" and len(n.attribute) == 1 and n.attribute[0].name == "value" and n.output:
            t = TensorProto()
            t.CopyFrom(n.attribute[0].t)
            t.name = n.output[0]
            g.initializer.append(t)
            moved.add(t.name)
        else:
            nodes.append(n)
    if moved:
        del g.node[:]
        g.node.extend(nodes)
        infos = [v for v in g.value_info if v.name not in moved]
        del g.value_info[:]
        g.value_info.extend(infos)
    return model


def convert(ctx: ConvertContext) -> ConversionResult:
    out = ctx.out_dir / "model.onnx"
    if ctx.precision == "fp32":
        shutil.copyfile(ctx.reference.onnx_path, out)
        return ConversionResult(["model.onnx"], {"model": "model.onnx"}, {"format": "onnx"})
    if ctx.precision == "fp16":
        onnx = require("onnx", "onnxruntime")
        from onnxruntime.transformers.float16 import convert_float_to_float16

        keep = list(ctx.keep_fp32_nodes)
        try:
            model = convert_float_to_float16(constants_to_initializers(onnx.load(str(ctx.reference.onnx_path))),
                                             keep_io_types=True, node_block_list=keep or None)
        except Exception as e:
            raise ConversionError(f"onnxruntime fp16 cast failed: {type(e).__name__}: {e}") from e
        onnx.save(model, str(out))
        return ConversionResult(["model.onnx"], {"model": "model.onnx"},
                                {"format": "onnx-fp16", "io_types": "float32", "kept_fp32": keep})
    if ctx.precision == "int8":
        if ctx.calibration is None:
            raise ConfigError("int8 needs calibration data", hint="pass --calib DIR (or use the bundled sample)")
        from edgeconv.targets.onnxruntime.int8 import quantize_qdq

        meta = quantize_qdq(ctx, out)
        return ConversionResult(["model.onnx"], {"model": "model.onnx"}, {"format": "onnx-qdq", **meta})
    raise ConfigError(f"onnxruntime has no '{ctx.precision}' route", hint="use fp32, fp16 or int8")
