"""Roofline: MACs and bytes from the ONNX graph (checked against hand counts), measured peaks, fractions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx", reason="roofline counts from the ONNX graph")
pytest.importorskip("onnxruntime", reason="the GEMM peak is measured with ONNX Runtime")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from edgeconv.bench import roofline  # noqa: E402


def _model(tmp_path: Path) -> Path:
    """x(1,3,16,16) -> Conv 3->8 k3 p1 -> depthwise Conv k3 p1 (group 8) -> ConvTranspose 8->4 k2 s2 ->
    Flatten -> Gemm (4096 -> 10) -> MatMul (10 -> 5)."""
    rng = np.random.default_rng(0)

    def w(name: str, *shape: int) -> onnx.TensorProto:
        return numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), name)

    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], name="conv", kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("Conv", ["c1", "w2"], ["c2"], name="dw", kernel_shape=[3, 3], pads=[1, 1, 1, 1], group=8),
        helper.make_node("ConvTranspose", ["c2", "w3"], ["c3"], name="up", kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Flatten", ["c3"], ["f"], name="flat"),
        helper.make_node("Gemm", ["f", "w4"], ["g"], name="fc", transB=1),
        helper.make_node("MatMul", ["g", "w5"], ["y"], name="mm"),
    ]
    graph = helper.make_graph(nodes, "t", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 5])],
                              [w("w1", 8, 3, 3, 3), w("w2", 8, 1, 3, 3), w("w3", 8, 4, 2, 2), w("w4", 10, 4096),
                               w("w5", 10, 5)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    p = tmp_path / "m.onnx"
    onnx.save(model, str(p))
    return p


def test_macs_and_bytes_match_hand_counts(tmp_path: Path) -> None:
    cost = roofline.model_cost(_model(tmp_path))
    by = {la["node"]: la for la in cost["layers"]}
    assert by["conv"]["macs"] == 8 * 16 * 16 * 3 * 3 * 3
    assert by["dw"]["macs"] == 8 * 16 * 16 * 1 * 3 * 3  # depthwise: one input channel per output
    assert by["up"]["macs"] == 8 * 16 * 16 * 4 * 2 * 2  # every input pixel scatters into Cout x k x k outputs
    assert by["fc"]["macs"] == 10 * 4096 and by["mm"]["macs"] == 5 * 10
    assert cost["macs"] == sum(la["macs"] for la in cost["layers"]) and cost["flops"] == 2 * cost["macs"]
    weights = 8 * 27 + 8 * 9 + 8 * 4 * 4 + 10 * 4096 + 50
    assert cost["weight_bytes"] == 4 * weights
    acts = 2 * (8 * 256 + 8 * 256 + 4 * 1024 + 4096 + 10) + 5  # intermediates written + read; output written
    assert cost["activation_bytes"] == 4 * acts
    int8 = roofline.model_cost(_model(tmp_path), "int8")
    assert int8["bytes"] * 4 == cost["bytes"] and int8["macs"] == cost["macs"]
    assert cost["layers"][0]["intensity"] <= cost["layers"][-1]["intensity"]  # lowest intensity first


def test_efficiency_against_a_given_peak(tmp_path: Path) -> None:
    cost = roofline.model_cost(_model(tmp_path))
    peak = {"gflops": {"fp32": 100.0, "int8": 400.0, "bf16": None}, "bandwidth_gbs": 20.0,
            "isa": {"FP16": False}, "threads": 1}
    e = roofline.efficiency(cost, 0.01, peak, "fp32")  # 10 us per inference
    assert e["gflops"] == pytest.approx(cost["flops"] / 1e-5 / 1e9, rel=1e-3)
    assert e["fraction_of_peak"] == pytest.approx(e["gflops"] / 100.0, rel=1e-3)
    assert e["bound"] == ("memory" if cost["intensity"] * 20.0 < 100.0 else "compute")
    assert e["attainable_gflops"] == pytest.approx(min(100.0, cost["intensity"] * 20.0), rel=1e-2)
    assert roofline.efficiency(cost, 0.01, peak, "int8")["peak_gflops"] == 400.0
    fp16 = roofline.efficiency(cost, 0.01, peak, "fp16")  # fp16 weights compute in fp32 on this CPU
    assert fp16["compute_precision"] == "fp32" and fp16["peak_gflops"] == 100.0
    bf16 = roofline.efficiency(cost, 0.01, peak, "bf16")  # no bf16 peak measured: fall back to fp32's
    assert bf16["peak_gflops"] == 100.0


def test_measured_peak_is_plausible() -> None:
    from edgeconv.core.env import isa_features

    peak = roofline.measure_peak(1, use_cache=False, n=256)
    assert peak["threads"] == 1 and peak["gflops"]["fp32"] > 0.5 and peak["bandwidth_gbs"] > 0.5
    assert peak["gflops"]["int8"] is None or peak["gflops"]["int8"] > 0.5
    assert (peak["gflops"]["bf16"] is not None) == bool(isa_features()["BF16"] and peak["by_runtime"]["bf16"]
                                                      and peak["by_runtime"]["bf16"]["openvino"])


def test_roofline_block_of_an_artifact(tiny_prepared, tmp_path: Path) -> None:
    from edgeconv.pipeline import convert_reference

    art = convert_reference(tiny_prepared, "onnxruntime", out=tmp_path / "a", precision="fp32", use_cache=False)
    peak = {"gflops": {"fp32": 50.0, "int8": None, "bf16": None}, "bandwidth_gbs": 10.0, "isa": {}, "threads": 1}
    block = roofline.roofline_block(art, 0.5, peak=peak)
    cost = roofline.model_cost(art.reference_onnx)
    assert block["macs"] == cost["macs"] > 0 and block["threads"] == 1
    assert block["fraction_of_fp32_peak"] == pytest.approx(cost["flops"] / 0.5e-3 / 1e9 / 50.0, rel=1e-3)
    assert block["lowest_intensity_layers"] and block["bound"] in ("memory", "compute")
