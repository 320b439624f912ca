"""Route/preset alternatives as data, and the one-layer-quantized Q/DQ variants the ranking is built on."""

from __future__ import annotations

import numpy as np
import pytest

from edgeconv.core.errors import ConversionError
from edgeconv.quant.routes import ROUTES, alternatives, search_routes


def test_alternatives_skip_the_current_route_and_fill_the_budget() -> None:
    names = [a.name for a in alternatives("openvino", {"preset": "mixed"}, budget_points=0.5)]
    assert names == ["nncf-default", "no-fast-bias-correction", "accuracy-control"]
    ac = next(a for a in alternatives("openvino", {}, 0.5) if a.name == "accuracy-control")
    assert ac.options == {"max_drop": 0.005}
    assert "accuracy-control" not in [a.name for a in alternatives("openvino", {}, None)]
    assert [a.name for a in alternatives("tflite", {})][-1] == "dynamic-range"
    assert set(ROUTES) >= {"onnxruntime", "tensorrt", "openvino", "tflite", "ncnn"}


def test_search_routes_records_every_attempt() -> None:
    seen = []

    def build(options):
        seen.append(options)
        if options.get("calib_method") == "percentile":
            raise ConversionError("percentile failed")
        return "art", (-0.2 if options.get("calib_method") == "entropy" else -2.0)

    out = search_routes(build, "onnxruntime", 0.5, current={"calib_method": "minmax"})
    assert [a.name for a in out] == ["percentile", "entropy"] and out[-1].passed
    assert out[0].error and "percentile failed" in out[0].error and out[0].delta is None
    everything = search_routes(build, "onnxruntime", 0.5, current={"calib_method": "minmax"}, stop_at_first=False)
    assert len(everything) == 3


def test_one_layer_variants(pattern, tmp_path) -> None:
    import onnx
    import onnxruntime as ort

    from edgeconv.calibration.stats import compute_stats
    from edgeconv.quant.qdq import Variants, full_qdq

    prep, cal, _ = pattern("concat")
    ref = prep.reference
    q = full_qdq(ref.onnx_path, compute_stats(ref.onnx_path, ref.sha256, cal, "minmax"), tmp_path / "q.onnx")
    v = Variants(ref.onnx_path, q)
    assert "/inner/Concat" in v.quantized_nodes()
    x = {"images": next(iter(cal.feeds()))["images"]}
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL

    def run(model):
        return ort.InferenceSession(model, so, providers=["CPUExecutionProvider"]).run(None, x)[0]

    base = run(str(ref.onnx_path))
    np.testing.assert_array_equal(run(v.only([])), base)
    only_concat = onnx.load_from_string(v.only(["/inner/Concat"]))
    qnodes = [n for n in only_concat.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    assert qnodes and all(not n.input[0].startswith("inner.") for n in qnodes)  # activations only: no weights
    got = run(v.only(["/inner/Concat"]))
    score_err = np.abs(got[..., 4:] - base[..., 4:]).mean()
    assert score_err > 0.05  # the concat's one scale rounds the scores: the damage the ranking measures
    assert np.abs(run(v.only(["/inner/score/Conv"]))[..., 4:] - base[..., 4:]).mean() < score_err / 10


def test_rank_layers_needs_feeds(pattern) -> None:
    from edgeconv.calibration.stats import compute_stats
    from edgeconv.core.errors import ConfigError
    from edgeconv.quant import rank_layers

    prep, cal, _ = pattern("concat")
    ref = prep.reference
    stats = compute_stats(ref.onnx_path, ref.sha256, cal, "minmax")
    with pytest.raises(ConfigError):
        rank_layers(ref.onnx_path, [], stats)
    with pytest.raises(ConfigError):
        rank_layers(ref.onnx_path, cal.feeds(), stats, method="magic")
    drift = rank_layers(ref.onnx_path, cal.feeds(), stats, method="drift")
    node, _, score = drift[0]
    assert node == drift[0].node == "/inner/Concat" and score > 0
