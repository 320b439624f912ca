"""ncnn: the ARM board / phone route. Reference ONNX → exact rewrites → pnnx → ``.param``/``.bin`` (+ INT8 built here).

No backend is imported at module level (the registry imports this to list targets).
"""

from __future__ import annotations

from typing import Any

from edgeconv.targets.base import ConversionResult, ConvertContext, Runner, Target


class NcnnTarget(Target):
    name = "ncnn"
    extra = "ncnn"
    modules = ("ncnn", "pnnx")
    precisions = ("fp32", "fp16", "int8")
    description = "ncnn CPU runtime (ARM boards, phones), converted with pnnx"

    def convert(self, ctx: ConvertContext) -> ConversionResult:
        from edgeconv.targets.ncnn.convert import convert

        return convert(ctx)

    def runner(self, artifact: Any, *, threads: int | None = None, **kw: Any) -> Runner:
        from edgeconv.targets.ncnn.runner import NcnnRunner

        return NcnnRunner.from_artifact(artifact, threads=threads, **kw)
