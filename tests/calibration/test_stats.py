"""Activation statistics: methods differ where they should, are cached, deterministic and ORT-readable."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnxruntime", reason="statistics are collected with ONNX Runtime's calibrators")

from edgeconv.calibration.dataset import CalibrationSet  # noqa: E402
from edgeconv.calibration.preprocess import Preprocess  # noqa: E402
from edgeconv.calibration.stats import compute_stats, entropy_threshold  # noqa: E402


@pytest.fixture(scope="module")
def long_tail(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """y = Relu(x * 2): fed Laplace data with rare huge outliers, the textbook case where KL clips the range."""
    import onnx
    from onnx import TensorProto, helper

    d = tmp_path_factory.mktemp("longtail")
    g = helper.make_graph(
        [helper.make_node("Mul", ["x", "two"], ["m"], name="mul"), helper.make_node("Relu", ["m"], ["y"], name="relu")],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 32, 32])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 32, 32])],
        [helper.make_tensor("two", TensorProto.FLOAT, [], [2.0])])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, d / "m.onnx")
    data = d / "data"
    data.mkdir()
    rng = np.random.default_rng(0)
    for i in range(24):
        x = rng.laplace(0, 1, (4, 32, 32)).astype(np.float32)
        x.flat[rng.integers(0, x.size, 2)] = rng.choice([-1, 1], 2) * rng.uniform(40, 80, 2)
        np.save(data / f"{i:03d}.npy", x)
    return d / "m.onnx", data


def calib(data: Path) -> CalibrationSet:
    return CalibrationSet(data, Preprocess(size=(32, 32)), "x", (1, 4, 32, 32), size=None)


def test_entropy_and_percentile_clip_long_tails(long_tail: tuple[Path, Path]) -> None:
    onnx_path, data = long_tail
    r = {m: compute_stats(onnx_path, "g", calib(data), m, p, use_cache=False).ranges for m, p in
         (("minmax", None), ("entropy", None), ("percentile", {"percentile": 99.9}))}
    mm, en, pc = r["minmax"]["m"], r["entropy"]["m"], r["percentile"]["m"]
    assert mm[1] > 70 and mm[0] < -70
    assert en[1] < mm[1] / 3 and en[0] > mm[0] / 3, (mm, en)  # entropy is real: not the minmax range
    assert pc[1] < mm[1] / 3, (mm, pc)
    # clipped to what was observed: the post-ReLU tensor does not get a negative half
    assert r["entropy"]["y"][0] >= 0.0 and r["minmax"]["y"][0] >= 0.0


def test_entropy_threshold_matches_ort_on_a_smooth_histogram() -> None:
    from onnxruntime.quantization.calibrate import HistogramCollector

    rng = np.random.default_rng(1)
    x = np.concatenate([rng.standard_normal(400_000), rng.laplace(0, 3, 4000)]).astype(np.float32)
    col = HistogramCollector("entropy", False, 512, 128, 99.99, "same")
    col.collect_value({"t": x})
    hist, edges = col.histogram_dict["t"][:2]
    ort_lo, ort_hi = col.get_entropy_threshold(col.histogram_dict["t"], 128)
    # ORT's own semantics (q spread over empty bins, truncated to integers): our vectorised search finds its window
    lo, hi = entropy_threshold(hist, edges, 128, ort_compat=True)
    width = float(edges[1] - edges[0])
    assert abs(hi - float(ort_hi)) <= width and abs(lo - float(ort_lo)) <= width, (lo, hi, ort_lo, ort_hi)
    # default (MXNet/TensorRT semantics: q is 0 where p is 0) still clips the tail
    lo2, hi2 = entropy_threshold(hist, edges, 128)
    assert 0 < hi2 < float(edges[-1]) * 0.8 and lo2 < 0


def test_stats_cached_deterministic_and_ort_readable(long_tail: tuple[Path, Path]) -> None:
    from onnxruntime.quantization import CalibrationMethod
    from onnxruntime.quantization.calibrate import load_tensors_data

    onnx_path, data = long_tail
    a = compute_stats(onnx_path, "g", calib(data), "minmax", use_cache=False)
    b = compute_stats(onnx_path, "g", calib(data), "minmax", use_cache=True)
    c = compute_stats(onnx_path, "g", calib(data), "minmax", use_cache=True)
    assert a.ranges == b.ranges == c.ranges and a.key == b.key
    assert b.cache == "miss" and c.cache == "hit"
    assert c.input_stats and len(c.input_stats["mean"]) == 4
    td = load_tensors_data(c.ort_cache_path)
    assert td.calibration_method == CalibrationMethod.MinMax
    assert float(td["m"].range_value[1]) == pytest.approx(a.ranges["m"][1])
    other = compute_stats(onnx_path, "g", calib(data), "percentile", {"percentile": 99.9}, use_cache=True)
    assert other.key != c.key


def test_unknown_method(long_tail: tuple[Path, Path]) -> None:
    from edgeconv.core.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown calibration method"):
        compute_stats(long_tail[0], "g", calib(long_tail[1]), "kl-magic")
