"""ONNX Runtime conversion: fp32 is the reference graph itself; fp16 stores the weights in half, with half arithmetic
where the device has fast half kernels and float32 arithmetic where it has none (``fp16_compute``), float32
inputs/outputs kept either way (so applications feed the same tensors); int8 is a QDQ model (``int8.py``)."""

from __future__ import annotations

import platform
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


#: Execution providers with half-precision kernels: with any of them listed, ``fp16_compute=auto`` means half.
HALF_PROVIDERS = ("CUDAExecutionProvider", "TensorrtExecutionProvider", "ROCMExecutionProvider",
                  "MIGraphXExecutionProvider", "DmlExecutionProvider", "CoreMLExecutionProvider",
                  "QNNExecutionProvider", "WebGpuExecutionProvider")
#: Smallest initializer stored in half by the float-compute route: below it (scales, shapes, biases of 1-element
#: ops) half storage saves nothing and only adds a Cast.
MIN_HALF_ELEMENTS = 16


def resolve_fp16_compute(value: str, providers: list[str] | None, device: str | None,
                         machine: str | None = None) -> tuple[str, str]:
    """``(half|float, why)`` for ``fp16_compute``.

    ONNX Runtime's CPU provider on x86 has no half Conv/MatMul kernels: a half graph runs as float kernels with a
    Cast before and after each op, slower than the float32 graph (YOLO11n 320: 30.6 vs 24.6 ms on an AVX2 EPYC,
    17.2 vs 12.5 ms with AVX-512; Ultralytics' half ONNX is that graph). Its ARM64 build has half kernels, and GPU
    providers are where half pays. So ``auto`` is half for a GPU/NPU provider, an ARM host or a device's own
    kernels (an emulated or real board), and float32 arithmetic over half-stored weights on an x86 CPU."""
    if value in ("half", "float"):
        return value, "requested"
    gpu = [p for p in providers or [] if p in HALF_PROVIDERS]
    if gpu:
        return "half", f"provider {gpu[0]} has half kernels"
    if device:
        return "half", f"verified on device {device}, whose ONNX Runtime build decides its kernels"
    arch = (machine or platform.machine()).lower()
    if arch in ("aarch64", "arm64"):
        return "half", "ARM64 CPU provider has half kernels"
    return "float", f"the CPU provider on {arch} has no half Conv/MatMul kernels (a half graph runs slower)"


def half_weights(model: Any, keep_nodes: tuple[str, ...] | list[str] = ()) -> tuple[Any, int]:
    """``model`` with each float32 initializer of at least MIN_HALF_ELEMENTS values stored in float16 and cast back
    by a ``Cast`` node, which ONNX Runtime's constant folding evaluates once at load: half the file, float32
    arithmetic. Initializers read by a kept node, or listed as graph inputs (overridable), stay float32; values
    beyond float16's range are clamped to it, as the half converter does. Returns the model and the count."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    g = model.graph
    kept = {i for n in g.node if n.name in set(keep_nodes) for i in n.input}
    inputs = {i.name for i in g.input}
    fmax = float(np.finfo(np.float16).max)
    casts, inits = [], []
    for init in g.initializer:
        n_el = int(np.prod(init.dims)) if init.dims else 1
        if (init.data_type != TensorProto.FLOAT or n_el < MIN_HALF_ELEMENTS or init.name in kept
                or init.name in inputs or init.data_location == TensorProto.EXTERNAL):
            inits.append(init)
            continue
        a = np.clip(numpy_helper.to_array(init), -fmax, fmax).astype(np.float16)
        half = numpy_helper.from_array(a, init.name + "__fp16")
        inits.append(half)
        casts.append(helper.make_node("Cast", [half.name], [init.name], to=TensorProto.FLOAT,
                                      name=init.name + "__fp16_cast"))
    del g.initializer[:]
    g.initializer.extend(inits)
    nodes = casts + list(g.node)
    del g.node[:]
    g.node.extend(nodes)
    return model, len(casts)


def convert(ctx: ConvertContext) -> ConversionResult:
    out = ctx.out_dir / "model.onnx"
    if ctx.precision == "fp32":
        shutil.copyfile(ctx.reference.onnx_path, out)
        return ConversionResult(["model.onnx"], {"model": "model.onnx"}, {"format": "onnx"})
    if ctx.precision == "fp16":
        onnx = require("onnx", "onnxruntime")
        from onnxruntime.transformers.float16 import convert_float_to_float16

        keep = list(ctx.keep_fp32_nodes)
        compute, why = resolve_fp16_compute(str(ctx.option("fp16_compute", "auto")), ctx.option("providers"),
                                            ctx.device)
        extra: dict[str, Any] = {}
        try:
            if compute == "half":
                model = convert_float_to_float16(constants_to_initializers(onnx.load(str(ctx.reference.onnx_path))),
                                                 keep_io_types=True, node_block_list=keep or None)
            else:
                model, extra["half_initializers"] = half_weights(onnx.load(str(ctx.reference.onnx_path)), keep)
        except Exception as e:
            raise ConversionError(f"onnxruntime fp16 cast failed: {type(e).__name__}: {e}") from e
        onnx.save(model, str(out))
        return ConversionResult(["model.onnx"], {"model": "model.onnx"},
                                {"format": "onnx-fp16", "io_types": "float32", "kept_fp32": keep,
                                 "weights": "float16", "arithmetic": "float16" if compute == "half" else "float32",
                                 "fp16_compute": compute, "fp16_compute_why": why, **extra})
    if ctx.precision == "int8":
        if ctx.calibration is None:
            raise ConfigError("int8 needs calibration data", hint="pass --calib DIR (or use the bundled sample)")
        from edgeconv.targets.onnxruntime.int8 import quantize_qdq

        meta = quantize_qdq(ctx, out)
        return ConversionResult(["model.onnx"], {"model": "model.onnx"}, {"format": "onnx-qdq", **meta})
    raise ConfigError(f"onnxruntime has no '{ctx.precision}' route", hint="use fp32, fp16 or int8")
