"""TFLite runner: ai-edge-litert's Interpreter (XNNPACK by default), or tflite-runtime where only that exists.

Takes and returns reference-named NCHW float tensors: NHWC tensors are transposed here, and int8/uint8/int16 I/O is
(de)quantized with the model's own scale/zero-point, so the harness compares like with like.  The name/layout
mapping comes from the artifact's manifest (``conversion.io``, written at conversion after a shape check); without
one (a foreign .tflite) it is rebuilt from signature order.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgeconv.core.errors import MissingDependencyError
from edgeconv.core.lazy import available
from edgeconv.targets.base import Runner


def interpreter_module() -> tuple[str, Any]:
    """The Interpreter class to use: ai-edge-litert first, tflite-runtime as the fallback."""
    if available("ai_edge_litert"):
        from ai_edge_litert import interpreter as mod

        return "ai_edge_litert", mod.Interpreter
    if available("tflite_runtime"):
        from tflite_runtime import interpreter as mod  # type: ignore[import-not-found]

        return "tflite_runtime", mod.Interpreter
    raise MissingDependencyError("no TFLite interpreter is installed (ai_edge_litert or tflite_runtime)",
                                 hint="pip install 'edgeconv[tflite]' (or tflite-runtime on the device)")


def open_interpreter(model_path: Path | str | None = None, *, model_content: bytes | None = None,
                     threads: int | None = None) -> Any:
    """An allocated Interpreter; ``threads`` None/0 lets the runtime choose."""
    _, cls = interpreter_module()
    kw: dict[str, Any] = {"num_threads": threads} if threads else {}
    if model_content is not None:
        interp = cls(model_content=model_content, **kw)
    else:
        interp = cls(model_path=str(model_path), **kw)
    interp.allocate_tensors()
    return interp


def quantize(x: np.ndarray, dtype: str, scale: float, zero_point: int) -> np.ndarray:
    """float → the model's integer input type, saturating as TFLite's own QUANTIZE op does."""
    info = np.iinfo(dtype)
    q = np.round(x.astype(np.float32) / scale) + zero_point
    return np.clip(q, info.min, info.max).astype(dtype)


def dequantize(x: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    return ((x.astype(np.float32) - zero_point) * scale).astype(np.float32)


class TfliteRunner(Runner):
    def __init__(self, model: Path | str, *, io: dict[str, Any] | None = None, threads: int | None = None,
                 interpreter: Any = None, **_: Any) -> None:
        """``interpreter``: an already allocated one for ``model`` (diagnosis opens it with every tensor kept)."""
        self.runtime, _cls = interpreter_module()
        self.interpreter = interpreter or open_interpreter(model, threads=threads)
        sigs = self.interpreter.get_signature_list()
        self.signature = (io or {}).get("signature") or next(iter(sigs))
        sig = self.interpreter.get_signature_runner(self.signature)
        sig_in, sig_out = sig.get_input_details(), sig.get_output_details()
        # The signature runner is only read for tensor indices and then dropped: LiteRT refuses invoke() while one
        # references the interpreter, and its __call__ re-runs ResizeInputTensor + AllocateTensors every time
        # (1-3 % of a 10 ms detector against the bare set_tensor/invoke loop, benchmarks/runner_overhead.py).
        del sig
        if io is None:  # a .tflite without our manifest: signature order, tensors as they are
            io = {"inputs": [self._row(n, d) for n, d in sig_in.items()],
                  "outputs": [self._row(n, d) for n, d in sig_out.items()]}
        self.inputs: list[dict[str, Any]] = io["inputs"]
        self.outputs: list[dict[str, Any]] = io["outputs"]
        self._in_index = [int(sig_in[r["tflite"]]["index"]) for r in self.inputs]
        self._out_index = [int(sig_out[r["tflite"]]["index"]) for r in self.outputs]
        self._shapes = [tuple(int(d) for d in sig_in[r["tflite"]]["shape"]) for r in self.inputs]

    @staticmethod
    def _row(name: str, det: dict[str, Any]) -> dict[str, Any]:
        scale, zp = det.get("quantization", (0.0, 0))
        return {"tflite": name, "reference": name, "layout": "NCHW", "dtype": np.dtype(det["dtype"]).name,
                "scale": float(scale), "zero_point": int(zp)}

    def infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        it = self.interpreter
        args = []
        for r in self.inputs:
            x = np.asarray(feeds[r["reference"]])
            if r["layout"] == "NHWC":
                x = np.transpose(x, (0, 2, 3, 1))
            if np.issubdtype(np.dtype(r["dtype"]), np.integer) and r["scale"]:
                x = quantize(x, r["dtype"], r["scale"], r["zero_point"])
            args.append(np.ascontiguousarray(x, dtype=r["dtype"]))
        shapes = [a.shape for a in args]
        if shapes != self._shapes:  # another batch size: resize once, as the signature runner would every call
            for i, shape in zip(self._in_index, shapes, strict=True):
                it.resize_tensor_input(i, list(shape))
            it.allocate_tensors()
            self._shapes = shapes
        for i, a in zip(self._in_index, args, strict=True):
            it.set_tensor(i, a)  # copies into the interpreter's own buffer: never the caller's memory at invoke()
        it.invoke()
        out: dict[str, np.ndarray] = {}
        for r, i in zip(self.outputs, self._out_index, strict=True):
            y = it.get_tensor(i)  # a copy
            if np.issubdtype(y.dtype, np.integer) and r["scale"]:
                y = dequantize(y, r["scale"], r["zero_point"])
            if r["layout"] == "NHWC":
                y = np.ascontiguousarray(np.transpose(y, (0, 3, 1, 2)))
            out[r["reference"]] = y
        return out

    def close(self) -> None:
        self.interpreter = None
