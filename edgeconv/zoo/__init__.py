"""Registry of the bundled demo models (``yolo``, ``centernet``, ``classifier``).

Why a registry of *descriptions* (strings + paths) rather than modules: the rest of edgeconv (CLI,
exporters, benchmarks) needs to know a model's input/output names, preprocessing and
post-processing without importing torch or building the network.  ``import edgeconv.zoo`` is
therefore cheap; ``load(name)`` is the only entry point that imports torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import nn

_HERE = Path(__file__).resolve().parent
WEIGHTS_DIR = _HERE / "weights"

def _calibration_root() -> Path:
    """The bundled calibration sample: package data (``edgeconv/_data/calibration``), so an installed wheel has it;
    in a checkout it is a symlink to the top-level ``calibration/`` folder users open and replace."""
    from importlib.resources import files

    return Path(str(files("edgeconv") / "_data" / "calibration"))


CALIBRATION_ROOT = _calibration_root()


def _preprocess(size: int) -> dict[str, Any]:
    return {
        "color": "RGB",
        "resize": "stretch",
        "size": [size, size],
        "scale": 1 / 255,
        "mean": [0.0, 0.0, 0.0],
        "std": [1.0, 1.0, 1.0],
        "layout": "NCHW",
        "dtype": "float32",
    }


@dataclass(frozen=True)
class BundledModel:
    """Everything needed to export, run and score a bundled model without importing it."""

    name: str
    factory: str  # "module:callable" returning an nn.Module (see edgeconv.bench.plugins.load_callable)
    weights: Path
    input_name: str
    input_shape: tuple[int, ...]
    output_names: tuple[str, ...]
    task: str  # "detection" | "classification"
    postprocess: str  # "module:callable" decoding raw outputs (dict name -> ndarray) to task results
    calibration_dir: Path
    preprocess: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)


BUNDLED: dict[str, BundledModel] = {
    "yolo": BundledModel(
        name="yolo",
        factory="edgeconv.zoo.yolo:build",
        weights=WEIGHTS_DIR / "yolo.pth",
        input_name="images",
        input_shape=(1, 3, 256, 256),
        output_names=("p3", "p4", "p5"),
        task="detection",
        postprocess="edgeconv.bench.detection:decode_yolo",
        calibration_dir=CALIBRATION_ROOT / "shapes",
        preprocess=_preprocess(256),
    ),
    "centernet": BundledModel(
        name="centernet",
        factory="edgeconv.zoo.centernet:build",
        weights=WEIGHTS_DIR / "centernet.pth",
        input_name="images",
        input_shape=(1, 3, 256, 256),
        output_names=("heatmap", "wh", "offset"),
        task="detection",
        postprocess="edgeconv.bench.detection:decode_centernet",
        calibration_dir=CALIBRATION_ROOT / "shapes",
        preprocess=_preprocess(256),
    ),
    "classifier": BundledModel(
        name="classifier",
        factory="edgeconv.zoo.classifier:build",
        weights=WEIGHTS_DIR / "classifier.pth",
        input_name="images",
        input_shape=(1, 3, 96, 96),
        output_names=("logits",),
        task="classification",
        postprocess="edgeconv.bench.metrics:softmax",
        calibration_dir=CALIBRATION_ROOT / "shapes-cls",
        preprocess=_preprocess(96),
    ),
}


def get(name: str) -> BundledModel:
    """Look up a bundled model description, with a helpful error listing the valid names."""
    try:
        return BUNDLED[name]
    except KeyError:
        raise KeyError(f"unknown bundled model {name!r}; available: {', '.join(sorted(BUNDLED))}") from None


def load(name: str, weights: str | Path | None = None) -> nn.Module:
    """Build bundled model ``name`` in eval mode with its committed (or the given) weights loaded."""
    import torch

    from edgeconv.bench.plugins import load_callable

    spec = get(name)
    model = load_callable(spec.factory)()
    state = torch.load(Path(weights) if weights is not None else spec.weights, map_location="cpu", weights_only=True)
    model.load_state_dict(state)
    return model.eval()


__all__ = ["BUNDLED", "CALIBRATION_ROOT", "WEIGHTS_DIR", "BundledModel", "get", "load"]
