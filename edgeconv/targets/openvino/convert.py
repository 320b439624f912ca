"""OpenVINO conversion with OpenVINO's own converter (``openvino.convert_model`` + ``save_model``).

Routes: ``onnx`` (default) converts the simplified reference ONNX, the graph every backend shares; ``torch``
(``--route torch``) converts the PyTorch module directly through OpenVINO's PyTorch frontend, which can keep ops the
ONNX exporter decomposes.  Both end with the reference's input/output tensor names so runners and verification
address outputs identically.

Precisions: fp32 keeps fp32 weights (``compress_to_fp16=False``; note ``ovc``'s default is fp16 weights); fp16
stores fp16 weights (``compress_to_fp16=True``: half the size; the CPU plugin computes in f32 unless the hardware has
native fp16/bf16); int8 is NNCF post-training quantization (``int8.py``).
"""

from __future__ import annotations

from typing import Any

from edgeconv.core.console import log
from edgeconv.core.errors import ConfigError, ConversionError
from edgeconv.core.lazy import require
from edgeconv.targets.base import ConversionResult, ConvertContext

XML, BIN = "model.xml", "model.bin"
ROUTES = ("onnx", "torch")


def _from_onnx(ctx: ConvertContext) -> Any:
    ov = require("openvino", "openvino", target="openvino")
    return ov.convert_model(str(ctx.reference.onnx_path))


def _from_torch(ctx: ConvertContext) -> Any:
    ov = require("openvino", "openvino", target="openvino")
    torch = require("torch", "torch")
    module = ctx.reference.module
    if module is None:
        raise ConfigError("--route torch needs the PyTorch model, but only ONNX was given",
                          hint="pass --model FILE.py:FACTORY --weights ..., or use the default onnx route")
    module.eval()
    example = tuple(torch.from_numpy(f) for f in ctx.reference.random_feeds(1)[0].values())
    with torch.no_grad():
        model = ov.convert_model(module, example_input=example if len(example) > 1 else example[0])
    if len(model.inputs) != len(ctx.reference.inputs) or len(model.outputs) != len(ctx.reference.outputs):
        raise ConversionError(f"the torch route gave {len(model.inputs)} inputs/{len(model.outputs)} outputs, the "
                              f"reference has {len(ctx.reference.inputs)}/{len(ctx.reference.outputs)}",
                              hint="use the default onnx route")
    # The PyTorch frontend names inputs after forward()'s arguments and leaves outputs unnamed: give them the
    # reference's names (same order: both flatten the forward's outputs) and its static shapes.
    for port, spec in zip(model.inputs, ctx.reference.inputs, strict=True):
        port.get_tensor().set_names({spec.name})
    for port, spec in zip(model.outputs, ctx.reference.outputs, strict=True):
        port.get_tensor().set_names({spec.name})
    if not ctx.reference.dynamic_profiles:
        model.reshape({spec.name: list(spec.static_shape) for spec in ctx.reference.inputs})
    return model


def convert(ctx: ConvertContext) -> ConversionResult:
    ov = require("openvino", "openvino", target="openvino")
    route = str(ctx.option("route", "onnx")).lower()
    if route not in ROUTES:
        raise ConfigError(f"openvino has no route '{route}'", hint=f"routes: {', '.join(ROUTES)}")
    model = _from_onnx(ctx) if route == "onnx" else _from_torch(ctx)
    meta: dict[str, Any] = {"format": "openvino-ir", "route": route, "converter": "openvino.convert_model",
                            "openvino": ov.get_version(), "compress_to_fp16": ctx.precision == "fp16",
                            "source": "reference.onnx" if route == "onnx" else "torch.nn.Module"}
    if ctx.precision == "int8":
        from edgeconv.targets.openvino.int8 import quantize

        model, meta["int8"] = quantize(ctx, model)
    elif ctx.keep_fp32:
        log.warning("--keep-fp32 only applies to int8; ignored for %s", ctx.precision)
    if ctx.option("embed_preprocess"):
        from edgeconv.targets.openvino.preprocess import embed

        pre = ctx.preprocess or (ctx.calibration.preprocess if ctx.calibration else None)
        if pre is None:
            raise ConfigError("--embed-preprocess needs a preprocessing contract",
                              hint="pass --preprocess (e.g. size=320x320,color=BGR,scale=1/255)")
        if len(ctx.reference.inputs) != 1:
            raise ConfigError("--embed-preprocess supports single-input image models only")
        model, meta["embedded_preprocess"] = embed(model, pre, ctx.reference.inputs[0].name,
                                                   raw_color=ctx.option("embed_color"))
    ov.save_model(model, str(ctx.out_dir / XML), compress_to_fp16=ctx.precision == "fp16")
    return ConversionResult([XML, BIN], {"model": XML, "weights": BIN}, meta,
                            input_layout="NHWC" if ctx.option("embed_preprocess") else "NCHW",
                            verify_note="embedded preprocessing: the runner maps float NCHW feeds back to raw images"
                            if ctx.option("embed_preprocess") else None)
