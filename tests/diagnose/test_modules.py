"""ONNX node → PyTorch module names from exporter metadata, legacy node names, weight names and a re-export."""

from __future__ import annotations

import pytest

from edgeconv.diagnose.modules import legacy_module, module_map, scope_module


def test_name_sources() -> None:
    assert scope_module(["", "inner", "inner.backbone", "inner.backbone.0", "conv2d_3"]) == "backbone.0"
    assert scope_module(["", "add"]) == ""  # the model's own forward
    assert legacy_module("/inner/backbone.0/conv/Conv") == "backbone.0.conv"
    assert legacy_module("/inner/Add") == ""
    assert legacy_module("node_Conv_12") is None


def test_module_map_from_metadata_weights_and_upstream(tmp_path) -> None:
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.ones((4, 3, 1, 1), np.float32), "inner.head.conv.weight")
    conv = helper.make_node("Conv", ["x", "inner.head.conv.weight"], ["c"], name="node_Conv_1")
    act = helper.make_node("Relu", ["c"], ["r"], name="node_relu")
    out = helper.make_node("Sigmoid", ["r"], ["y"], name="node_sigmoid")
    p = out.metadata_props.add()
    p.key, p.value = "pkg.torch.onnx.name_scopes", "['', 'inner', 'inner.post', 'sigmoid']"
    g = helper.make_graph([conv, act, out], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 2, 2])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 2, 2])], [w])
    path = tmp_path / "m.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    m = module_map(path, reexport=False)
    assert (m["node_Conv_1"].module, m["node_Conv_1"].source) == ("head.conv", "weight")
    assert (m["node_sigmoid"].module, m["node_sigmoid"].source) == ("post", "metadata")
    assert m["node_relu"].label() == "head.conv (after)"


def test_reexport_names_nodes_without_weights() -> None:
    pytest.importorskip("torch", reason="the re-export needs torch")
    from pathlib import Path

    from edgeconv.diagnose.modules import reference_module_map
    from edgeconv.pipeline import prepare

    fx = Path(__file__).resolve().parents[1] / "fixtures" / "int8_patterns.py"
    # A dynamo reference: onnxsim stripped its scopes, so weightless nodes are named by the re-export.
    prep = prepare(f"{fx}:build_hostile", inputs=["images:1x3x32x32"], exporters=("dynamo",))
    m = reference_module_map(prep.reference)
    add = next(v for k, v in m.items() if k.startswith("node_add"))
    assert (add.module, add.source) == ("stage3", "reexport")
    assert {v.module for v in m.values() if v.source == "weight"} >= {"stage1.conv", "stage4.conv", "head"}
    # The default (legacy) reference names every node by its scope, weightless ones included.
    legacy = reference_module_map(prepare(f"{fx}:build_hostile", inputs=["images:1x3x32x32"]).reference)
    assert {v.source for v in legacy.values()} == {"legacy-name"}
    assert {v.module for v in legacy.values()} >= {"stage1.conv", "stage3", "stage4.conv", "head"}
