"""Activation statistics, computed once per (graph, preprocessing, data, method) and shared by every backend.

ONNX Runtime's own calibrators (minmax, entropy, percentile) do the collection (library first); the resulting
ranges are cached as JSON under the hash of everything that determines them, and read by the ORT QDQ quantizer,
the TensorRT calibration-cache writer and the ncnn table writer alike.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

from edgeconv.calibration.dataset import CalibrationSet
from edgeconv.core import cache
from edgeconv.core.console import status
from edgeconv.core.errors import ConfigError
from edgeconv.core.hashing import sha256_json
from edgeconv.core.lazy import require, version

METHODS = ("minmax", "entropy", "percentile")


def stats_key(reference_sha256: str, calib: CalibrationSet, method: str, params: dict[str, Any]) -> str:
    return sha256_json({"graph": reference_sha256, "calib": calib.key, "method": method, "params": params,
                        "ort": version("onnxruntime")})


def activation_ranges(onnx_path: Path, reference_sha256: str, calib: CalibrationSet, method: str = "minmax",
                      params: dict[str, Any] | None = None, use_cache: bool = True) -> dict[str, tuple[float, float]]:
    """{tensor name: (min, max)} for every float activation of the graph, via ORT's calibrators; cached."""
    if method not in METHODS:
        raise ConfigError(f"unknown calibration method '{method}'", hint=f"choose from {list(METHODS)}")
    params = dict(params or {})
    key = stats_key(reference_sha256, calib, method, params)
    hit = cache.lookup("calib-stats", key) if use_cache else None
    if hit is not None:
        data = json.loads((hit / "ranges.json").read_text())
        return {k: (float(v[0]), float(v[1])) for k, v in data["ranges"].items()}
    q = require("onnxruntime.quantization", "onnxruntime")
    from onnxruntime.quantization.calibrate import CalibrationDataReader, CalibrationMethod, create_calibrator

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = calib.feeds()

        def get_next(self) -> dict | None:
            return next(self.it, None)

    cm = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
          "percentile": CalibrationMethod.Percentile}[method]
    extra = {}
    if method == "entropy":
        extra = {"num_bins": params.get("num_bins", 2048), "num_quantized_bins": params.get("num_quantized_bins", 128)}
    elif method == "percentile":
        extra = {"num_bins": params.get("num_bins", 2048), "percentile": params.get("percentile", 99.999),
                 "symmetric": params.get("symmetric", False)}
    work = Path(tempfile.mkdtemp(prefix="edgeconv-calib-"))
    try:
        with status(f"collecting {method} statistics on {len(calib)} inputs"):
            calibrator = create_calibrator(str(onnx_path), [], augmented_model_path=str(work / "augmented.onnx"),
                                           calibrate_method=cm, use_external_data_format=False, extra_options=extra)
            calibrator.collect_data(Reader())
            tensors = calibrator.compute_data()
        ranges = {}
        for name, td in tensors.data.items():
            lo, hi = td.range_value
            ranges[name] = (float(lo), float(hi))
        del q
        out = work / "out"
        out.mkdir()
        (out / "ranges.json").write_text(json.dumps({"method": method, "params": params, "calib": calib.manifest(),
                                                     "ranges": ranges}, indent=1))
        if use_cache:
            cache.store("calib-stats", key, out)
        return ranges
    finally:
        shutil.rmtree(work, ignore_errors=True)
