"""The environment manifest: what machine and which tool versions produced a number."""

from __future__ import annotations

import os
import platform
from functools import lru_cache
from typing import Any

from edgeconv.core.lazy import version

TOOLS = ("edgeconv", "torch", "onnx", "onnxscript", "onnxsim", "onnxslim", "onnxruntime", "openvino", "nncf",
         "ncnn", "pnnx", "litert-torch", "ai-edge-litert", "tflite-runtime", "tensorrt", "polygraphy", "numpy",
         "pycocotools")
_FLAGS = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8", "neon", "asimd",
          "asimddp", "i8mm")


@lru_cache(maxsize=1)
def cpu_info() -> dict[str, Any]:
    model, flags = platform.processor() or platform.machine(), set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, val = line.partition(":")
                key = key.strip()
                if key in ("model name", "Model") and model in ("", platform.machine(), platform.processor()):
                    model = val.strip()
                elif key in ("flags", "Features"):
                    flags.update(val.split())
    except OSError:
        pass
    return {"model": model, "arch": platform.machine(), "cores": os.cpu_count(),
            "flags": sorted(f for f in _FLAGS if f in flags)}


def tool_versions() -> dict[str, str | None]:
    return {t: version(t) for t in TOOLS}


def environment() -> dict[str, Any]:
    info = cpu_info()
    return {"cpu": info["model"], "arch": info["arch"], "cores": info["cores"], "cpu_flags": info["flags"],
            "os": f"{platform.system()} {platform.release()}", "python": platform.python_version(),
            "versions": {k: v for k, v in tool_versions().items() if v}}
