"""OpenVINO conversion with OpenVINO's own converter (``openvino.convert_model`` + ``save_model``).

Routes: ``onnx`` (default) converts the simplified reference ONNX, the graph every backend shares; ``torch``
(``--route torch``) converts the PyTorch module directly through OpenVINO's PyTorch frontend, which can keep ops the
ONNX exporter decomposes.  Both end with the reference's input/output tensor names so runners and verification
address outputs identically.

Without ``--route``, a route whose float graph differs from the reference on the sample inputs (or fails to
convert) is followed by the next one, and every attempt is recorded (``conversion.attempts``); ``--route X`` tries X
only.

Precisions: fp32 keeps fp32 weights (``compress_to_fp16=False``; note ``ovc``'s default is fp16 weights); fp16
stores fp16 weights (``compress_to_fp16=True``: half the size; the CPU plugin computes in f32 unless the hardware has
native fp16); bf16 is the fp32 IR compiled with ``INFERENCE_PRECISION_HINT=bf16`` (CPUs with AVX-512-BF16/AMX only);
int8 is NNCF post-training quantization (``int8.py``). Every artifact ships the compile configuration it was
verified with (``deploy.py``), because the CPU plugin's default precision depends on the machine.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgeconv.core.compare import compare_outputs, within
from edgeconv.core.console import log, status
from edgeconv.core.errors import ConfigError, ConversionError, EdgeconvError
from edgeconv.core.lazy import require
from edgeconv.targets.base import ConversionResult, ConvertContext
from edgeconv.targets.openvino import deploy

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
    # No module.eval(): the intake already put the model in inference mode without calling methods a model may
    # shadow (``self.eval = ...``, ``self.modules = [...]``).
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


def float_check(ctx: ConvertContext, core: Any, model: Any) -> dict[str, Any] | None:
    """Run a converted float ov.Model (f32 pinned, on the CPU) on the sample inputs against the reference outputs,
    at the fp32 tolerance: does this route convert correctly? None when no samples were given."""
    feeds, refs = ctx.blocking_samples()
    if not feeds or not refs:
        return None
    compiled = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    names = [o.name for o in ctx.reference.outputs]
    ins = [p.get_any_name() for p in compiled.inputs]
    gots = [deploy.named(compiled, compiled({n: np.array(f[n], order="C", copy=True) for n in ins}), names)
            for f in feeds]
    drift = compare_outputs(refs, gots)
    tol = {k: v for k, v in ctx.profile.tol("fp32").items() if k in ("max_abs", "rel_l2", "cosine", "snr_db")}
    ok, fails = within(drift, tol)
    return {"passed": ok, "failures": fails, "samples": len(feeds),
            "drift": {k: drift.get(k) for k in ("max_abs", "rel_l2", "cosine") if k in drift}}


def convert_routes(ctx: ConvertContext, core: Any) -> tuple[Any, str, list[dict[str, Any]]]:
    """The float ov.Model of the first route that converts and matches the reference, with every attempt."""
    explicit = ctx.option("route")
    if explicit is not None and str(explicit).lower() not in ROUTES:
        raise ConfigError(f"openvino has no route '{explicit}'", hint=f"routes: {', '.join(ROUTES)}")
    routes = [str(explicit).lower()] if explicit else [r for r in ROUTES
                                                      if r == "onnx" or ctx.reference.module is not None]
    attempts: list[dict[str, Any]] = []
    candidates: list[tuple[Any, str, dict[str, Any]]] = []
    for route in routes:
        try:
            with status(f"OpenVINO: converting ({route} route)"):
                model = _from_onnx(ctx) if route == "onnx" else _from_torch(ctx)
        except Exception as e:
            if explicit:
                if isinstance(e, EdgeconvError):
                    raise
                raise ConversionError(f"openvino {route} route failed: {type(e).__name__}: {e}") from e
            attempts.append({"route": route, "ok": False, "error": f"{type(e).__name__}: {e}".splitlines()[0]})
            log.warning("openvino %s route failed (%s); trying the next route", route, attempts[-1]["error"])
            continue
        check = None if explicit else float_check(ctx, core, model)
        attempts.append({"route": route, "ok": check is None or check["passed"], "check": check})
        if check is None or check["passed"]:
            return model, route, attempts
        log.warning("openvino %s route differs from the reference (%s)%s", route, "; ".join(check["failures"]),
                    "; trying the next route" if route != routes[-1] else "")
        candidates.append((model, route, check))
    if not candidates:
        raise ConversionError("openvino: every route failed: " + "; ".join(f"{a['route']}: {a['error']}"
                                                                          for a in attempts),
                              hint="see --verbose; another --opset or exporter (--exporter legacy) may convert")
    model, route, _ = min(candidates, key=lambda c: c[2]["drift"].get("rel_l2", float("inf")))
    return model, route, attempts  # verification will name the failure on this, the closest route


def load_check(ctx: ConvertContext, core: Any, xml: Path, config: dict[str, Any],
               embedded: bool) -> dict[str, Any]:
    """The saved IR as a user's plain ``compile_model(xml, device)`` runs it and as the pinned config does: the
    inference precision of each, what the pinned model executes, and the drift of both on the sample inputs when
    they differ (so the manifest shows what an unpinned load would cost)."""
    device, props = config["device"], config["properties"]
    rec: dict[str, Any] = {"pinned": props.get("INFERENCE_PRECISION_HINT"), "config_file": deploy.CONFIG_FILE,
                           "snippet": deploy.SNIPPET_FILE,
                           "rt_info_runtime_options": "written; not applied by the CPU plugin when it is not the "
                                                      "default (see default_load)"}
    try:
        pinned = core.compile_model(str(xml), device, props)
        plain = core.compile_model(str(xml), device)
    except Exception as e:  # noqa: BLE001 - a device that is not here (GPU/NPU profiles): nothing to measure
        rec["note"] = f"not compiled here ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
        return rec
    rec["runtime"] = deploy.runtime_summary(pinned)
    rec["default_load"] = deploy.hint_name(plain.get_property("INFERENCE_PRECISION_HINT"))
    rec["default_runtime"] = {k: v for k, v in deploy.runtime_summary(plain).items() if k != "kernels"}
    if rec["default_load"] != rec["pinned"] and not embedded:
        feeds, refs = ctx.blocking_samples()
        if feeds:
            names = [o.name for o in ctx.reference.outputs]
            for key, cm in (("pinned_drift", pinned), ("default_load_drift", plain)):
                ins = [p.get_any_name() for p in cm.inputs]
                gots = [deploy.named(cm, cm({n: np.array(f[n], order="C", copy=True) for n in ins}), names)
                        for f in feeds]
                d = compare_outputs(refs, gots)
                rec[key] = {k: d.get(k) for k in ("max_abs", "rel_l2", "cosine") if k in d}
    return rec


def convert(ctx: ConvertContext) -> ConversionResult:
    ov = require("openvino", "openvino", target="openvino")
    core = ov.Core()
    device = ctx.profile.device or "CPU"
    if ctx.precision == "bf16":
        why = deploy.bf16_unavailable(core, device)
        if why:
            raise ConfigError(f"openvino bf16 cannot run here: {why}", target=ctx.profile.name,
                              hint="use fp32 (or int8); make bf16 artifacts on a CPU with bf16 (Intel Cooper Lake / "
                                   "Sapphire Rapids or later, AMD Zen 4 or later)")
    model, route, attempts = convert_routes(ctx, core)
    meta: dict[str, Any] = {"format": "openvino-ir", "route": route, "attempts": attempts,
                            "converter": "openvino.convert_model", "openvino": ov.get_version(),
                            "compress_to_fp16": ctx.precision == "fp16",
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
    config = deploy.compile_config(core, device, ctx.precision,
                                   performance_hint=str(ctx.option("performance_hint", "LATENCY")),
                                   streams=ctx.option("streams"), override=ctx.option("inference_precision"))
    hint = config["properties"].get("INFERENCE_PRECISION_HINT")
    if hint:  # honoured by runtimes that read runtime_options; the CPU plugin of 2026.4 does not (see deploy.py)
        model.set_rt_info(hint, ["runtime_options", "INFERENCE_PRECISION_HINT"])
    ov.save_model(model, str(ctx.out_dir / XML), compress_to_fp16=ctx.precision == "fp16")
    files = [XML, BIN, *deploy.write_deploy(ctx.out_dir, config)]
    meta["compile_config"] = config
    with status("OpenVINO: checking the precision a plain load runs"):
        meta["inference_precision"] = load_check(ctx, core, ctx.out_dir / XML, config,
                                                 embedded=bool(ctx.option("embed_preprocess")))
    rt = meta["inference_precision"].get("runtime") or {}
    if ctx.precision == "int8" and rt:
        meta["int8"]["vnni"] = rt.get("vnni")
        meta["int8"]["int8_layers"] = rt.get("int8_layers")
    roles = {"model": XML, "weights": BIN, "compile_config": deploy.CONFIG_FILE, "deploy": deploy.SNIPPET_FILE}
    embedded = bool(ctx.option("embed_preprocess"))
    return ConversionResult(files, roles, meta, input_layout="NHWC" if embedded else "NCHW",
                            verify_note="embedded preprocessing: the runner maps float NCHW feeds back to raw images"
                            if embedded else None)
