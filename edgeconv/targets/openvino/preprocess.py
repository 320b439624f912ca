"""Embedding the preprocessing contract into the IR with OpenVINO's PrePostProcessor, and undoing it for checks.

Why embed: the deployed model then takes the raw decoded image (u8, NHWC, the camera's colour order) and does the
layout change, colour swap and scale/mean/std inside the graph, where the CPU plugin fuses it into the first
convolution; the application cannot get the contract wrong.  Resizing is *not* embedded: letterbox/crop decide how
boxes map back to the image, so it stays in the application (the raw image must already be the model's size).

Why an inverse: the harness feeds every runner float NCHW tensors (the reference's contract).  The runner maps them
back to raw pixels with :func:`to_raw`; when those are exact u8 values (real images) the deployed u8 model runs; when
not (random verification tensors) the runner runs the same graph with its input relaxed to f32, so the embedded
arithmetic is still what is verified (see ``runner.py``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edgeconv.calibration.preprocess import Preprocess
from edgeconv.core.errors import ConfigError
from edgeconv.core.lazy import require

GRID_TOL = 1e-3  # how far from an integer a recovered pixel may be and still count as an exact u8 value


def embed(model: Any, pre: Preprocess, input_name: str, *, raw_color: str | None = None) -> tuple[Any, dict[str, Any]]:
    """Return ``model`` with u8 NHWC ``raw_color`` input and the contract's arithmetic inside; plus manifest meta."""
    ov = require("openvino", "openvino")
    from openvino.preprocess import ColorFormat, PrePostProcessor

    if pre.layout != "NCHW":
        raise ConfigError("--embed-preprocess expects an NCHW model input", hint="the contract's layout must be NCHW")
    raw_color = (raw_color or pre.color).upper()
    if raw_color not in ("RGB", "BGR", "GRAY") or (raw_color == "GRAY") != (pre.color == "GRAY"):
        raise ConfigError(f"cannot embed a {raw_color} → {pre.color} colour conversion",
                          hint="set option embed_color to RGB or BGR (GRAY only for GRAY models)")
    if pre.scale == 0:
        raise ConfigError("preprocess scale must not be 0 to embed it")
    fmt = {"RGB": ColorFormat.RGB, "BGR": ColorFormat.BGR}
    ppp = PrePostProcessor(model)
    inp = ppp.input(input_name)
    inp.tensor().set_element_type(ov.Type.u8).set_layout(ov.Layout("NHWC"))
    if raw_color != "GRAY":
        inp.tensor().set_color_format(fmt[raw_color])
    inp.model().set_layout(ov.Layout("NCHW"))
    steps = inp.preprocess()
    steps.convert_element_type(ov.Type.f32)
    if raw_color != pre.color:
        steps.convert_color(fmt[pre.color])
    mean, std = [float(m) for m in pre.mean], [float(s) for s in pre.std]
    if pre.order == "scale-first":  # (x*scale - mean)/std
        steps.scale(1.0 / float(pre.scale)).mean(mean).scale(std)
    else:  # ((x - mean)/std)*scale
        steps.mean(mean).scale([s / float(pre.scale) for s in std])
    model = ppp.build()
    meta = {"embedded": True, "input": input_name, "raw_dtype": "uint8", "raw_layout": "NHWC", "raw_color": raw_color,
            "model_color": pre.color, "scale": float(pre.scale), "mean": mean, "std": std, "order": pre.order,
            "size": list(pre.size), "note": "resize is not embedded: feed images already at the model's size"}
    return model, meta


def to_raw(x: np.ndarray, meta: dict[str, Any]) -> np.ndarray:
    """Float NCHW model input → the float NHWC raw image (in ``raw_color`` order) the embedded graph maps onto it."""
    c = x.shape[1]
    mean = np.asarray(meta["mean"], np.float64)[:c].reshape(1, -1, 1, 1)
    std = np.asarray(meta["std"], np.float64)[:c].reshape(1, -1, 1, 1)
    x = x.astype(np.float64)
    raw = (x * std + mean) / meta["scale"] if meta["order"] == "scale-first" else x / meta["scale"] * std + mean
    if meta["raw_color"] != meta["model_color"]:
        raw = raw[:, ::-1]
    return np.ascontiguousarray(raw.transpose(0, 2, 3, 1))


def as_u8(raw: np.ndarray) -> np.ndarray | None:
    """The exact u8 image when ``raw`` lies on the pixel grid (a real image), else None."""
    r = np.rint(raw)
    if raw.size and (np.abs(raw - r).max() > GRID_TOL or r.min() < 0 or r.max() > 255):
        return None
    return r.astype(np.uint8)
