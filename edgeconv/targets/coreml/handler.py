"""Core ML side of the coreml target: runs on a Mac (or an iOS-capable host) through ``edgeconv/envs/worker.py``.

Self-contained (coremltools, numpy and Pillow only; no edgeconv), because it is shipped to the Mac with the
artifact and executed by that machine's Python.  ``open_model(args, dir)`` loads the ``.mlpackage`` with the
requested compute units and returns a session whose ``infer`` takes what the host sends: raw pixels (NCHW float,
0-255) for an image input, which become a PIL image in the model's colour space, or float tensors otherwise.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


class CoreMlSession:
    def __init__(self, args: dict[str, Any], job_dir: Path) -> None:
        import coremltools as ct
        import numpy as np

        self.np, self.image = np, args.get("image")
        units = getattr(ct.ComputeUnit, args.get("compute_units", "ALL"))
        self.model = ct.models.MLModel(args["model"], compute_units=units)
        self.input, self.outputs = args["input"], args["outputs"]
        self.info = {"compute_units": args.get("compute_units", "ALL")}

    def infer(self, feeds: dict[str, Any]) -> dict[str, Any]:
        np = self.np
        x = feeds[self.input]
        if self.image is not None:
            from PIL import Image

            hwc = np.clip(np.rint(x[0].transpose(1, 2, 0)), 0, 255).astype(np.uint8)
            value: Any = Image.fromarray(hwc[..., 0] if hwc.shape[-1] == 1 else hwc,
                                         mode="L" if hwc.shape[-1] == 1 else "RGB")
        else:
            value = np.ascontiguousarray(x, dtype=np.float32)
        out = self.model.predict({self.input: value})
        return {n: np.asarray(out[n], dtype=np.float32) for n in self.outputs}


def open_model(args: dict[str, Any], job_dir: Path) -> CoreMlSession:
    return CoreMlSession(args, job_dir)
