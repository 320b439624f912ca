"""The pre-quantization lint flags each failure pattern by node and module, with the change that avoids it, and
stays quiet on a plain CNN."""

from __future__ import annotations

import json

import pytest

from edgeconv.lint import lint


def _stats(prep, cal):
    from edgeconv.calibration.stats import compute_stats

    return compute_stats(prep.reference.onnx_path, prep.reference.sha256, cal, "minmax")


def _rules(findings) -> dict[str, list]:
    out: dict[str, list] = {}
    for f in findings:
        out.setdefault(f.rule, []).append(f)
    return out


def test_whole_tensor_norm(pattern) -> None:
    prep, cal, _ = pattern("norm")
    found = _rules(lint(prep.reference.onnx_path, _stats(prep, cal), len(cal)))
    f = found["whole-tensor-norm"][0]
    assert {"/inner/ReduceMean", "/inner/Div"} <= set(f.nodes)
    # the keep set includes what the fallback search found necessary (the square and the eps add)
    assert {"/inner/conv1/Conv", "/inner/Mul", "/inner/Add", "/inner/Div"} <= set(f.keep_fp32)
    assert "conv1" in f.modules and "preprocessing" in f.suggestion
    assert "mixed-range-concat" not in found and "outlier-activation" not in found


def test_mixed_range_concat_with_and_without_statistics(pattern) -> None:
    prep, cal, _ = pattern("concat")
    with_stats = _rules(lint(prep.reference.onnx_path, _stats(prep, cal), len(cal)))
    f = with_stats["mixed-range-concat"][0]
    assert f.nodes == ["/inner/Concat"] and f.evidence["ratio"] >= 16 and f.evidence["at_output"]
    assert f.keep_fp32[0] == "/inner/Concat" and "/inner/Transpose" in f.keep_fp32
    structural = _rules(lint(prep.reference.onnx_path, None, None))
    assert structural["mixed-range-concat"][0].nodes == ["/inner/Concat"]
    decode = structural["decode-in-graph"][0]
    assert "/inner/Mul" in decode.nodes  # sigmoid * 256: box decoding after the last conv


def test_outlier_activation_from_feeds_and_from_percentile_statistics(pattern) -> None:
    from edgeconv.calibration.stats import compute_stats

    prep, cal, _ = pattern("outlier")
    ref = prep.reference
    found = _rules(lint(ref.onnx_path, _stats(prep, cal), len(cal), feeds=cal.feeds()))
    f = found["outlier-activation"][0]
    assert f.nodes == ["/inner/Add"] and {"/inner/Add", "/inner/conv2/Conv"} <= set(f.keep_fp32)
    assert f.evidence["ratio"] > 100
    pct = compute_stats(ref.onnx_path, ref.sha256, cal, "percentile", {"percentile": 99.9})
    again = _rules(lint(ref.onnx_path, _stats(prep, cal), len(cal), percentile_stats=pct))
    assert "/inner/Add" in {n for g in again["outlier-activation"] for n in g.nodes}


def test_tiny_calibration_and_plain_model(pattern) -> None:
    prep, _, _ = pattern("norm")
    assert _rules(lint(prep.reference.onnx_path, None, 64))["tiny-calibration"][0].evidence["calib_size"] == 64
    assert "tiny-calibration" not in _rules(lint(prep.reference.onnx_path, None, 300))
    plain, pcal, _ = pattern("chain")
    assert lint(plain.reference.onnx_path, _stats(plain, pcal), 300, feeds=pcal.feeds()) == []


def test_cli(pattern, tmp_path) -> None:
    from click.testing import CliRunner

    from edgeconv.cli import main

    prep, _, _ = pattern("concat")
    r = CliRunner().invoke(main, ["lint", str(prep.reference.onnx_path), "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["schema"] == "edgeconv.lint/1"
    assert {f["rule"] for f in out["findings"]} >= {"mixed-range-concat", "decode-in-graph"}
    r = CliRunner().invoke(main, ["lint", str(prep.reference.onnx_path)])
    assert r.exit_code == 0 and "--keep-fp32" in r.stdout


@pytest.mark.parametrize("rank", [3, 4])
def test_reduction_over_spatial_axes_is_not_whole_tensor(rank: int, tmp_path) -> None:
    """Global average pooling (ReduceMean over H, W) feeding a division is a classifier head, not a whole-tensor
    normalisation."""
    import onnx
    from onnx import TensorProto, helper

    shape = [1, 8, 16] if rank == 3 else [1, 8, 4, 4]
    axes = [2] if rank == 3 else [2, 3]
    g = helper.make_graph(
        [helper.make_node("ReduceMean", ["x"], ["m"], axes=axes, keepdims=1, name="gap"),
         helper.make_node("Div", ["x", "m"], ["y"], name="div")], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)])
    p = tmp_path / "m.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(p))
    assert lint(p) == []
    g.node[0].ClearField("attribute")  # no axes: every axis
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(p))
    assert [f.rule for f in lint(p)] == ["whole-tensor-norm"]
