"""ONNX Runtime INT8 (the reference INT8 path): QDQ, shared statistics, determinism, keep-fp32, pipeline."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnxruntime", reason="the reference INT8 path is ONNX Runtime's quantize_static")

from edgeconv.calibration.dataset import CalibrationSet  # noqa: E402
from edgeconv.core.keep import graph_nodes, match  # noqa: E402
from edgeconv.pipeline import build_context  # noqa: E402
from edgeconv.profiles import load_profile  # noqa: E402
from edgeconv.targets.onnxruntime.int8 import output_nodes  # noqa: E402
from edgeconv.targets.onnxruntime.int8 import quantize_qdq as _quantize  # noqa: E402


def quantize_qdq(prepared, cal, out, *, options=None, keep_fp32=()):
    """Quantize through the target's own entry point, with a context built the way the pipeline builds it."""
    from edgeconv.core import cache

    opts = dict(options or {})
    with cache.disabled(not opts.pop("use_cache", True)):
        _, ctx = build_context(prepared, load_profile("onnxruntime"), "int8", calibration=cal, options=opts,
                               keep_fp32=tuple(keep_fp32))
        return _quantize(ctx, out)


def match_nodes(onnx_path, patterns):
    return [n for names in match(graph_nodes(onnx_path), patterns).values() for n in names]
from edgeconv.calibration.preprocess import Preprocess  # noqa: E402


@pytest.fixture(scope="module")
def cal(tiny_prepared, tiny_calib_dir: Path) -> CalibrationSet:
    return CalibrationSet(tiny_calib_dir, Preprocess(size=(64, 64)), "images", (1, 3, 64, 64), size=32)


def sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def test_same_seed_same_int8_model_byte_for_byte(tiny_prepared, cal: CalibrationSet, tmp_path: Path) -> None:
    a, b = tmp_path / "a.onnx", tmp_path / "b.onnx"
    ma = quantize_qdq(tiny_prepared, cal, a, options={"use_cache": False})
    cal2 = CalibrationSet(cal.root, cal.preprocess, "images", (1, 3, 64, 64), size=32)
    mb = quantize_qdq(tiny_prepared, cal2, b, options={"use_cache": False})
    assert sha(a) == sha(b)
    assert ma["stats_key"] == mb["stats_key"] and ma["calibration"]["sha256"] == mb["calibration"]["sha256"]


def test_qdq_model_runs_close_to_reference(tiny_prepared, cal: CalibrationSet, tmp_path: Path) -> None:
    import onnx

    from edgeconv.core.compare import compare_outputs
    from edgeconv.targets.base import OrtRunner

    out = tmp_path / "q.onnx"
    meta = quantize_qdq(tiny_prepared, cal, out)
    ops = [n.op_type for n in onnx.load(str(out)).graph.node]
    assert ops.count("QuantizeLinear") >= 2 and ops.count("DequantizeLinear") >= 4
    assert meta["reduce_range"] and meta["per_channel"] and meta["activation_type"] == "uint8"
    from edgeconv.core.env import isa_features

    assert meta["vnni"] is bool(isa_features()["VNNI"]) and ("VNNI" in meta["int8_kernels"]) is True
    feeds = [f for _, f in zip(range(6), cal.feeds(), strict=False)]
    with OrtRunner(tiny_prepared.reference.onnx_path) as r:
        refs = [r.infer(f) for f in feeds]
    with OrtRunner(out) as r:
        gots = [r.infer(f) for f in feeds]
    assert compare_outputs(refs, gots)["cosine"] > 0.98


def test_keep_fp32_and_output_nodes(tiny_prepared, cal: CalibrationSet, tmp_path: Path) -> None:
    import onnx

    ref = tiny_prepared.reference.onnx_path
    heads = output_nodes(ref)
    assert len(heads) == 1
    assert match_nodes(ref, ("op:Conv",)) and match_nodes(ref, (heads[0],)) == heads
    out = tmp_path / "k.onnx"
    meta = quantize_qdq(tiny_prepared, cal, out, options={"keep_outputs_fp32": True})
    assert meta["kept_fp32"] == heads
    g = onnx.load(str(out)).graph
    producers = {o: n for n in g.node for o in n.output}
    head = next(n for n in g.node if any(o in {x.name for x in g.output} for o in n.output))
    assert head.op_type == "Conv" and head.input[1] not in producers  # float weight initializer, no DQ


@pytest.mark.parametrize("method", ["entropy", "percentile"])
def test_other_methods_quantize(tiny_prepared, cal: CalibrationSet, tmp_path: Path, method: str) -> None:
    meta = quantize_qdq(tiny_prepared, cal, tmp_path / "m.onnx", options={"calib_method": method})
    assert meta["calib_method"] == method and (tmp_path / "m.onnx").stat().st_size > 0


def test_pipeline_int8_artifact(tiny_prepared, tiny_calib_dir: Path, tmp_path: Path) -> None:
    from edgeconv.pipeline import convert_reference, make_calibration

    c = make_calibration(tiny_prepared, tiny_calib_dir, size=32, preprocess=Preprocess(size=(64, 64)))
    art = convert_reference(tiny_prepared, "onnxruntime", out=tmp_path / "ort-int8", precision="int8", calibration=c)
    m = art.manifest
    assert m["verification"]["status"] == "ok"
    assert m["conversion"]["format"] == "onnx-qdq" and m["calibration"]["size"] == 32
    assert m["calibration"]["input_stats"]["samples"] >= 1
    assert np.isfinite(m["verification"]["drift"]["cosine"])
