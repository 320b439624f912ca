"""TFLite / LiteRT: the Android and embedded route, converted straight from the PyTorch module by litert-torch.

Conversion needs ``litert_torch`` (it traces the torch module with torch.export; ONNX is only the reference the
artifact is verified against).  Running needs an interpreter: ``ai_edge_litert`` (preferred, XNNPACK) or the older
``tflite_runtime`` — so a machine can run artifacts it could not have converted, and vice versa.
"""

from __future__ import annotations

from typing import Any

from edgeconv.core.lazy import available
from edgeconv.targets.base import ConversionResult, ConvertContext, Option, Runner, Target
from edgeconv.targets.pt2e_observers import DEFAULT_OBSERVER, OBSERVERS

INTERPRETERS = ("ai_edge_litert", "tflite_runtime")


class TfliteTarget(Target):
    name = "tflite"
    extra = "tflite"
    modules = ("litert_torch",)
    preload_modules = ("litert_torch",)
    derived_from = {"fp16": "fp32"}  # the fp16 row casts the fp32 lowering (convert.float_model)
    precisions = ("fp32", "fp16", "int8")
    needs_torch_module = True
    int8_alternative = ("int8_mode", "dynamic", "int8 weights, activations quantized at run time")
    description = "TFLite / LiteRT with XNNPACK, converted from PyTorch by litert-torch"
    routes = ("torch",)
    tools = ("ai-edge-litert", "tflite-runtime")
    options = {
        "int8_io": Option(bool, False, "int8 model inputs/outputs (else float I/O around the int8 graph)"),
        "int8_mode": Option(str, "static", "full-integer (static) or dynamic-range int8",
                            choices=("static", "dynamic")),
        "layout": Option(str, None, "input layout of the .tflite (NHWC for most phone apps)", choices=("NCHW", "NHWC")),
        "observer": Option(str, DEFAULT_OBSERVER, "PT2E activation observer (docs: targets/pt2e_observers.py)",
                           choices=OBSERVERS),
        "per_channel": Option(bool, True, "per-channel weight scales"),
    }

    def runs_here(self) -> tuple[bool, str]:
        """Running needs only an interpreter, not the converter (tflite-runtime alone is enough)."""
        if any(available(m) for m in INTERPRETERS):
            return True, ""
        return False, "missing ai_edge_litert (or tflite_runtime) to run .tflite models"

    def convert(self, ctx: ConvertContext) -> ConversionResult:
        """Full-integer int8 first; when litert-torch cannot convert it (a layout pass or a quantization
        constraint it rejects) and nobody asked for a mode, the dynamic-range route is tried and both attempts are
        recorded (``conversion.attempts``), as the other backends try their other routes."""
        import shutil

        from edgeconv.core.console import log
        from edgeconv.core.errors import ConversionError
        from edgeconv.targets.tflite.convert import convert

        chosen = ctx.options.get("int8_mode") or ctx.profile.options.get("int8_mode")
        if ctx.precision != "int8" or chosen is not None or ctx.option("int8_io", False):
            return convert(ctx)
        try:
            return convert(ctx)
        except ConversionError as e:
            first = e.one_line()
            log.warning("tflite int8 (full-integer) did not convert: %s; trying the dynamic-range route", first)
        for f in ctx.out_dir.iterdir():  # nothing of the failed attempt may become part of the artifact
            shutil.rmtree(f) if f.is_dir() else f.unlink()
        ctx.options = {**ctx.options, "int8_mode": "dynamic"}
        res = convert(ctx)
        res.meta["attempts"] = [{"route": "int8_mode=static", "ok": False, "error": first},
                                {"route": "int8_mode=dynamic", "ok": True}]
        res.meta["int8_route"] = "dynamic-range (full-integer did not convert)"
        return res

    def runner(self, artifact: Any, *, threads: int | None = None, **kw: Any) -> Runner:
        from edgeconv.targets.tflite.runner import TfliteRunner

        return TfliteRunner(artifact.file("model"), io=artifact.manifest.get("conversion", {}).get("io"),
                            threads=threads, **kw)

    def versions(self) -> dict[str, str | None]:
        from edgeconv.core.lazy import version

        return {m: version(m) for m in ("litert-torch", "ai-edge-litert", "torchao", "torch")}
