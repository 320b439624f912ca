"""Feed edgeconv's calibration sample and preprocessing contract to MNN's quantization tool (quantized.out).

quantized.out reads a folder and preprocesses it itself, in one of two ways, and both are driven from here so that
what MNN calibrates on is what edgeconv's contract produces:

- ``images``: quantized.out decodes each image as RGBA, converts it to ``format``, bilinearly maps it onto
  ``width``×``height`` and computes ``(x - mean) * normal``.  Its resize is not the contract's (PIL, letterbox,
  centre crop), so the *geometric* part of the contract (decode, colour order, resize/letterbox/crop) is applied
  here and written as lossless PNGs already at the model's size — quantized.out's own mapping is then the identity —
  and the JSON config carries the *arithmetic* part: ``mean = m/scale`` and ``normal = scale/std`` for scale-first
  contracts (``(x*s - m)/σ = (x - m/s)·s/σ``), ``mean = m`` for normalize-first ones.  Each written image is checked
  through MNN's own ``CVImageProcess`` against the contract's tensor; the worst difference is recorded, and a
  sample that does not reproduce the contract falls back to ``tensors``.
- ``tensors``: one folder per sample holding ``<input>.txt`` (the preprocessed tensor, ``%.9g``: float32 values
  round-trip exactly) and ``input.json`` with its shape — exact by construction, for tensor (``.npy``) calibration
  sets, several inputs, or contracts MNN's image path cannot express.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from edgeconv.core.console import log, track
from edgeconv.core.errors import CalibrationError

MODES = ("auto", "images", "tensors")
EXACT = 1e-6  # relative to max(1, |x|): image samples must reproduce the contract to float rounding


def mnn_normalization(pp: Any) -> tuple[list[float], list[float]]:
    """quantized.out's ``mean``/``normal`` (``(x - mean) * normal``) equivalent to the contract's arithmetic."""
    channels = 1 if pp.color == "GRAY" else 3
    mean = list(pp.mean) if len(pp.mean) == channels else [float(pp.mean[0])] * channels
    std = list(pp.std) if len(pp.std) == channels else [float(pp.std[0])] * channels
    s = float(pp.scale)
    if pp.order == "scale-first":
        return [m / s for m in mean], [s / d for d in std]
    return [float(m) for m in mean], [s / d for d in std]


def images_possible(calib: Any, input_shape: tuple[int, ...], n_inputs: int) -> str | None:
    """Why the ``images`` mode cannot reproduce this calibration set (None: it can)."""
    pp = calib.preprocess
    if n_inputs != 1:
        return "the model has several inputs"
    if any(s.is_tensor for s in calib.samples):
        return "the calibration set holds tensors, not images"
    if pp.layout != "NCHW" or len(input_shape) != 4:
        return f"the contract's layout is {pp.layout} (quantized.out feeds the model's own layout)"
    if input_shape[1] != (1 if pp.color == "GRAY" else 3):
        return f"the input has {input_shape[1]} channels"
    if pp.dtype != "float32":
        return f"the contract's dtype is {pp.dtype}"
    return None


def _geometry(pp: Any) -> Any:
    """The contract with its arithmetic removed: the output is the resized uint8 image, as float, HWC."""
    channels = 1 if pp.color == "GRAY" else 3
    return replace(pp, scale=1.0, mean=(0.0,) * channels, std=(1.0,) * channels, order="scale-first",
                   layout="NHWC", dtype="float32")


def mnn_image_tensor(png: Path, pp: Any, mean: list[float], normal: list[float]) -> np.ndarray:
    """What quantized.out feeds the model for ``png``: MNN's own CVImageProcess with the tool's settings."""
    import MNN
    from PIL import Image

    with Image.open(png) as im:
        rgba = np.ascontiguousarray(np.asarray(im.convert("RGBA")))
    h, w = rgba.shape[:2]
    dest = {"RGB": MNN.CV_ImageFormat_RGB, "BGR": MNN.CV_ImageFormat_BGR, "GRAY": MNN.CV_ImageFormat_GRAY}[pp.color]
    c = 1 if pp.color == "GRAY" else 3
    proc = MNN.CVImageProcess({"sourceFormat": MNN.CV_ImageFormat_RGBA, "destFormat": dest,
                               "mean": tuple(mean) + (0.0,) * (4 - c), "normal": tuple(normal) + (1.0,) * (4 - c),
                               "filterType": MNN.CV_Filter_BILINEAL})
    th, tw = pp.size
    m = MNN.CVMatrix()  # quantized.out's mapping (Helper::preprocessInput, centre crop 1.0): identity at equal size
    m.setPolyToPoly([0.0, 0.0, 0.0, th - 1.0, tw - 1.0, 0.0, tw - 1.0, th - 1.0],
                    [0.0, 0.0, 0.0, h - 1.0, w - 1.0, 0.0, w - 1.0, h - 1.0])
    proc.setMatrix(m)
    t = MNN.Tensor((1, c, th, tw), MNN.Halide_Type_Float, np.zeros((1, c, th, tw), np.float32),
                   MNN.Tensor_DimensionType_Caffe)
    proc.convert(rgba, w, h, 0, t)
    return np.array(t.getNumpyData(), dtype=np.float32, copy=True)


def write_images(calib: Any, folder: Path, *, check: int = 8) -> dict[str, Any]:
    """Write the contract's resized images as PNGs; check the first ``check`` through MNN's own preprocessing."""
    from PIL import Image

    pp = calib.preprocess
    geo = _geometry(pp)
    mean, normal = mnn_normalization(pp)
    folder.mkdir(parents=True, exist_ok=True)
    written, skipped, worst = 0, 0, 0.0
    for i, sample in enumerate(track(calib.samples, "writing calibration images for MNN", total=len(calib))):
        try:
            img = pp.load(sample.path)
        except Exception as e:  # noqa: BLE001 - an undecodable file is skipped, as CalibrationSet.feeds() does
            log.warning("skipping unreadable calibration input %s (%s)", sample.path, type(e).__name__)
            skipped += 1
            continue
        u8 = geo.apply(img)[0]
        if np.any(u8 != np.round(u8)) or u8.min() < 0 or u8.max() > 255:
            raise CalibrationError("the contract's resize did not produce 8-bit pixels", hint="use calib_input=tensors")
        arr = u8.astype(np.uint8)
        if pp.color == "BGR":
            arr = arr[..., ::-1]  # PNGs are RGB; quantized.out converts RGBA → BGR (format = BGR)
        png = folder / f"{i:05d}.png"
        Image.fromarray(arr.squeeze(-1) if arr.shape[-1] == 1 else np.ascontiguousarray(arr)).save(png)
        if written < check:
            want = pp.apply(img)
            got = mnn_image_tensor(png, pp, mean, normal)
            worst = max(worst, float(np.abs(got - want).max() / max(1.0, float(np.abs(want).max()))))
        written += 1
    if written == 0:
        raise CalibrationError(f"none of the {len(calib)} calibration inputs could be read")
    h, w = pp.size
    return {"mode": "images", "written": written, "skipped": skipped, "checked": min(check, written),
            "contract_max_rel": worst,
            "config": {"format": pp.color, "mean": mean, "normal": normal, "width": w, "height": h}}


def write_tensors(calib: Any, folder: Path, input_names: list[str]) -> dict[str, Any]:
    """One folder per sample with ``<input>.txt`` + ``input.json`` (quantized.out's ``sequence`` input type)."""
    folder.mkdir(parents=True, exist_ok=True)
    written = 0
    for i, feed in enumerate(calib.feeds(progress="writing calibration tensors for MNN")):
        d = folder / f"{i:05d}"
        d.mkdir()
        for name in input_names:
            x = np.ascontiguousarray(feed[name], dtype=np.float32)
            x.tofile(str(d / f"{name}.txt"), sep=" ", format="%.9g")
        (d / "input.json").write_text(json.dumps({"inputs": [{"name": n, "shape": list(feed[n].shape)}
                                                             for n in input_names]}))
        written += 1
    return {"mode": "tensors", "written": written, "skipped": len(calib.skipped), "contract_max_rel": 0.0,
            "config": {"input_type": "sequence"}}


def read_tensor(folder: Path, name: str, shape: tuple[int, ...]) -> np.ndarray:
    """Read back one ``tensors``-mode sample the way quantized.out does (text → double → float32)."""
    vals = np.array((folder / f"{name}.txt").read_text().split(), dtype=np.float64)
    return vals.astype(np.float32).reshape(shape)


def quant_config(data: dict[str, Any], folder: Path, *, feature: str, weight: str, batch: int,
                 skip_ops: list[str], winograd: bool = True) -> dict[str, Any]:
    """The quantized.out JSON: data description from the contract (above) plus the quantization methods."""
    cfg: dict[str, Any] = dict(data["config"])
    cfg.update({"path": str(folder.resolve()) + "/", "used_sample_num": int(data["written"]),
                "feature_quantize_method": feature, "weight_quantize_method": weight, "quant_bits": 8,
                "feature_clamp_value": 127, "weight_clamp_value": 127,
                "batch_size": 1 if data["mode"] == "tensors" else int(batch), "debug": False})
    if skip_ops:
        cfg["skip_quant_op_names"] = list(skip_ops)
    if feature == "EMA":
        cfg["winogradOpt"] = bool(winograd)
    return cfg
