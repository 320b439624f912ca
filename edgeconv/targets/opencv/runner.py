"""OpenCV DNN runner: ``cv2.dnn.Net`` behind the harness's reference-named NCHW interface.

OpenCV takes NCHW blobs with the batch axis and names outputs as the ONNX graph does, so the runner only sets the
inputs by name and asks ``forward`` for the reference's output names (never the net's own "unconnected" order).
Thread count is OpenCV's process-wide ``cv2.setNumThreads``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgeconv.core.errors import ConfigError
from edgeconv.core.lazy import require
from edgeconv.targets.base import Runner

ENGINES = ("auto", "new", "classic")
BACKENDS = ("opencv", "openvino")
TARGETS = ("cpu", "cpu_fp16")


def engine_flag(cv2: Any, engine: str) -> int:
    """OpenCV's constant for ``engine``. 5.0 has ENGINE_NEW and ENGINE_CLASSIC; 5.1 dropped both: its ENGINE_OPENCV
    is the new engine (what ENGINE_AUTO resolves to) and the classic engine is gone, so asking 5.1 for it is an
    error that names the version, not an AttributeError."""
    dnn = cv2.dnn
    if engine == "auto":
        return int(dnn.ENGINE_AUTO)
    if engine == "new":
        return int(dnn.ENGINE_NEW if hasattr(dnn, "ENGINE_NEW") else dnn.ENGINE_OPENCV)
    if engine == "classic":
        if not hasattr(dnn, "ENGINE_CLASSIC"):
            raise ConfigError(f"OpenCV {cv2.__version__} has no classic DNN engine (5.1 removed it); the classic "
                              "engine also carries fp16 and the OpenVINO backend",
                              hint="use engine = \"auto\" (fp32, OpenCV's CPU backend), or "
                                   "pip install 'opencv-python-headless<5.1' for the classic engine")
        return int(dnn.ENGINE_CLASSIC)
    raise ConfigError(f"unknown OpenCV DNN engine {engine!r}", hint=f"one of {', '.join(ENGINES)}")


def _read_onnx(cv2: Any, model: Path | str, flag: int) -> tuple[Any, str]:
    """``readNetFromONNX`` with what OpenCV's C++ logger writes to stderr meanwhile (returned, not shown): the new
    engine names unsupported operators only there, and OpenCV 5.1 has no classic engine left to ask."""
    import os
    import tempfile

    saved = os.dup(2)
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            net = cv2.dnn.readNetFromONNX(str(model), flag)
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        tmp.seek(0)
        return net, tmp.read().decode(errors="replace")


def open_net(cv2: Any, model: Path | str, engine: str, backend: str, target: str) -> Any:
    """Read the ONNX file with the chosen engine; set backend/target when they differ from OpenCV's CPU default."""
    net, logged = _read_onnx(cv2, model, engine_flag(cv2, engine))
    if net.empty():  # the new engine returns an empty net and logs why ("Unsupported operations: ...")
        raise cv2.error(f"OpenCV read an empty network from {model} ({engine} engine): {' '.join(logged.split())}")
    if (backend, target) != ("opencv", "cpu"):  # the defaults; the new engine warns on any explicit target
        net.setPreferableBackend({"opencv": cv2.dnn.DNN_BACKEND_OPENCV,
                                  "openvino": cv2.dnn.DNN_BACKEND_INFERENCE_ENGINE}[backend])
        net.setPreferableTarget({"cpu": cv2.dnn.DNN_TARGET_CPU, "cpu_fp16": cv2.dnn.DNN_TARGET_CPU_FP16}[target])
    return net


class OpenCvRunner(Runner):
    def __init__(self, model: Path | str, *, inputs: list[str], outputs: list[str], threads: int | None = None,
                 engine: str = "auto", backend: str = "opencv", target: str = "cpu", **_: Any) -> None:
        self.cv2 = require("cv2", "opencv")
        if threads:
            self.cv2.setNumThreads(int(threads))
        self.net = open_net(self.cv2, model, engine, backend, target)
        self.inputs, self.outputs = list(inputs), list(outputs)

    @classmethod
    def from_artifact(cls, artifact: Any, threads: int | None = None, **kw: Any) -> OpenCvRunner:
        conv = artifact.manifest["conversion"]
        settings = {**conv.get("runtime", {}), **kw}
        return cls(artifact.file("model"), inputs=conv["io"]["inputs"], outputs=conv["io"]["outputs"],
                   threads=threads, **settings)

    def layer_types(self) -> dict[str, int]:
        """How many layers of each type OpenCV built (recorded in the manifest: what OpenCV made of the graph)."""
        counts: dict[str, int] = {}
        for name in self.net.getLayerNames():
            layer = self.net.getLayer(name)
            t = getattr(layer, "type", None) or "?"
            counts[t] = counts.get(t, 0) + 1
        return dict(sorted(counts.items()))

    def infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        for name in self.inputs:
            self.net.setInput(np.ascontiguousarray(feeds[name], dtype=np.float32).copy(), name)
        outs = self.net.forward(self.outputs)
        return {n: np.array(o, dtype=np.float32, copy=True) for n, o in zip(self.outputs, outs, strict=True)}

    def close(self) -> None:
        self.net = None
