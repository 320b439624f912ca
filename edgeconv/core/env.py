"""The environment manifest: what machine and which tool versions produced a number.

``isa_features()`` names the instruction-set extensions that decide which kernels a CPU runtime picks (AVX2,
AVX-512, VNNI, BF16, AMX on x86; NEON, dot-product, fp16, i8mm on ARM). A latency or an INT8 drift means little
without them: the same OpenVINO "fp32" IR runs in bf16 on an AVX-512-BF16 CPU, and INT8 is only fast with VNNI.
"""

from __future__ import annotations

import os
import platform
from functools import lru_cache
from typing import Any

from edgeconv.core.lazy import version

TOOLS = ("edgeconv", "torch", "onnx", "onnxscript", "onnxsim", "onnxslim", "onnxruntime", "openvino", "nncf",
         "ncnn", "pnnx", "litert-torch", "ai-edge-litert", "tflite-runtime", "tensorrt", "polygraphy", "numpy",
         "pycocotools")
_FLAGS = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx_vnni",
          "avx512_bf16", "avx512_fp16", "amx_tile", "amx_int8", "amx_bf16", "amx_fp16", "neon", "asimd", "asimddp",
          "asimdhp", "i8mm", "bf16", "sve")

#: feature -> the /proc/cpuinfo flags any one of which provides it (x86 names, then ARM's ``Features`` names).
ISA: dict[str, tuple[str, ...]] = {
    "AVX2": ("avx2",),
    "AVX-512": ("avx512f",),
    "VNNI": ("avx512_vnni", "avx_vnni"),
    "BF16": ("avx512_bf16", "amx_bf16"),
    "AMX": ("amx_tile", "amx_int8", "amx_bf16"),
    "FP16": ("avx512_fp16", "amx_fp16", "asimdhp"),
    "NEON": ("neon", "asimd"),
    "DOTPROD": ("asimddp",),
    "I8MM": ("i8mm",),
}


@lru_cache(maxsize=1)
def _proc_cpuinfo() -> tuple[str, frozenset[str]]:
    model, flags = "", set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, val = line.partition(":")
                key = key.strip()
                if key in ("model name", "Model") and not model:
                    model = val.strip()
                elif key in ("flags", "Features"):
                    flags.update(val.split())
    except OSError:
        pass
    return model, frozenset(flags)


@lru_cache(maxsize=1)
def cpu_info() -> dict[str, Any]:
    model, flags = _proc_cpuinfo()
    model = model or platform.processor() or platform.machine()
    return {"model": model, "arch": platform.machine(), "cores": os.cpu_count(),
            "flags": sorted(f for f in _FLAGS if f in flags)}


def isa_features(flags: frozenset[str] | set[str] | None = None) -> dict[str, bool]:
    """Which of AVX2, AVX-512, VNNI, BF16, AMX (and the ARM equivalents) this CPU has, from /proc/cpuinfo flags.

    Only features relevant to the CPU's architecture are listed, so an x86 report does not say ``NEON: false``.
    ``flags`` overrides the machine's own (tests, remote devices reporting their flags).
    """
    flags = frozenset(flags) if flags is not None else _proc_cpuinfo()[1]
    arm = platform.machine().lower() in ("aarch64", "arm64", "armv7l", "armv8l") or bool(flags & {"neon", "asimd"})
    names = ("NEON", "DOTPROD", "FP16", "I8MM", "BF16") if arm else ("AVX2", "AVX-512", "VNNI", "BF16", "AMX", "FP16")
    if arm:
        return {n: bool(flags & set(ISA[n] if n != "BF16" else ("bf16",))) for n in names}
    return {n: bool(flags & set(ISA[n])) for n in names}


def isa_line(features: dict[str, bool] | None = None) -> str:
    """One line for doctor and reports: ``AVX2 AVX-512 VNNI BF16 (no AMX, FP16)``."""
    features = features if features is not None else isa_features()
    have = [k for k, v in features.items() if v]
    miss = [k for k, v in features.items() if not v]
    return " ".join(have or ["-"]) + (f" (no {', '.join(miss)})" if miss else "")


def has_bf16() -> bool:
    """Native bf16 arithmetic (AVX-512-BF16 or AMX-BF16): what OpenVINO's CPU plugin needs to run bf16."""
    return isa_features().get("BF16", False)


def tool_versions() -> dict[str, str | None]:
    return {t: version(t) for t in TOOLS}


def environment() -> dict[str, Any]:
    info = cpu_info()
    feats = isa_features()
    return {"cpu": info["model"], "arch": info["arch"], "cores": info["cores"], "cpu_flags": info["flags"],
            "isa": feats, "isa_line": isa_line(feats),
            "os": f"{platform.system()} {platform.release()}", "python": platform.python_version(),
            "versions": {k: v for k, v in tool_versions().items() if v}}
