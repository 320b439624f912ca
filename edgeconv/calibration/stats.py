"""Activation statistics, computed once per (graph, preprocessing, data, method) and shared by every backend.

ONNX Runtime's calibrators do the collection (library first): ``MinMaxCalibrater`` for minmax and
``HistogramCalibrater``'s collector for entropy/percentile.  We drive them in small chunks of inputs, because ORT
keeps every intermediate activation of a ``collect_data`` call in memory (a whole 512-image pass would not fit).

Entropy: ORT's default (``num_bins=128 == num_quantized_bins``) has a single candidate window, so it returns the
min/max range — "entropy" silently equal to minmax.  We collect 2048-bin histograms and search the KL-optimal window
ourselves (same algorithm as ORT's ``get_entropy_threshold``, vectorised — ORT's pure-Python loop takes ~1.5 s per
tensor — and with float rather than truncated-integer expanded bins).  Entropy/percentile windows are symmetric
around 0 in ORT's histograms; we clip them to the observed min/max so a post-SiLU tensor does not waste half of the
uint8 range on values that never occur.

Results are cached as JSON (``ranges.json``: ours; ``ort_calibration.json``: ORT's own ``save_tensors_data``
format, passed to ``quantize_static(calibration_cache_path=...)`` so ORT never recalibrates) and read by the ORT QDQ
quantizer, the TensorRT calibration-cache writer and the ncnn table writer alike.
"""

from __future__ import annotations

import atexit
import contextlib
import io
import json
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgeconv.calibration.dataset import CalibrationSet
from edgeconv.core import cache
from edgeconv.core.console import log
from edgeconv.core.errors import CalibrationError, ConfigError
from edgeconv.core.hashing import sha256_json
from edgeconv.core.isolate import child_threads
from edgeconv.core.lazy import require, version

METHODS = ("minmax", "entropy", "percentile")
DEFAULT_PARAMS: dict[str, dict[str, Any]] = {
    "minmax": {},
    "entropy": {"num_bins": 2048, "num_quantized_bins": 255},
    "percentile": {"num_bins": 2048, "percentile": 99.999},
}
STATS_VERSION = 2  # bump when the collection changes what is computed


@dataclass
class ActivationStats:
    """Ranges of every float activation of one graph, plus where they are stored (cache folder)."""

    method: str
    params: dict[str, Any]
    ranges: dict[str, tuple[float, float]]
    key: str
    folder: Path | None = None
    input_stats: dict[str, Any] | None = None
    calibration: dict[str, Any] = field(default_factory=dict)
    cache: str = "miss"

    @property
    def ort_cache_path(self) -> Path | None:
        """ORT's ``save_tensors_data`` JSON, for ``quantize_static(calibration_cache_path=...)``."""
        return self.folder / "ort_calibration.json" if self.folder else None

    def to_json(self) -> dict[str, Any]:
        return {"stats_version": STATS_VERSION, "method": self.method, "params": self.params, "key": self.key,
                "calibration": self.calibration, "input_stats": self.input_stats,
                "ranges": {k: [v[0], v[1]] for k, v in sorted(self.ranges.items())}}


def resolve_params(method: str, params: dict[str, Any] | None) -> dict[str, Any]:
    if method not in METHODS:
        raise ConfigError(f"unknown calibration method '{method}'", hint=f"choose from {list(METHODS)}")
    return {**DEFAULT_PARAMS[method], **(params or {})}


def stats_key(reference_sha256: str, calib: CalibrationSet, method: str, params: dict[str, Any]) -> str:
    return sha256_json({"graph": reference_sha256, "calib": calib.key, "method": method, "params": params,
                        "ort": version("onnxruntime"), "v": STATS_VERSION})


# -- entropy (KL) -----------------------------------------------------------------------------------------------
def entropy_threshold(hist: np.ndarray, edges: np.ndarray, num_quantized_bins: int = 255, *,
                      ort_compat: bool = False) -> tuple[float, float]:
    """KL-optimal symmetric window of a histogram centred on 0 (ORT/TensorRT algorithm, vectorised per window).

    Candidate windows grow from ``num_quantized_bins`` bins around the zero bin to the whole histogram; for each,
    outliers are folded into the edge bins (p), p is merged into ``num_quantized_bins`` bins and expanded back over
    its non-empty bins (q), and the window with the smallest KL(p||q) wins.  As in MXNet/TensorRT, q is 0 where p
    is 0; ``ort_compat`` reproduces ORT's variant instead (q spread over empty bins, truncated to integers), which
    the tests use to check this implementation against ORT's ``get_entropy_threshold``.
    """
    from onnxruntime.quantization.quant_utils import smooth_distribution

    hist = np.asarray(hist, dtype=np.float64)
    n = hist.size
    zero = n // 2
    half_q = num_quantized_bins // 2
    if n <= num_quantized_bins or hist.sum() == 0:
        return float(edges[0]), float(edges[-1])
    csum = np.concatenate([[0.0], np.cumsum(hist)])
    best, best_i = np.inf, zero
    for i in range(half_q, zero + 1):
        start, end = zero - i, min(zero + i + 1, n)
        sliced = hist[start:end]
        p = sliced.copy()
        p[0] += csum[start]
        p[-1] += csum[n] - csum[end]
        merged = sliced.size // num_quantized_bins
        bounds = np.arange(num_quantized_bins) * merged
        qbins = np.add.reduceat(sliced, bounds)
        # reduceat's last bin already runs to the end of the window (remainder included), as ORT's code adds it
        nonzero = (p != 0).astype(np.float64)
        if ort_compat:  # remainder bins get no q mass; q truncated to integers
            full = num_quantized_bins * merged
            norms = np.add.reduceat(nonzero[:full], bounds)
            q = np.zeros_like(p)
            q[:full] = np.repeat(np.floor(np.where(norms > 0, qbins / np.maximum(norms, 1), 0.0)), merged)
        else:
            norms = np.add.reduceat(nonzero, bounds)
            idx = np.minimum(np.arange(sliced.size) // merged, num_quantized_bins - 1)
            q = np.where(norms[idx] > 0, qbins[idx] / np.maximum(norms[idx], 1), 0.0) * nonzero
        ps, qs = smooth_distribution(p), smooth_distribution(q)
        if ps is None or qs is None:
            continue
        ps, qs = ps / ps.sum(), qs / qs.sum()
        mask = ps > 0
        kl = float(np.sum(ps[mask] * np.log(ps[mask] / qs[mask])))
        if kl < best:
            best, best_i = kl, i
    start, end = zero - best_i, min(zero + best_i + 1, n)
    return float(edges[start]), float(edges[end])


# -- collection ---------------------------------------------------------------------------------------------------
def _chunks(it: Iterator[dict[str, np.ndarray]], n: int) -> Iterator[list[dict[str, np.ndarray]]]:
    chunk: list[dict[str, np.ndarray]] = []
    for x in it:
        chunk.append(x)
        if len(chunk) == n:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


class _ListReader:
    """A CalibrationDataReader over one chunk of feeds (ORT only needs ``get_next``)."""

    def __init__(self, items: Iterable[dict[str, np.ndarray]]) -> None:
        self.it = iter(items)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self.it, None)


def _collect(onnx_path: Path, calib: CalibrationSet, method: str, params: dict[str, Any],
             threads: int | None = None) -> dict[str, tuple[float, float]]:
    require("onnxruntime", "onnxruntime")
    from onnxruntime.quantization.calibrate import CalibrationMethod, create_calibrator

    work = Path(tempfile.mkdtemp(prefix="edgeconv-calib-"))
    quiet = contextlib.redirect_stdout(io.StringIO())  # ORT's histogram collector prints to stdout on every call
    try:
        if method == "minmax":
            cal = create_calibrator(str(onnx_path), [], augmented_model_path=str(work / "augmented.onnx"),
                                    calibrate_method=CalibrationMethod.MinMax)
            chunk = 32  # only ReduceMin/ReduceMax outputs are kept: chunks can be large
        else:
            cal = create_calibrator(str(onnx_path), [], augmented_model_path=str(work / "augmented.onnx"),
                                    calibrate_method=CalibrationMethod.Percentile,
                                    extra_options={"num_bins": int(params["num_bins"]), "symmetric": False,
                                                   "percentile": float(params.get("percentile", 99.999))})
            chunk = 4  # whole activations are kept per collect_data call
        # One thread unless asked (and always in a forked child: ORT's pools are not fork-safe), graph
        # optimizations on: the augmented graph's hundreds of small ReduceMin/ReduceMax nodes gain nothing from a
        # second thread but its spinning. YOLO11n 320, 675 reduced outputs, per image: 1 thread 38.9 ms CPU and
        # wall; 2 threads 72.4 ms CPU for 36.4 wall; ORT's calibrator default (optimizations off) 46 ms per thread.
        ort = require("onnxruntime", "onnxruntime")
        so = ort.SessionOptions()
        so.intra_op_num_threads = child_threads(threads) or 1
        so.inter_op_num_threads = 1
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        cal.infer_session = ort.InferenceSession(cal.augmented_model_path, so, providers=["CPUExecutionProvider"])
        feeds = calib.feeds(progress=f"calibrating ({method}, {len(calib)} inputs)")
        n = 0
        with quiet:
            for part in _chunks(feeds, chunk):
                cal.collect_data(_ListReader(part))
                n += len(part)
        if n == 0:
            raise CalibrationError(f"no calibration input could be read from {calib.root}")
        ranges: dict[str, tuple[float, float]] = {}
        if method == "minmax":
            for name, td in cal.compute_data().data.items():
                lo, hi = td.range_value
                ranges[name] = (float(np.min(lo)), float(np.max(hi)))
        elif method == "percentile":
            with quiet:
                data = cal.compute_data().data
            for name, td in data.items():
                lo, hi = td.range_value
                ranges[name] = (float(np.min(lo)), float(np.max(hi)))
        else:
            nq = int(params.get("num_quantized_bins", 255))
            for name, (hist, edges, tmin, tmax, _thr) in cal.collector.histogram_dict.items():
                lo, hi = entropy_threshold(hist, edges, nq)
                ranges[name] = (max(lo, float(tmin)), min(hi, float(tmax)))
        return ranges
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _write_ort_cache(path: Path, method: str, ranges: dict[str, tuple[float, float]]) -> None:
    """ORT's own calibration-cache JSON (``save_tensors_data``), keyed by the method ``quantize_static`` checks."""
    from onnxruntime.quantization.calibrate import CalibrationMethod, TensorData, TensorsData, save_tensors_data

    cm = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
          "percentile": CalibrationMethod.Percentile}[method]
    data = {k: TensorData(lowest=np.array(lo, dtype=np.float32), highest=np.array(hi, dtype=np.float32))
            for k, (lo, hi) in sorted(ranges.items())}
    save_tensors_data(TensorsData(cm, data), path)


def compute_stats(onnx_path: Path, reference_sha256: str, calib: CalibrationSet, method: str = "minmax",
                  params: dict[str, Any] | None = None, use_cache: bool = True,
                  threads: int | None = None) -> ActivationStats:
    """Activation ranges (and input statistics) for one (graph, data, preprocessing, method); cached on disk."""
    params = resolve_params(method, params)
    key = stats_key(reference_sha256, calib, method, params)
    hit = cache.lookup("calib-stats", key) if use_cache else None
    if hit is not None:
        data = json.loads((hit / "ranges.json").read_text())
        if data.get("input_stats") and calib.input_stats is None:
            calib.input_stats = data["input_stats"]
        return ActivationStats(method, params, {k: (float(v[0]), float(v[1])) for k, v in data["ranges"].items()},
                               key, hit, data.get("input_stats"), data.get("calibration", {}), cache="hit")
    ranges = _collect(Path(onnx_path), calib, method, params, threads)
    st = ActivationStats(method, params, ranges, key, None, calib.input_stats, calib.manifest())
    log.info("calibration statistics (%s) for %d tensors from %d inputs (%d skipped)", method, len(ranges),
             len(calib) - len(calib.skipped), len(calib.skipped))
    work = Path(tempfile.mkdtemp(prefix="edgeconv-stats-"))
    try:
        (work / "ranges.json").write_text(json.dumps(st.to_json(), indent=1))
        _write_ort_cache(work / "ort_calibration.json", method, ranges)
        stored = cache.store("calib-stats", key, work) if use_cache else None
        if stored is not None:
            st.folder = stored
            return st
        keep = Path(tempfile.mkdtemp(prefix="edgeconv-stats-keep-"))
        atexit.register(shutil.rmtree, keep, True)  # uncached statistics live as long as this process
        shutil.copytree(work, keep, dirs_exist_ok=True)
        st.folder = keep
        return st
    finally:
        shutil.rmtree(work, ignore_errors=True)


def activation_ranges(onnx_path: Path, reference_sha256: str, calib: CalibrationSet, method: str = "minmax",
                      params: dict[str, Any] | None = None, use_cache: bool = True) -> dict[str, tuple[float, float]]:
    """{tensor name: (min, max)} for every float activation of the graph; cached (see ``compute_stats``)."""
    return compute_stats(onnx_path, reference_sha256, calib, method, params, use_cache).ranges


# -- input statistics at evaluation time -----------------------------------------------------------------------------
def feed_stats(feeds: Iterable[dict[str, np.ndarray]], channel_axis: int = 1,
               input_name: str | None = None) -> dict[str, Any] | None:
    """Per-channel mean/std of a stream of feeds (the first input, or ``input_name``)."""
    from edgeconv.calibration.dataset import ChannelStats

    acc = ChannelStats(channel_axis)
    for f in feeds:
        x = f[input_name] if input_name else next(iter(f.values()))
        acc.update(np.asarray(x))
    return acc.result()


def input_stats_warning(calib_stats: dict[str, Any] | None, eval_feeds: Iterable[dict[str, np.ndarray]] | dict,
                        *, mean_sigmas: float = 0.5, std_ratio: float = 1.5) -> str | None:
    """A one-line warning when evaluation inputs clearly differ from what calibration saw, else None.

    ``calib_stats`` is ``manifest["calibration"]["input_stats"]``; ``eval_feeds`` an iterable of feeds (or already
    computed stats).  "Clearly": a channel mean moved by more than ``mean_sigmas`` calibration std, or a channel std
    changed by more than ``std_ratio``× — the signature of a different preprocessing (BGR vs RGB, /255 missing,
    another mean/std), which silently ruins INT8 ranges.
    """
    if not calib_stats:
        return None
    ev = eval_feeds if isinstance(eval_feeds, dict) else feed_stats(eval_feeds, calib_stats.get("channel_axis", 1))
    if not ev:
        return None
    cm, cs = np.asarray(calib_stats["mean"]), np.asarray(calib_stats["std"])
    em, es = np.asarray(ev["mean"]), np.asarray(ev["std"])
    if cm.shape != em.shape:
        return (f"evaluation inputs have {em.size} channels but calibration saw {cm.size}: the preprocessing "
                "differs from the calibration's")
    problems = []
    for c in range(cm.size):
        scale = max(cs[c], 1e-6)
        if abs(em[c] - cm[c]) > mean_sigmas * scale:
            problems.append(f"channel {c} mean {em[c]:.3g} vs {cm[c]:.3g}")
        ratio = (es[c] + 1e-9) / (cs[c] + 1e-9)
        if ratio > std_ratio or ratio < 1 / std_ratio:
            problems.append(f"channel {c} std {es[c]:.3g} vs {cs[c]:.3g}")
    if not problems:
        return None
    return ("evaluation inputs differ clearly from the calibration inputs (" + "; ".join(problems[:4]) +
            "): check that evaluation uses the same --preprocess as calibration")
