"""MNN names operators after their node's first output tensor (a Gemm becomes ``<tensor>__matmul_converted``),
while ``--keep-fp32`` and the INT8 float-fallback search speak reference node names: on Yolo-FastestV2 every
fallback attempt that kept a non-convolution node (Add, Concat, Sigmoid) failed with "matches no MNN operator"."""

from __future__ import annotations

import pytest

from edgeconv.core.errors import ConfigError
from edgeconv.targets.mnn.convert import _match_ops

OPS = [{"name": "getitem", "type": "Convolution [ DT_INT8 ] "}, {"name": "add", "type": "BinaryOp [ DT_INT8 ] "},
       {"name": "output__matmul_converted_raster_0", "type": "Int8ToFloat"},
       {"name": "output__matmul_converted", "type": "Convolution [ DT_INT8 ] "}]
NODES = {"node_Conv_179": "getitem", "node_add": "add", "node_linear": "output", "node_sigmoid": "sig"}


def test_reference_node_names_map_to_the_mnn_operators_computing_them() -> None:
    assert _match_ops(OPS, ("node_Conv_179", "node_linear"), NODES) == ["getitem", "output__matmul_converted"]
    assert _match_ops(OPS, ("node_Conv_*",), NODES) == ["getitem"]
    assert _match_ops(OPS, ("node_add",), NODES) == []  # only convolutions are skipped by name


def test_a_node_mnn_does_not_quantize_is_nothing_to_skip_not_an_error() -> None:
    assert _match_ops(OPS, ("node_sigmoid",), NODES) == []


def test_a_pattern_matching_nothing_anywhere_is_still_a_config_error() -> None:
    with pytest.raises(ConfigError, match="matches no MNN operator"):
        _match_ops(OPS, ("no_such_layer",), NODES)


def test_op_types_are_onnx_or_mnn_types() -> None:
    """``--keep-fp32 op:Conv`` means the reference graph's Conv nodes everywhere; on MNN, the Convolutions that
    compute them (MNN's own ``op:Convolution`` works too). An ONNX type MNN does not quantize is nothing to skip."""
    types = {"node_Conv_179": "Conv", "node_add": "Add", "node_linear": "Gemm", "node_sigmoid": "Sigmoid"}
    assert _match_ops(OPS, ("op:Conv",), NODES, types) == ["getitem"]
    assert _match_ops(OPS, ("op:Convolution",), NODES, types) == ["getitem", "output__matmul_converted"]
    assert _match_ops(OPS, ("op:Sigmoid",), NODES, types) == []
    with pytest.raises(ConfigError, match="matches no MNN operator"):
        _match_ops(OPS, ("op:Conv",), NODES)  # without the reference's types there is nothing to translate
