"""ONNX Runtime fp16: a Constant node that must stay float (a Resize's scales) costs no Cast at run time."""

from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from onnx import TensorProto, helper  # noqa: E402

from edgeconv.targets.onnxruntime.convert import constants_to_initializers  # noqa: E402


def _resize_model() -> onnx.ModelProto:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 4, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 8, 8])
    scales = helper.make_node("Constant", [], ["scales"],
                              value=helper.make_tensor("s", TensorProto.FLOAT, [4], [1, 1, 2, 2]))
    w = helper.make_tensor("w", TensorProto.FLOAT, [2, 2, 1, 1], np.eye(2, dtype=np.float32).ravel().tolist())
    nodes = [scales, helper.make_node("Conv", ["x", "w"], ["c"]),
             helper.make_node("Resize", ["c", "", "scales"], ["y"], mode="nearest")]
    g = helper.make_graph(nodes, "g", [x], [y], [w],
                          value_info=[helper.make_tensor_value_info("scales", TensorProto.FLOAT, [4])])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def test_constant_scales_stay_float_without_a_cast() -> None:
    from onnxruntime.transformers.float16 import convert_float_to_float16

    plain = convert_float_to_float16(_resize_model(), keep_io_types=True)
    assert any(n.op_type == "Cast" and "scales" in n.input[0] for n in plain.graph.node)  # what the fix removes
    fixed = convert_float_to_float16(constants_to_initializers(_resize_model()), keep_io_types=True)
    assert not any(n.op_type == "Constant" for n in fixed.graph.node)
    assert [n.name for n in fixed.graph.node if n.op_type == "Cast"] == ["graph_input_cast0", "graph_output_cast0"]
    (s,) = [i for i in fixed.graph.initializer if i.name == "scales"]
    assert s.data_type == TensorProto.FLOAT
    x = np.random.default_rng(0).random((1, 2, 4, 4), dtype=np.float32)
    sess = ort.InferenceSession(fixed.SerializeToString(), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(sess.run(None, {"x": x})[0], x.repeat(2, 2).repeat(2, 3), atol=1e-3)


def _conv_model() -> onnx.ModelProto:
    rng = np.random.default_rng(1)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 8, 8])
    w = helper.make_tensor("w", TensorProto.FLOAT, [8, 3, 3, 3], rng.standard_normal(216).astype(np.float32).tolist())
    big = helper.make_tensor("b", TensorProto.FLOAT, [8], [1e6] + [0.5] * 7)  # under MIN_HALF_ELEMENTS: stays float
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["y"], pads=[1, 1, 1, 1], name="conv")]
    g = helper.make_graph(nodes, "g", [x], [y], [w, big])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def test_half_weights_store_fp16_and_run_float_kernels(tmp_path) -> None:
    from edgeconv.targets.onnxruntime.convert import half_weights

    ref = _conv_model()
    model, n = half_weights(_conv_model())
    assert n == 1
    types = {i.name: i.data_type for i in model.graph.initializer}
    assert types == {"w__fp16": TensorProto.FLOAT16, "b": TensorProto.FLOAT}
    assert [n.op_type for n in model.graph.node] == ["Cast", "Conv"]
    x = np.random.default_rng(0).random((1, 3, 8, 8), dtype=np.float32)
    so = ort.SessionOptions()
    so.optimized_model_filepath = str(tmp_path / "opt.onnx")
    got = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"]).run(None, {"x": x})
    want = ort.InferenceSession(ref.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    np.testing.assert_allclose(got[0], want[0], rtol=2e-3, atol=2e-3)  # half weights, float arithmetic
    # ORT folds the weight's Cast at load: the graph it runs has no Cast left (no per-call cost)
    assert not any(n.op_type == "Cast" for n in onnx.load(str(tmp_path / "opt.onnx")).graph.node)


def test_half_weights_leave_a_kept_nodes_weights_float() -> None:
    from edgeconv.targets.onnxruntime.convert import half_weights

    model, n = half_weights(_conv_model(), ["conv"])
    assert n == 0 and all(i.data_type == TensorProto.FLOAT for i in model.graph.initializer)


@pytest.mark.parametrize(("value", "providers", "device", "machine", "want"), [
    ("auto", ["CPUExecutionProvider"], None, "x86_64", "float"),
    ("auto", ["CUDAExecutionProvider", "CPUExecutionProvider"], None, "x86_64", "half"),
    ("auto", None, None, "aarch64", "half"),
    ("auto", None, "board.toml", "x86_64", "half"),
    ("half", None, None, "x86_64", "half"),
    ("float", ["CUDAExecutionProvider"], None, "aarch64", "float"),
])
def test_fp16_compute_resolution(value, providers, device, machine, want) -> None:
    from edgeconv.targets.onnxruntime.convert import resolve_fp16_compute

    got, why = resolve_fp16_compute(value, providers, device, machine)
    assert got == want and why
