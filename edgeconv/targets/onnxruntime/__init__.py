"""ONNX Runtime: the reference runtime (fp32) and the reference INT8 path (QDQ from quantize_static)."""

from __future__ import annotations

from typing import Any

from edgeconv.targets.base import ConversionResult, ConvertContext, Runner, Target


class OnnxRuntimeTarget(Target):
    name = "onnxruntime"
    extra = "onnxruntime"
    modules = ("onnxruntime", "onnx")
    precisions = ("fp32", "int8")
    description = "ONNX Runtime CPU execution provider (reference)"

    def convert(self, ctx: ConvertContext) -> ConversionResult:
        from edgeconv.targets.onnxruntime.convert import convert

        return convert(ctx)

    def runner(self, artifact: Any, *, threads: int | None = None, **kw: Any) -> Runner:
        from edgeconv.targets.onnxruntime.runner import OrtRunner

        return OrtRunner(artifact.file("model"), threads=threads, **kw)
