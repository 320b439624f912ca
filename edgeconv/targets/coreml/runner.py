"""Core ML runners: in-process on macOS, or on a Mac over SSH (the worker protocol); elsewhere none can exist.

Feeds arrive in the reference's layout (normalized float NCHW); for an image input they are mapped back to raw
pixels with the embedded scale/bias, so the model sees the image a camera would give it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edgeconv.targets.base import Runner
from edgeconv.targets.coreml.convert import MODEL

HANDLER_NAME = "handler.py"


def raw_pixels(x: np.ndarray, image: dict[str, Any] | None) -> np.ndarray:
    """Invert ``y = scale * x + bias`` (per channel) to the raw pixel values the image input takes."""
    if image is None:
        return np.ascontiguousarray(x, dtype=np.float32)
    bias = np.asarray(image["bias"], np.float32).reshape(1, -1, 1, 1)
    return np.ascontiguousarray((x.astype(np.float32) - bias) / np.float32(image["scale"]))


def session_args(artifact: Any, model_path: str, compute_units: str) -> dict[str, Any]:
    conv = artifact.manifest.get("conversion") or {}
    return {"model": model_path, "image": conv.get("image_input"), "compute_units": compute_units,
            "input": artifact.inputs[0].name, "outputs": [o.name for o in artifact.outputs]}


class CoreMlRunner(Runner):
    """Runs through a worker session (local interpreter on macOS, or a Mac over SSH)."""

    def __init__(self, artifact: Any, transport: Any, *, compute_units: str = "ALL", open_timeout: float = 600.0,
                 infer_timeout: float = 120.0) -> None:
        from pathlib import Path

        from edgeconv.envs.client import WorkerSession

        self.image = (artifact.manifest.get("conversion") or {}).get("image_input")
        self.input = artifact.inputs[0].name
        remote_art = transport.push(Path(artifact.path))
        args = session_args(artifact, f"{remote_art}/{MODEL}", compute_units)
        self.session = WorkerSession(transport, Path(__file__).with_name(HANDLER_NAME), "open_model", args,
                                     what=f"Core ML on {getattr(transport, 'host', 'this Mac')}",
                                     open_timeout=open_timeout, infer_timeout=infer_timeout)

    def infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self.session.infer({self.input: raw_pixels(np.array(feeds[self.input], copy=True), self.image)})

    def close(self) -> None:
        if getattr(self, "session", None) is not None:
            self.session.close()
            self.session = None  # type: ignore[assignment]
