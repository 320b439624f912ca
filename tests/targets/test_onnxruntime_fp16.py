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
