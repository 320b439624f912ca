"""ONNX Runtime runner (CPU EP). Also used to run reference graphs and proxies (TensorRT's Q/DQ ONNX)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgeconv.core.lazy import require
from edgeconv.targets.base import Runner


class OrtRunner(Runner):
    def __init__(self, model: Path | str, *, threads: int | None = None, optimize: str = "all",
                 providers: list[str] | None = None, **_: Any) -> None:
        ort = require("onnxruntime", "onnxruntime")
        so = ort.SessionOptions()
        so.log_severity_level = 3
        if threads:
            so.intra_op_num_threads = threads
            so.inter_op_num_threads = 1
        so.graph_optimization_level = {
            "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
            "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
            "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "none": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        }[optimize]
        self.session = ort.InferenceSession(str(model), so, providers=providers or ["CPUExecutionProvider"])
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.input_names = [i.name for i in self.session.get_inputs()]

    def infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        outs = self.session.run(self.output_names, {n: feeds[n] for n in self.input_names})
        return dict(zip(self.output_names, outs, strict=True))

    def close(self) -> None:
        self.session = None  # type: ignore[assignment]
