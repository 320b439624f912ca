"""OpenCV DNN: the "load the ONNX in OpenCV" route of C++ and Python apps. The reference ONNX (or an exact
OpenCV-friendly variant when OpenCV rejects an operator) read by ``cv2.dnn.readNetFromONNX``.

No backend is imported at module level (the registry imports this to list targets).
"""

from __future__ import annotations

from typing import Any

from edgeconv.targets.base import ConversionResult, ConvertContext, Option, Runner, Target


class OpenCvTarget(Target):
    name = "opencv"
    extra = "opencv"
    modules = ("cv2", "onnx")
    min_versions = {"opencv-python-headless": "4.10"}
    precisions = ("fp32", "fp16")
    calibrated = ()
    routes = ("onnx",)
    tools = ("opencv-python-headless", "opencv-python")
    isolate = True
    options = {
        "engine": Option(str, "auto", "OpenCV 5 DNN engine: auto (new, falling back to classic), new, classic",
                         choices=("auto", "new", "classic")),
        "backend": Option(str, "opencv", "DNN backend: opencv (CPU), openvino (only when OpenCV is built with it)",
                          choices=("opencv", "openvino")),
    }
    description = "OpenCV DNN (cv2.dnn.readNetFromONNX) on the CPU; fp16 where the build offers DNN_TARGET_CPU_FP16"

    def convert(self, ctx: ConvertContext) -> ConversionResult:
        from edgeconv.targets.opencv.convert import convert

        return convert(ctx)

    def runner(self, artifact: Any, *, threads: int | None = None, **kw: Any) -> Runner:
        from edgeconv.targets.opencv.runner import OpenCvRunner

        return OpenCvRunner.from_artifact(artifact, threads=threads, **kw)
