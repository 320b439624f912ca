"""ncnn INT8 ``--keep-fp32``: patterns matched on the reference ONNX (node names, module scopes) keep the ncnn layers
computing those nodes in float — really float in the .param/.bin — and the outlier pattern's drift disappears; a
pattern no ncnn layer computes is a loud error."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("ncnn", reason="ncnn is not installed (pip install 'edgeconv[ncnn]')")
pytest.importorskip("pnnx", reason="pnnx is not installed (pip install 'edgeconv[ncnn]')")
pytest.importorskip("onnxruntime", reason="onnxruntime runs the reference")

from edgeconv.core.errors import ConfigError  # noqa: E402
from edgeconv.quant.fallback import PERMISSIVE  # noqa: E402
from edgeconv.targets.ncnn import ncnnfile  # noqa: E402

BUDGET = 0.5


def _profile() -> Any:
    from edgeconv.plan import with_tolerances
    from edgeconv.profiles import load_profile

    return with_tolerances(load_profile("ncnn"), {"int8": dict(PERMISSIVE)})  # an attempt over budget keeps its delta


def _convert(pattern: Any, out: Path, keep: tuple[str, ...] = ()) -> Any:
    from edgeconv.pipeline import convert_reference

    prep, cal, ev = pattern("outlier")
    return convert_reference(prep, _profile(), out=out, precision="int8", calibration=cal, evaluator=ev,
                             keep_fp32=keep, use_cache=False)


def _conv2_layer(art: Any) -> ncnnfile.Layer:
    """The ncnn layer computing the culprit conv (the 1x1 conv reading the spiky tensor)."""
    model = ncnnfile.load(art.file("model"), art.file("weights"))
    (la,) = [la for la in model.layers if la.type == "Convolution" and la.pint(1) == 1]
    return la


@pytest.fixture(scope="module")
def baseline(pattern: Any, tmp_path_factory: pytest.TempPathFactory) -> Any:
    return _convert(pattern, tmp_path_factory.mktemp("ncnn-keep") / "base")


def test_outlier_pattern_is_over_budget_on_ncnn_int8(baseline: Any) -> None:
    assert baseline.manifest["verification"]["task"]["delta"] < -10 * BUDGET
    la = _conv2_layer(baseline)
    assert la.pint(8) == 2 and la.weights[0].data.dtype.name == "int8"


@pytest.mark.parametrize("keep", ["/inner/conv2/Conv", "inner/conv2"], ids=["onnx-node", "module-scope"])
def test_keep_fp32_by_reference_name_keeps_the_ncnn_layer_float(pattern: Any, baseline: Any, tmp_path: Path,
                                                                keep: str) -> None:
    art = _convert(pattern, tmp_path / "kept", (keep,))
    la = _conv2_layer(art)
    assert 8 not in la.params  # no int8_scale_term: ncnn runs it in fp32
    assert la.weights[0].data.dtype.name == "float32" and len(la.weights) == 2  # weights + bias, no scales
    others = [x for x in ncnnfile.load(art.file("model"), art.file("weights")).layers
              if x.type in ("Convolution", "InnerProduct") and x.name != la.name]
    assert others and all(x.pint(8) for x in others)  # only the kept layer left int8
    rec = art.manifest["conversion"]["int8"]
    assert rec["keep_fp32"]["patterns"][keep] == {"onnx": ["/inner/conv2/Conv"], "ncnn": [la.name]}
    assert la.name in rec["kept_fp32"] and rec["layers_int8"] == len(others)
    delta = art.manifest["verification"]["task"]["delta"]
    assert delta >= -BUDGET > baseline.manifest["verification"]["task"]["delta"]


def test_node_map_and_float_layers_are_recorded(baseline: Any) -> None:
    conv = baseline.manifest["conversion"]
    layers = conv["node_layers"]
    assert layers["/inner/conv1/Conv"] == layers["/inner/Relu"]  # conv + ReLU fused into one ncnn layer
    assert layers["/inner/conv2/Conv"] == _conv2_layer(baseline).name
    assert layers["/inner/Add"] != layers["/inner/Relu"]  # the sum is told apart from its equal-valued operand
    # nodes ncnn computes in float anyway are named so the float-fallback search does not spend attempts on them
    assert "/inner/Add" in conv["float_layers"] and "/inner/conv2/Conv" not in conv["float_layers"]


def test_keep_pattern_no_ncnn_layer_computes_is_a_config_error(pattern: Any, tmp_path: Path, monkeypatch) -> None:
    from edgeconv.targets.ncnn import layermap

    real = layermap.node_and_tensor_map

    def without_conv2(*a: Any, **k: Any) -> tuple[dict[str, str], dict[str, str]]:
        nodes, tensors = real(*a, **k)
        return {n: la for n, la in nodes.items() if n != "/inner/conv2/Conv"}, tensors

    monkeypatch.setattr(layermap, "node_and_tensor_map", without_conv2)
    with pytest.raises(ConfigError, match=r"'/inner/conv2/Conv'.*no ncnn layer computes.*conv_") as e:
        _convert(pattern, tmp_path / "bad", ("/inner/conv2/Conv",))
    assert "ncnn layers:" in e.value.message


def test_keep_layers_names_pattern_and_layers(tmp_path: Path) -> None:
    pytest.importorskip("onnx", reason="the keep matcher reads the reference graph")
    import onnx
    from onnx import TensorProto, helper

    from edgeconv.targets.ncnn.layermap import keep_layers

    g = helper.make_graph([helper.make_node("Relu", ["x"], ["y"], name="/a/Relu"),
                           helper.make_node("Neg", ["y"], ["z"], name="/b/Neg")], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2])],
                          [helper.make_tensor_value_info("z", TensorProto.FLOAT, [1, 2])])
    p = tmp_path / "g.onnx"
    onnx.save(helper.make_model(g), str(p))
    kept, rec = keep_layers(p, ("a",), {"/a/Relu": "relu_0"}, ["relu_0", "neg_1"])
    assert kept == {"relu_0"} and rec == {"a": {"onnx": ["/a/Relu"], "ncnn": ["relu_0"]}}
    with pytest.raises(ConfigError, match=r"'b' matches reference node\(s\) /b/Neg .*relu_0, neg_1"):
        keep_layers(p, ("b",), {"/a/Relu": "relu_0"}, ["relu_0", "neg_1"])


def test_diagnose_map_of_an_int8_artifact_without_a_recorded_map(pattern: Any, baseline: Any) -> None:
    """An int8 artifact without ``node_layers`` is mapped on its dequantized twin, to the same layers."""
    import copy

    from edgeconv.core.artifact import Artifact
    from edgeconv.diagnose.native import ncnn_layer_map

    manifest = copy.deepcopy(baseline.manifest)
    recorded = manifest["conversion"].pop("node_layers")
    _, cal, _ = pattern("outlier")
    got = ncnn_layer_map(Artifact(baseline.path, manifest), next(iter(cal.feeds())))
    for node in ("/inner/conv1/Conv", "/inner/conv2/Conv", "/inner/fc/Gemm"):
        assert got[node] == recorded[node]
