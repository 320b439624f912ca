"""TensorRT (10 and 11): TRT-ready ONNX, explicit Q/DQ INT8, an implicit calibration cache, fp16, engine builds.

Conversion needs only onnx + onnxruntime, so it runs anywhere; the engine itself is built where TensorRT and an
NVIDIA GPU are (``runs_here``), e.g. ``edgeconv convert --target jetson-orin-nano`` on the Jetson.  Elsewhere the
artifact is verified by running its ONNX (the Q/DQ or fp16 model) on ONNX Runtime as a proxy (``Runner.proxy``),
and the manifest says that TensorRT latency was not measured.  No TensorRT import at module level.
"""

from __future__ import annotations

import ctypes
import functools
from typing import Any

from edgeconv.core.lazy import available
from edgeconv.targets.base import ConversionResult, ConvertContext, Option, Runner, Target

NOT_HERE = "tensorrt not installed (engine build is verified only on a device with TensorRT)"


@functools.lru_cache(maxsize=1)
def cuda_device_count() -> int:
    """NVIDIA GPUs visible through the CUDA driver (0 without a driver); asks libcuda directly, needs no torch."""
    for lib in ("libcuda.so.1", "libcuda.so", "nvcuda.dll"):
        try:
            cuda = ctypes.CDLL(lib)
        except OSError:
            continue
        count = ctypes.c_int(0)
        if cuda.cuInit(0) != 0 or cuda.cuDeviceGetCount(ctypes.byref(count)) != 0:
            return 0
        return int(count.value)
    return 0


def tensorrt_here() -> tuple[bool, str]:
    """Whether an engine can be built and run here: the tensorrt module and a GPU, with the reason when not."""
    if not available("tensorrt"):
        return False, NOT_HERE
    if cuda_device_count() == 0:
        return False, "tensorrt is installed but no NVIDIA GPU/driver is visible (engine not built)"
    return True, ""


class TensorRtTarget(Target):
    name = "tensorrt"
    extra = "tensorrt"
    modules = ("onnx", "onnxruntime")  # what *conversion* needs; the engine build also needs tensorrt (optional)
    precisions = ("fp32", "fp16", "int8")
    description = "NVIDIA TensorRT 10/11 (engine built on the device; ONNX Runtime proxy elsewhere)"
    tools = ("tensorrt", "polygraphy", "nvidia-modelopt")
    isolate = True
    capabilities = frozenset({"trt_calibration_cache"})
    options = {
        "trt_version": Option(str, "auto", "TensorRT generation(s) to write for", choices=("auto", "10", "11")),
        "int8_mode": Option(str, "explicit", "INT8 as Q/DQ ONNX (explicit) or calibration cache (implicit, TRT 10)",
                            choices=("explicit", "implicit")),
        "workspace_mib": Option(int, 1024, "builder workspace in MiB (build_engine.sh and on-device builds)"),
        "calib_params": Option(dict, {}, "parameters of the calibration method (percentile, num_bins, ...)"),
        "quantizer": Option(str, "auto", "Q/DQ writer: auto (ModelOpt when importable), modelopt or onnxruntime",
                            choices=("auto", "modelopt", "onnxruntime")),
        "qdq_residual_add": Option(bool, True, "Q/DQ on residual Add inputs (lets TensorRT fuse them in int8)"),
        "trt_cache_version": Option(str, None, "TensorRT version written into the calibration cache header"),
        "opcheck": Option(str, "error", "unsupported-operator check: error, warn or off",
                          choices=("error", "warn", "off")),
    }

    @staticmethod
    def write_calibration_cache(ranges: dict[str, tuple[float, float]], path: Any, version: str | None = None) -> Any:
        """The TensorRT 10 calibration cache for shared statistics (``edgeconv calibrate --trt-cache``)."""
        from edgeconv.targets.tensorrt.calib_cache import JETPACK6_TRT, CalibrationCache, trt_version_number

        cache = CalibrationCache.from_ranges(ranges, version=trt_version_number(version or JETPACK6_TRT))
        cache.write(path)
        return cache

    def runs_here(self) -> tuple[bool, str]:
        if not self.available():
            return False, f"missing {', '.join(self.missing())}"
        return tensorrt_here()

    def convert(self, ctx: ConvertContext) -> ConversionResult:
        from edgeconv.targets.tensorrt.convert import convert

        return convert(ctx, build=self.runs_here()[0])

    def runner(self, artifact: Any, *, threads: int | None = None, **kw: Any) -> Runner:
        from edgeconv.targets.tensorrt.runner import make_runner

        return make_runner(artifact, threads=threads, engine_ok=self.runs_here()[0], **kw)

    def versions(self) -> dict[str, str | None]:
        from edgeconv.core.lazy import version

        return {**super().versions(), "tensorrt": version("tensorrt"), "nvidia-modelopt": version("nvidia-modelopt")}
