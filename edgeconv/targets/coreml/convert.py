"""PyTorch → Core ML ``.mlpackage`` (ML program) with coremltools: fp32, fp16, and INT8 weights.

coremltools converts from PyTorch only (its ONNX frontend was removed in coremltools 6), so this target takes the
reference's torch module (traced on the reference input shape; torch.export when the trace does not convert).
INT8 is coremltools.optimize's data-free linear weight quantization (per-channel symmetric int8 weights, fp16
compute: what the Neural Engine runs), so it needs
no calibration sample.  The preprocessing contract is embedded as an image input when Core ML can express it:
an ImageType applies ``y = scale * x + bias`` with one scale for all channels, so the contract's std must be the
same for every channel; otherwise the input stays a float multi-array and the caller applies the contract.
Outputs keep the reference's names and float32 dtype (fp16 happens inside the model).
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import Any

from edgeconv.core.console import log
from edgeconv.core.errors import ConfigError, ConversionError
from edgeconv.core.lazy import require
from edgeconv.targets.base import ConversionResult, ConvertContext

MODEL = "model.mlpackage"
CHECKS = "coreml_checks.json"
TARGETS = ("iOS15", "iOS16", "iOS17", "iOS18")
NOT_HERE = "converted, not executed here (needs macOS/iOS: the Core ML runtime exists only on Apple platforms)"


def image_input(pp: Any, shape: tuple[int, ...]) -> dict[str, Any] | None:
    """``{"color", "scale", "bias"}`` of an ImageType equivalent to the contract, or None if inexpressible."""
    if pp is None or len(shape) != 4 or getattr(pp, "layout", "NCHW") != "NCHW":
        return None
    c = shape[1]
    color = {3: pp.color if pp.color in ("RGB", "BGR") else None, 1: "GRAY" if pp.color == "GRAY" else None}.get(c)
    if color is None:
        return None
    std = list(pp.std) if len(pp.std) == c else [float(pp.std[0])] * c
    mean = list(pp.mean) if len(pp.mean) == c else [float(pp.mean[0])] * c
    if max(std) - min(std) > 1e-9 * max(abs(x) for x in std):
        return None
    s, d = float(pp.scale), float(std[0])
    if pp.order == "scale-first":  # (x*s - m)/d = x*(s/d) - m/d
        bias = [-m / d for m in mean]
    else:  # ((x - m)/d)*s = x*(s/d) - m*s/d
        bias = [-m * s / d for m in mean]
    return {"color": "GRAYSCALE" if color == "GRAY" else color, "scale": s / d, "bias": bias}


def _unsupported_torch_op(message: str) -> str | None:
    m = re.search(r"(?:convert function for op|op) '([\w.:]+)' not implemented", message) or \
        re.search(r"Unsupported (?:op|operation)[^']*'([\w.:]+)'", message) or \
        re.search(r"Unsupported fx node (\w+)", message)  # the torch.export frontend's wording
    return m.group(1) if m else None


def _convert_torch(ct: Any, torch: Any, module: Any, example: Any,
                   kwargs: dict[str, Any]) -> tuple[Any, str, list[dict[str, str]]]:
    """coremltools from ``torch.jit.trace``, then from ``torch.export`` when the traced graph does not convert.

    Why both: a trace records shape arithmetic as ops (``x.view(x.size(0), -1)`` becomes ``aten::size`` →
    ``aten::Int``), and coremltools' ``Int`` cast fails on it ("only 0-dimensional arrays can be converted to Python
    scalars": every CIFAR ResNet of akamaster/pytorch_resnet_cifar10); ``torch.export`` specialises those shapes to
    constants.  The trace stays first because it is the frontend coremltools has tested longest.  Every attempt is
    returned for the manifest; the last error is raised when none converts.
    """
    attempts: list[dict[str, str]] = []
    last: Exception | None = None
    for frontend in ("torch.jit.trace", "torch.export"):
        try:
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                if frontend == "torch.jit.trace":
                    src = torch.jit.trace(module, example, check_trace=False)
                else:
                    src = torch.export.export(module, (example,)).run_decompositions({})
                mlmodel = ct.convert(src, **kwargs)
            attempts.append({"frontend": frontend, "status": "ok"})
            return mlmodel, frontend, attempts
        except Exception as e:  # noqa: BLE001 - recorded; the next frontend is tried, the last error raised
            attempts.append({"frontend": frontend, "status": "failed",
                             "error": f"{type(e).__name__}: {' '.join(str(e).split())[:300]}"})
            if frontend == "torch.jit.trace":
                log.info("coreml: the traced model does not convert (%s); trying torch.export",
                         attempts[-1]["error"][:160])
            last = e
    assert last is not None
    raise last


def convert(ctx: ConvertContext) -> ConversionResult:
    ct = require("coremltools", "coreml", target=ctx.profile.name)
    torch = require("torch", "torch", target=ctx.profile.name)
    from edgeconv.targets.coreml.checks import check_package

    if ctx.precision not in ("fp32", "fp16", "int8"):
        raise ConfigError(f"coreml has no '{ctx.precision}' route", hint="use fp32, fp16 or int8")
    if ctx.keep_fp32:
        raise ConfigError("coreml: --keep-fp32 is not supported (weight quantization is per model)",
                          hint="use fp16, or int8 with a larger model-level tolerance")
    ref = ctx.reference
    if ref.module is None:
        raise ConfigError("coreml converts from the PyTorch model, but only ONNX was given",
                          hint="pass --model FILE.py:FACTORY --weights ... (coremltools has no ONNX frontend)")
    if len(ref.inputs) != 1 or any(s.dynamic for s in ref.inputs):
        raise ConfigError("coreml: one static-shape input is supported", hint="export without --dynamic")
    target = str(ctx.option("deployment_target", "iOS16"))
    if ctx.precision == "int8" and target == "iOS15":
        raise ConfigError("coreml int8 weights need iOS16 or newer", hint="set options.deployment_target = 'iOS16'")
    spec_in = ref.inputs[0]
    shape = tuple(spec_in.static_shape)
    image = image_input(ctx.preprocess, shape) if ctx.option("embed_preprocess", True) else None
    if image is None and ctx.preprocess is not None and ctx.option("embed_preprocess", True):
        log.info("coreml: the preprocessing contract cannot be an image input (per-channel std or layout); "
                 "the model takes preprocessed float tensors")
    if image is not None:
        ct_in = ct.ImageType(name=spec_in.name, shape=shape, scale=image["scale"],
                             bias=image["bias"] if shape[1] == 3 else image["bias"][0],
                             color_layout=getattr(ct.colorlayout, image["color"]))
    else:
        ct_in = ct.TensorType(name=spec_in.name, shape=shape, dtype=float)
    import numpy as np

    outputs = [ct.TensorType(name=o.name, dtype=np.float32) for o in ref.outputs]
    precision = ct.precision.FLOAT32 if ctx.precision == "fp32" else ct.precision.FLOAT16
    module = ref.module
    example = torch.zeros(shape, dtype=torch.float32)
    kwargs = {"inputs": [ct_in], "outputs": outputs, "convert_to": "mlprogram",
              "minimum_deployment_target": getattr(ct.target, target), "compute_precision": precision}
    try:
        mlmodel, frontend, attempts = _convert_torch(ct, torch, module, example, kwargs)
    except Exception as e:
        op = _unsupported_torch_op(str(e))
        if op:
            raise ConversionError(f"coremltools cannot convert op '{op}' (no Core ML conversion for it)",
                                  hint="rewrite that op with supported ones, or register a composite op "
                                       "(coremltools.converters.mil.frontend.torch.register_torch_op)") from e
        from edgeconv.targets.base import explain_volumetric

        raise explain_volumetric(
            ConversionError(f"coremltools conversion failed: {type(e).__name__}: {' '.join(str(e).split())[:300]}",
                            hint="re-run with --verbose for the converter's traceback"),
            ref.onnx_path, "Core ML") from e
    meta: dict[str, Any] = {"format": "mlpackage (mlprogram)", "deployment_target": target,
                            "compute_precision": "fp32" if ctx.precision == "fp32" else "fp16",
                            "frontend": frontend, "frontend_attempts": attempts,
                            "embedded_preprocess": image is not None,
                            "image_input": image}
    if ctx.precision == "int8":
        from coremltools.optimize.coreml import OpLinearQuantizerConfig, OptimizationConfig, linear_quantize_weights

        granularity = str(ctx.option("int8_granularity", "per_channel"))
        threshold = int(ctx.option("weight_threshold", 2048))
        config = OptimizationConfig(global_config=OpLinearQuantizerConfig(
            mode="linear_symmetric", dtype="int8", granularity=granularity, weight_threshold=threshold))
        mlmodel = linear_quantize_weights(mlmodel, config=config)
        meta["quantization"] = {"weights": "int8 linear_symmetric", "granularity": granularity,
                                "weight_threshold": threshold, "activations": "fp16 (not quantized)",
                                "api": "coremltools.optimize.coreml.linear_quantize_weights", "data": "none needed"}
    mlmodel.short_description = f"edgeconv {ctx.precision} conversion of {ref.source.manifest().get('spec', 'model')}"
    mlmodel.user_defined_metadata["edgeconv.reference_sha256"] = ref.sha256
    if ctx.preprocess is not None:
        mlmodel.user_defined_metadata["edgeconv.preprocess"] = str(ctx.preprocess.to_dict())
    out = ctx.out_dir / MODEL
    mlmodel.save(str(out))
    checks = check_package(str(out), inputs=[s.to_dict() | {"shape": list(shape)} for s in ref.inputs],
                           outputs=[o.to_dict() | {"shape": list(o.static_shape)} for o in ref.outputs],
                           target=target, image=image)
    import json

    (ctx.out_dir / CHECKS).write_text(json.dumps(checks, indent=1))
    if not checks["ok"]:
        raise ConversionError(f"the Core ML model fails its structural checks: {'; '.join(checks['problems'][:3])}",
                              hint=f"see {CHECKS}; another deployment_target may support the ops")
    meta["checks"] = {k: checks[k] for k in ("ok", "opset", "specification_version", "unsupported_ops",
                                             "preprocessing")}
    meta["ops"] = checks["ops"]
    if ctx.precision == "int8":
        n = sum(v for k, v in checks["ops"].items() if k.startswith("constexpr_"))
        meta["quantization"]["quantized_weights"] = n
        if n == 0:
            log.warning("coreml int8: no weight tensor has %d elements or more, so none was quantized "
                        "(options.weight_threshold lowers the bar)", meta["quantization"]["weight_threshold"])
    meta["latency_note"] = NOT_HERE
    files = [*package_files(out, ctx.out_dir), CHECKS]
    return ConversionResult(files, {"model": MODEL, "checks": CHECKS}, meta, input_layout="NCHW",
                            runnable_here=False,
                            verify_note=f"{NOT_HERE}; structural checks passed (I/O names, shapes, dtypes, "
                                        f"{'image scale/bias, ' if image else ''}every op available on {target})")


def package_files(package: Path, root: Path) -> list[str]:
    """An .mlpackage is a folder: the artifact's file table lists each file in it (relative to the artifact)."""
    return sorted(str(p.relative_to(root)) for p in package.rglob("*") if p.is_file())
