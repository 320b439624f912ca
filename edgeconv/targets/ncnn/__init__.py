"""ncnn: the ARM board / phone route. Reference ONNX → exact rewrites → pnnx → ``.param``/``.bin`` (+ INT8 built here).

No backend is imported at module level (the registry imports this to list targets).
"""

from __future__ import annotations

from typing import Any

from edgeconv.targets.base import ConversionResult, ConvertContext, Option, Runner, Target


class NcnnTarget(Target):
    name = "ncnn"
    extra = "ncnn"
    modules = ("ncnn", "pnnx")
    precisions = ("fp32", "fp16", "int8")
    description = "ncnn CPU runtime (ARM boards, phones), converted with pnnx"
    routes = ("onnx", "torch")
    fork_unsafe_modules = ("ncnn",)  # OpenMP / TBB pools
    options = {
        "fp16_arithmetic": Option(bool, False, "fp16 arithmetic (ARM with fp16 units; does nothing on x86)"),
        "light_mode": Option(bool, True, "free intermediate blobs as soon as possible"),
        "int8_winograd": Option(bool, True, "6-bit weights for 3x3 stride-1 convs so ncnn's int8 Winograd applies"),
        "keep_outputs_fp32": Option(bool, False, "keep the layers producing graph outputs in float (int8)"),
        "pnnx_timeout": Option(float, 300.0, "time limit of one pnnx run, seconds"),
        "rewrites": Option(bool, True, "rewrite Focus/strided slices exactly before pnnx"),
        "fuse": Option(bool, True, "fuse the Split+Sigmoid+Mul SiLUs pnnx leaves (residual adds) into Swish layers"),
        "torch_fallback": Option(bool, True, "try pnnx's torch route when the ONNX route fails"),
        "threads_affinity": Option(int, 0, "ncnn CPU powersave/affinity mode (0 all, 1 little, 2 big)"),
    }

    def convert(self, ctx: ConvertContext) -> ConversionResult:
        from edgeconv.targets.ncnn.convert import convert

        return convert(ctx)

    def runner(self, artifact: Any, *, threads: int | None = None, **kw: Any) -> Runner:
        from edgeconv.targets.ncnn.runner import NcnnRunner

        return NcnnRunner.from_artifact(artifact, threads=threads, **kw)
