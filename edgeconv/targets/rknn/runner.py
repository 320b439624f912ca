"""RKNN runner: the toolkit's simulator, in the ``rknn`` environment, behind edgeconv's Runner interface.

It is a proxy (``Runner.proxy``): the simulator computes what the NPU would, on this host's CPU, so its outputs
verify the conversion (drift, task metric) while its timings say nothing about a board.  Feeds arrive as the
reference ONNX takes them (normalized float NCHW); when the recipe embedded the preprocessing, they are mapped back
to raw pixels first, so the simulated model sees what the board's camera code would hand it.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from edgeconv.core.errors import VerificationError
from edgeconv.core.hashing import sha256_file
from edgeconv.targets.base import Runner
from edgeconv.targets.rknn.convert import HANDLER, RECIPE, to_raw


class RknnSimulatorRunner(Runner):
    proxy = True

    def __init__(self, artifact: Any, env: Any, *, open_timeout: float = 1800.0, infer_timeout: float = 300.0) -> None:
        from edgeconv.envs.client import WorkerSession

        saved = json.loads((artifact.path / RECIPE).read_text())
        recipe = saved["recipe"]
        conv = artifact.manifest.get("conversion") or {}
        self.norm = ((recipe["config"]["mean_values"][0], recipe["config"]["std_values"][0])
                     if recipe["input"]["embedded_preprocess"] else None)
        self.input_name = recipe["input"]["name"]
        self.outputs = {o.name: tuple(o.static_shape) for o in artifact.outputs}
        source = artifact.path / conv.get("simulator_source", {}).get("file", "simulator/source.onnx")
        if not source.is_file() or sha256_file(source) != conv.get("simulator_source", {}).get("sha256"):
            raise VerificationError("the RKNN artifact lacks the ONNX its simulator rebuilds from (or it changed)",
                                    hint="convert again (it is kept in simulator/source.onnx)")
        args: dict[str, Any] = {"recipe": recipe, "onnx": str(source),
                                "artifact": str(artifact.file("model")), "inputs": [self.input_name],
                                "outputs": recipe["outputs"]}
        calib = conv.get("simulator_calibration")
        if recipe["quantize"]:
            path = artifact.path / calib["file"] if calib else None
            if path is None or not path.is_file() or sha256_file(path) != calib["sha256"]:
                raise VerificationError("the INT8 RKNN artifact lacks its calibration sample (or it was changed), "
                                        "so the simulator cannot rebuild the same model",
                                        hint="convert again (the sample is kept in simulator/calibration.npz)")
            args["dataset"] = str(path)
        self.session = WorkerSession(env.transport(), HANDLER, "open_simulator", args, what="RKNN simulator",
                                     open_timeout=open_timeout, infer_timeout=infer_timeout)
        self.info = self.session.info or {}

    def infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        outs = self.session.infer({self.input_name: to_raw(np.array(feeds[self.input_name], copy=True), self.norm)})
        result = {}
        for name, shape in self.outputs.items():
            o = outs[name]
            result[name] = o.reshape(shape) if o.size == int(np.prod(shape)) and o.shape != shape else o
        return result

    @property
    def last_ms(self) -> float | None:
        """The simulator's own time for the last call (host CPU: not a device number)."""
        return self.session.last_ms

    def close(self) -> None:
        session = getattr(self, "session", None)
        if session is not None:
            session.close()
            self.session = None  # type: ignore[assignment]
