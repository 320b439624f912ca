"""diagnose names a deliberately mis-quantized layer on every backend that exposes intermediates: a Q/DQ ONNX with
one wrong scale (ONNX Runtime INT8, TensorRT's Q/DQ proxy), and OpenVINO / ncnn / TFLite INT8 artifacts of a model
whose stage 3 is hostile to per-tensor INT8 (one outlier in its input)."""

from __future__ import annotations

import json
import shutil

import pytest

from edgeconv.core.artifact import Artifact
from edgeconv.diagnose import diagnose


def _producer(onnx_path, tensor: str) -> str:
    import onnx

    return next(n.name for n in onnx.load(str(onnx_path)).graph.node if tensor in n.output)


def _injected(chains, int8_artifact, target: str, role: str, tmp_path):
    """A copy of the plain chain's INT8 artifact with the scale of stage 3's input (stage 2's output) x50."""
    import int8_patterns as patterns

    prep, _ = chains("chain")
    art = int8_artifact("chain", target)
    bad = tmp_path / "bad"
    shutil.copytree(art.path, bad)
    tensor = patterns.consumer_input(prep.reference.onnx_path, "inner.stage3.conv")
    f = Artifact.load(bad).file(role)
    patterns.inject_qdq_scale(f, f, tensor, 50.0)
    return prep, art, bad, tensor


@pytest.mark.parametrize(("target", "role"), [("onnxruntime", "model"), ("tensorrt", "proxy")])
def test_wrong_qdq_scale_is_named(chains, int8_artifact, feeds, tmp_path, target: str, role: str) -> None:
    prep, art, bad, tensor = _injected(chains, int8_artifact, target, role, tmp_path)
    d = diagnose(bad, feeds=feeds, module=prep.reference.module)
    top = d.culprits(1)[0]
    assert top.tensor == tensor and top.node == _producer(prep.reference.onnx_path, tensor)
    assert top.module.startswith("stage2"), top
    assert top.jump and d.jumps(1)[0].tensor == tensor  # also the first jump in graph order
    clean = diagnose(art.path, feeds=feeds, module=prep.reference.module)
    assert all(r.tensor != tensor for r in clean.culprits())
    assert clean.rows[-1].snr_db > top.snr_db + 10  # the untouched artifact keeps its outputs


def test_two_artifacts_compared_through_reference_names(chains, int8_artifact, feeds, tmp_path) -> None:
    prep, art, bad, tensor = _injected(chains, int8_artifact, "onnxruntime", "model", tmp_path)
    d = diagnose(art.path, bad, feeds=feeds, module=prep.reference.module)
    assert d.a == "onnxruntime-int8 (int8)" and d.b == "onnxruntime-int8 (bad)"
    assert d.culprits(1)[0].tensor == tensor
    assert set(d.fused) == {d.a, d.b} and d.fused[d.a]["cosine_worst"] > d.fused[d.b]["cosine_worst"]


@pytest.mark.parametrize("target", ["openvino", "ncnn"])
def test_hostile_layer_is_named(chains, int8_artifact, feeds, target: str) -> None:
    pytest.importorskip({"openvino": "openvino", "ncnn": "ncnn"}[target], reason=f"{target} not installed")
    prep, _ = chains("hostile")
    art = int8_artifact("hostile", target)
    d = diagnose(art.path, feeds=feeds, module=prep.reference.module)
    top = d.culprits(1)[0]
    assert top.module.startswith("stage3"), [(r.node, r.module, r.blame) for r in d.culprits()]
    assert d.fused[next(iter(d.fused))]["cosine_worst"] < 0.9  # the outlier really ruins this model's INT8
    if target == "ncnn":
        assert d.notes and "twin" in d.notes[0] and top.match_cosine > 0.98
    else:
        assert d.fused[next(iter(d.fused))]["tap_effect"] is not None


@pytest.mark.slow
def test_hostile_layer_is_named_tflite(chains, int8_artifact, feeds) -> None:
    pytest.importorskip("litert_torch", reason="litert-torch not installed")
    prep, _ = chains("hostile")
    d = diagnose(int8_artifact("hostile", "tflite").path, feeds=feeds, module=prep.reference.module)
    assert d.culprits(1)[0].module.startswith("stage3")


def test_plain_model_has_no_culprit_on_ncnn(chains, int8_artifact, feeds) -> None:
    pytest.importorskip("ncnn", reason="ncnn not installed")
    prep, _ = chains("chain")
    d = diagnose(int8_artifact("chain", "ncnn").path, feeds=feeds, module=prep.reference.module)
    assert d.matched["compared"] >= 5 and not any(r.blame >= 0.1 for r in d.rows)


def test_cli_json_and_plot(chains, int8_artifact, feeds, tmp_path) -> None:
    import numpy as np
    from click.testing import CliRunner

    from edgeconv.cli import main

    _, _, bad, tensor = _injected(chains, int8_artifact, "onnxruntime", "model", tmp_path)
    data = tmp_path / "data"
    data.mkdir()
    np.save(data / "x.npy", np.concatenate([f["images"] for f in feeds]))
    svg = tmp_path / "drift.svg"
    r = CliRunner().invoke(main, ["diagnose", str(bad), "--data", str(data), "--samples", "4", "--json",
                                  "--plot", str(svg)])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["schema"] == "edgeconv.diagnose/1" and out["culprits"][0]["tensor"] == tensor
    assert out["samples"] == 4 and len(out["layers"]) == out["matched"]["compared"]
    assert svg.read_text().startswith("<svg") and "polyline" in svg.read_text()
    r = CliRunner().invoke(main, ["diagnose", str(bad), "--data", str(data), "--samples", "4"])
    assert r.exit_code == 0 and "most to blame" in r.stdout and tensor in r.stdout


def test_ncnn_layer_map(chains, int8_artifact, feeds) -> None:
    pytest.importorskip("ncnn", reason="ncnn not installed")
    import onnx

    from edgeconv.diagnose.native import ncnn_layer_map

    prep, _ = chains("chain")
    art = int8_artifact("chain", "ncnn")
    layers = ncnn_layer_map(art, feeds[0])
    convs = [n.name for n in onnx.load(str(prep.reference.onnx_path)).graph.node if n.op_type == "Conv"]
    assert all(c in layers for c in convs)
    assert len({layers[c] for c in convs}) == len(convs)  # one ncnn layer per conv (+ its fused ReLU)
    ncnn_names = {line.split()[1] for line in art.file("model").read_text().splitlines()[2:]}
    assert {layers[c] for c in convs} <= ncnn_names
