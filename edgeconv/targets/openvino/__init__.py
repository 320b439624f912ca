"""OpenVINO: IR (xml + bin) for Intel CPUs/GPUs/NPUs; FP32, FP16 (compressed weights) and INT8 by NNCF.

This module imports no backend: ``openvino``/``nncf`` are imported inside ``convert``/``runner`` only, so the
registry can list this target (and say what to install) on machines without OpenVINO.
"""

from __future__ import annotations

from typing import Any

from edgeconv.targets.base import ConversionResult, ConvertContext, Runner, Target


class OpenVinoTarget(Target):
    name = "openvino"
    extra = "openvino"
    modules = ("openvino", "nncf")
    precisions = ("fp32", "fp16", "int8")
    description = "OpenVINO IR (CPU/GPU/NPU/AUTO); INT8 by NNCF post-training quantization"

    def convert(self, ctx: ConvertContext) -> ConversionResult:
        from edgeconv.targets.openvino.convert import convert

        return convert(ctx)

    def runner(self, artifact: Any, *, threads: int | None = None, **kw: Any) -> Runner:
        from edgeconv.targets.openvino.runner import runner_for_artifact

        return runner_for_artifact(artifact, threads=threads, **kw)
