"""Runners for TensorRT artifacts: the engine (where TensorRT and a GPU exist) or an ONNX Runtime proxy.

The proxy runs the artifact's ONNX - the Q/DQ model for int8, the fp16-cast model for fp16 - with ONNX Runtime's
graph optimizations DISABLED, so every QuantizeLinear/DequantizeLinear executes as written: exact float32 fake-quant,
the arithmetic TensorRT's explicit quantization specifies, independent of which integer kernels ORT would pick on
this CPU.  Measured (issue #9, x86 AVX2 without VNNI): on TensorRT-placed Q/DQ (inputs of weighted layers only) ORT
cannot form QLinearConv at all, and "all" and "none" gave bit-identical outputs; on ORT's own QDQ layout (outputs
quantized too) the integer kernels differed from fake-quant by 58.6 dB SNR with the same drift to fp32 - no
accuracy loss observed on those models, so "none" is chosen for exactness, not to repair a measured loss.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgeconv.core.lazy import require
from edgeconv.targets.base import OrtRunner, Runner

PROXY_OPTIMIZE = "none"


class ProxyRunner(OrtRunner):
    """ONNX Runtime standing in for TensorRT; ``proxy`` tells the harness that latency is not TensorRT's."""

    proxy = True

    def __init__(self, model: Path | str, *, threads: int | None = None, optimize: str = PROXY_OPTIMIZE,
                 **kw: Any) -> None:
        super().__init__(model, threads=threads, optimize=optimize, **kw)


class EngineRunner(Runner):
    """Runs a serialized engine through Polygraphy's TrtRunner (device buffers, shapes, streams handled there)."""

    proxy = False

    def __init__(self, engine: Path | str, **_: Any) -> None:
        require("tensorrt", "tensorrt")
        from polygraphy.backend.common import BytesFromPath
        from polygraphy.backend.trt import EngineFromBytes, TrtRunner

        self._runner = TrtRunner(EngineFromBytes(BytesFromPath(str(engine))))
        self._runner.activate()

    def infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        # Owned C-contiguous copies: the host→device copy must not read a strided or Fortran-order view as if flat.
        out = self._runner.infer({k: np.array(v, order="C", copy=True) for k, v in feeds.items()})
        return {k: np.asarray(v) for k, v in out.items()}

    def close(self) -> None:
        if getattr(self, "_runner", None) is not None:
            self._runner.deactivate()
            self._runner = None


def make_runner(artifact: Any, *, threads: int | None = None, engine_ok: bool = False,
                **kw: Any) -> Runner:
    """The engine runner when an engine was built and can run here; otherwise the ONNX Runtime proxy."""
    roles = artifact.manifest.get("roles", {})
    if engine_ok and "engine" in roles and not kw.pop("force_proxy", False):
        return EngineRunner(artifact.file("engine"))
    kw.pop("force_proxy", None)
    return ProxyRunner(artifact.file("proxy"), threads=threads, **kw)
