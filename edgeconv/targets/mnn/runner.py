"""MNN runner: MNN's session API (Interpreter + Session) behind the harness's reference-named NCHW interface.

MNN keeps convolution activations in NC4HW4 internally and an input tensor's own format may be NC4HW4 or NHWC, so
inputs are written through a host tensor declared NCHW (``Tensor_DimensionType_Caffe``) with ``copyFrom`` and
outputs read through ``copyToHostTensor`` into an NCHW host tensor: MNN converts the layout in both copies.  Thread
count and precision mode (``high``/``normal``/``low``/``low_bf16``) are set explicitly, never left to MNN's defaults,
because ``low`` changes numerics (fp16 arithmetic on ARMv8.2) behind the precision the artifact claims.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from edgeconv.core.errors import ConversionError, VerificationError
from edgeconv.core.lazy import require
from edgeconv.targets.base import Runner

PRECISION_MODES = ("high", "normal", "low", "low_bf16")
MEMORY_MODES = ("normal", "high", "low")


def session_config(threads: int | None, precision_mode: str, memory_mode: str | None = None) -> dict[str, Any]:
    """The createSession config: CPU backend, explicit thread count and precision (and memory) mode."""
    if precision_mode not in PRECISION_MODES:
        raise VerificationError(f"MNN precision mode must be one of {PRECISION_MODES}, not {precision_mode!r}")
    cfg: dict[str, Any] = {"backend": "CPU", "numThread": int(threads) if threads else (os.cpu_count() or 1),
                           "precision": precision_mode}
    if memory_mode:
        cfg["memory"] = memory_mode
    return cfg


class MnnRunner(Runner):
    def __init__(self, model: Path | str, *, io: dict[str, dict[str, str]], threads: int | None = None,
                 precision_mode: str = "normal", memory_mode: str | None = None, **_: Any) -> None:
        """``io``: ``{"inputs": {reference name: MNN name}, "outputs": {...}}`` (identity unless MNN renamed)."""
        self.MNN = require("MNN", "mnn")
        self.interpreter = self.MNN.Interpreter(str(model))
        self.config = session_config(threads, precision_mode, memory_mode)
        self.session = self.interpreter.createSession(self.config)
        self.io = io
        self._shapes: dict[str, tuple[int, ...]] = {}
        have = set(self.interpreter_outputs())
        lost = [ref for ref, name in io.get("outputs", {}).items() if name not in have]
        if lost:  # MNN's quantization tool drops an output that also feeds another layer (ArgMax of the logits)
            raise ConversionError(f"{Path(model).name} has no output {', '.join(map(repr, lost))} (it has "
                                  f"{', '.join(sorted(have)) or 'none'})",
                                  hint="an output that also feeds another layer can be lost in MNN's INT8 "
                                       "tool; make it a separate copy in the model or choose another target")

    @classmethod
    def from_artifact(cls, artifact: Any, threads: int | None = None, **kw: Any) -> MnnRunner:
        conv = artifact.manifest["conversion"]
        opts = artifact.manifest.get("profile", {}).get("options", {})
        runtime = {k: v for k, v in conv.get("runtime", {}).items() if v is not None}
        mode = kw.pop("precision_mode", None) or runtime.get("precision_mode") or opts.get("precision_mode") \
            or "normal"
        memory = kw.pop("memory_mode", None) or runtime.get("memory_mode") or opts.get("memory_mode")
        return cls(artifact.file("model"), io=conv["io"], threads=threads, precision_mode=mode,
                   memory_mode=memory, **kw)

    def interpreter_inputs(self) -> list[str]:
        return list(self.interpreter.getSessionInputAll(self.session))

    def interpreter_outputs(self) -> list[str]:
        return list(self.interpreter.getSessionOutputAll(self.session))

    def operators(self) -> list[dict[str, str]]:
        """Every operator the session executes, in order (name, MNN type): what keep_fp32 patterns match."""
        ops: list[dict[str, str]] = []

        def before(tensors: Any, info: Any) -> bool:
            return True

        def after(tensors: Any, info: Any) -> bool:
            ops.append({"name": info.getName(), "type": info.getType()})
            return True

        self.interpreter.runSessionWithCallBackInfo(self.session, before, after)
        return ops

    def _resize(self, feeds: dict[str, np.ndarray]) -> None:
        """Reshape the session when the batch (or a dynamic dimension) differs from the last call."""
        changed = False
        for ref_name, mnn_name in self.io["inputs"].items():
            shape = tuple(int(d) for d in feeds[ref_name].shape)
            if self._shapes.get(ref_name) != shape:
                t = self.interpreter.getSessionInput(self.session, mnn_name)
                if tuple(t.getShape()) != shape:
                    self.interpreter.resizeTensor(t, shape)
                    changed = True
                self._shapes[ref_name] = shape
        if changed:
            self.interpreter.resizeSession(self.session)

    def _type(self, tensor: Any) -> tuple[Any, Any]:
        """The Halide type and numpy dtype of a session tensor: an integer output (ArgMax, TopK indices) copied
        into a float host tensor would come back as its int32 bits read as floats."""
        MNN, d = self.MNN, tensor.getDataType()
        for name, dtype in (("Int", np.int32), ("Int64", np.int64), ("Uint8", np.uint8), ("Double", np.float64)):
            if d == getattr(MNN, f"Halide_Type_{name}", None):
                return getattr(MNN, f"Halide_Type_{name}"), dtype
        return MNN.Halide_Type_Float, np.float32

    def infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        MNN = self.MNN
        self._resize(feeds)
        hosts = []  # host tensors must outlive runSession (they wrap the numpy buffers)
        for ref_name, mnn_name in self.io["inputs"].items():
            t_in = self.interpreter.getSessionInput(self.session, mnn_name)
            halide, dtype = self._type(t_in)
            x = np.ascontiguousarray(feeds[ref_name], dtype=dtype).copy()
            host = MNN.Tensor(x.shape, halide, x, MNN.Tensor_DimensionType_Caffe)
            t_in.copyFrom(host)
            hosts.append((x, host))
        self.interpreter.runSession(self.session)
        out = {}
        for ref_name, mnn_name in self.io["outputs"].items():
            t = self.interpreter.getSessionOutput(self.session, mnn_name)
            shape = tuple(t.getShape())
            halide, dtype = self._type(t)
            buf = np.zeros(shape, dtype)
            host = MNN.Tensor(shape, halide, buf, MNN.Tensor_DimensionType_Caffe)
            t.copyToHostTensor(host)
            out[ref_name] = np.array(host.getNumpyData(), dtype=dtype, copy=True).reshape(shape)
        del hosts
        return out

    def close(self) -> None:
        if getattr(self, "session", None) is not None:
            release = getattr(self.interpreter, "releaseSession", None)
            if release is not None:
                release(self.session)
            self.session = None
            self.interpreter = None
