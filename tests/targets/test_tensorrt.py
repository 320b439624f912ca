"""TensorRT target without TensorRT: TRT-ready ONNX, op check, Q/DQ placement, calibration cache, fp16, proxy."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnxruntime", reason="the TensorRT target converts with onnx + onnxruntime")
onnx = pytest.importorskip("onnx", reason="the TensorRT target converts with onnx + onnxruntime")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from edgeconv.core.errors import ConfigError  # noqa: E402
from edgeconv.targets.tensorrt import NOT_HERE, TensorRtTarget  # noqa: E402
from edgeconv.targets.tensorrt.calib_cache import (  # noqa: E402
    CalibrationCache,
    hex_to_scale,
    scale_to_hex,
    symmetric_scale,
    trt_version_number,
)
from edgeconv.targets.tensorrt.engine import BuildPlan, trtexec_line  # noqa: E402
from edgeconv.targets.tensorrt.opcheck import check_model  # noqa: E402
from edgeconv.targets.tensorrt.qdq import nodes_to_quantize, quantized_tensors, residual_adds  # noqa: E402

LATENCY_NOTE = "TensorRT not installed here: latency not measured; drift measured on the Q/DQ ONNX via ONNX Runtime"


# -- calibration cache format ---------------------------------------------------------------------------------------
def test_scale_hex_is_big_endian_float32_bits() -> None:
    assert scale_to_hex(1 / 127) == "3c010204"
    assert scale_to_hex(1.0) == "3f800000"
    # a line TensorRT itself wrote (amax ~1.0002 on an input in [0, 1])
    assert hex_to_scale("3c010a14") == pytest.approx(0.0078759, rel=1e-5)
    assert hex_to_scale("3c010a14") == struct.unpack(">f", bytes.fromhex("3c010a14"))[0]
    assert hex_to_scale("800000") == hex_to_scale("00800000")  # short form written by some third-party tools


def test_version_numbers_match_nv_tensorrt_version() -> None:
    assert trt_version_number("8.6.1") == 8601
    assert trt_version_number("10.3.0") == 100300
    assert trt_version_number("10.15.1.29") == 101501


def test_cache_round_trip_and_symmetric_scale() -> None:
    ranges = {"images": (0.0, 1.0), "act": (-3.0, 2.0), "zero": (0.0, 0.0)}
    cache = CalibrationCache.from_ranges(ranges, version=100300)
    text = cache.dumps()
    lines = text.splitlines()
    assert lines[0] == "TRT-100300-EntropyCalibration2"
    assert "images: 3c010204" in lines
    back = CalibrationCache.parse(text)
    assert back.version == 100300 and back.algorithm == "EntropyCalibration2"
    assert back.scales["act"] == pytest.approx(3.0 / 127, rel=1e-7)
    assert back.scales["zero"] > 0  # TensorRT rejects a zero scale
    assert symmetric_scale(-5, 1) == pytest.approx(5 / 127)


def test_parse_rejects_malformed_caches() -> None:
    with pytest.raises(ConfigError):
        CalibrationCache.parse("not a cache\nx: 3c010204\n")
    with pytest.raises(ConfigError):
        CalibrationCache.parse("TRT-8601-EntropyCalibration2\nx = 3c010204\n")
    parsed = CalibrationCache.parse("TRT-8601-EntropyCalibration2\ninput_1:0: 3c010a14\n")
    assert list(parsed.scales) == ["input_1:0"]  # names may contain ':'


# -- operator check -------------------------------------------------------------------------------------------------
def _save(tmp_path: Path, nodes: list, inits: list, inputs: list, outputs: list, opset: int = 17,
          name: str = "m.onnx") -> Path:
    g = helper.make_graph(nodes, "g", inputs, outputs, inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset), helper.make_opsetid("custom", 1)])
    p = tmp_path / name
    onnx.save(m, str(p))
    return p


def test_opcheck_flags_unsupported_custom_and_asymmetric(tmp_path: Path) -> None:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])
    inits = [numpy_helper.from_array(np.float32(0.1), "s"), numpy_helper.from_array(np.int8(3), "zp")]
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "zp"], ["q"], name="q"),
             helper.make_node("DequantizeLinear", ["q", "s", "zp"], ["dq"], name="dq"),
             helper.make_node("Unique", ["dq"], ["u"], name="uniq"),
             helper.make_node("MyPlugin", ["u"], ["y"], name="plug", domain="custom")]
    rep = check_model(_save(tmp_path, nodes, inits, [x], [y]))
    assert not rep["ok"]
    assert {u["op"] for u in rep["unsupported"]} == {"Unique", "custom::MyPlugin"}
    assert {v["node"] for v in rep["restrictions"]["violated"]} == {"q", "dq"}
    assert any("no optimization profile" in p for p in rep["problems"])
    rep2 = check_model(tmp_path / "m.onnx", dynamic_profiles={"x": {"min": [1, 4], "opt": [2, 4], "max": [8, 4]}})
    assert not any("no optimization profile" in p for p in rep2["problems"])


def test_opcheck_passes_the_tiny_reference(tiny_prepared) -> None:
    rep = check_model(tiny_prepared.reference.onnx_path)
    assert rep["ok"], rep["problems"]
    assert rep["op_counts"]["Conv"] == 3
    assert rep["source"]["tensorrt"] == "10.15"


# -- Q/DQ placement -------------------------------------------------------------------------------------------------
def test_residual_add_is_found(tmp_path: Path) -> None:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 4, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 4, 4])
    w = numpy_helper.from_array(np.ones((2, 2, 1, 1), np.float32), "w")
    b = numpy_helper.from_array(np.ones((1, 2, 1, 1), np.float32), "b")
    nodes = [helper.make_node("Conv", ["x", "w"], ["c1"], name="conv1"),
             helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
             helper.make_node("Conv", ["r1", "w"], ["c2"], name="conv2"),
             helper.make_node("Add", ["c2", "r1"], ["a"], name="residual"),
             helper.make_node("Add", ["a", "b"], ["y"], name="bias_add")]
    p = _save(tmp_path, nodes, [w, b], [x], [y])
    assert residual_adds(onnx.load(str(p))) == ["residual"]
    assert nodes_to_quantize(p, ["conv2"]) == ["conv1", "residual"]
    assert nodes_to_quantize(p, [], residual_add=False) == ["conv1", "conv2"]


# -- conversions through the pipeline (proxy verification) ----------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_calib(tiny_prepared, tiny_calib_dir):
    from edgeconv.pipeline import make_calibration

    return make_calibration(tiny_prepared, tiny_calib_dir)


def _convert(prep, tmp_path: Path, precision: str, calib=None, **kw):
    from edgeconv.pipeline import convert_reference

    return convert_reference(prep, "tensorrt", out=tmp_path / f"trt-{precision}", precision=precision,
                             calibration=calib, use_cache=False, **kw)


def test_runs_here_says_why_not() -> None:
    from edgeconv.core.lazy import available

    ok, why = TensorRtTarget().runs_here()
    if not available("tensorrt"):
        assert (ok, why) == (False, NOT_HERE)
    assert TensorRtTarget().available()  # conversion needs only onnx + onnxruntime


def test_int8_qdq_and_cache(tiny_prepared, tiny_calib, tmp_path: Path) -> None:
    art = _convert(tiny_prepared, tmp_path, "int8", tiny_calib, options={"trt_version": "auto"})
    conv = art.manifest["conversion"]
    qdq = art.path / "model_qdq.onnx"
    model = onnx.load(str(qdq))
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    prod = {o: n for n in model.graph.node for o in n.output}
    # every Conv reads DequantizeLinear on both activation and weight; outputs are not quantized directly
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    assert convs and all(prod[n.input[0]].op_type == "DequantizeLinear" for n in convs)
    assert all(prod[n.input[1]].op_type == "DequantizeLinear" for n in convs)
    assert all(len(n.input) < 3 or (n.input[2] in inits and inits[n.input[2]].dtype == np.float32) for n in convs)
    assert not any(n.op_type == "QuantizeLinear" and n.input[0] in {c.output[0] for c in convs}
                   for n in model.graph.node)
    for n in model.graph.node:
        if n.op_type in ("QuantizeLinear", "DequantizeLinear"):
            assert not np.any(inits[n.input[2]]), "TensorRT needs zero points of 0"
            assert inits[n.input[2]].dtype == np.int8
    for dq in (prod[c.input[1]] for c in convs):
        out_ch = inits[dq.input[0]].shape[0]
        assert inits[dq.input[1]].shape == (out_ch,)  # per output channel
    # the implicit cache parses back and covers every tensor the Q/DQ model quantizes, with the same scales
    cache = CalibrationCache.read(art.path / "calibration.cache")
    assert cache.header.startswith("TRT-") and cache.algorithm == "EntropyCalibration2"
    q = quantized_tensors(qdq)
    assert q and set(q) <= set(cache.scales)
    for t, s in q.items():
        assert cache.scales[t] == pytest.approx(s, rel=1e-6)
    assert conv["latency_note"] == LATENCY_NOTE
    ver = art.manifest["verification"]
    assert ver["proxy"] is True and ver["status"] == "ok" and ver["drift"]["cosine"] > 0.99
    assert "latency was not measured" in ver["note"]
    script = (art.path / "build_engine.sh").read_text()
    assert "--calib=calibration.cache" in script and "--onnx=model_qdq.onnx" in script
    assert {"model_qdq.onnx", "calibration.cache", "trt_opcheck.json", "build_engine.sh"} <= set(art.manifest["files"])


def test_int8_keep_fp32(tiny_prepared, tiny_calib, tmp_path: Path) -> None:
    ref = onnx.load(str(tiny_prepared.reference.onnx_path))
    last = [n for n in ref.graph.node if n.op_type == "Conv"][-1]
    art = _convert(tiny_prepared, tmp_path, "int8", tiny_calib, keep_fp32=(last.name,),
                   options={"trt_version": "10", "int8_mode": "implicit"})
    model = onnx.load(str(art.path / "model_qdq.onnx"))
    prod = {o: n for n in model.graph.node for o in n.output}
    head = next(n for n in model.graph.node if n.name == last.name)
    assert prod[head.input[0]].op_type != "DequantizeLinear"
    assert last.name in art.manifest["conversion"]["kept_fp32"]
    script = (art.path / "build_engine.sh").read_text()
    assert f"--layerPrecisions={last.name}:fp32" in script and "  11)" not in script


def test_fp16_cast_keeps_fp32_io(tiny_prepared, tmp_path: Path) -> None:
    art = _convert(tiny_prepared, tmp_path, "fp16")
    m = onnx.load(str(art.path / "model_fp16.onnx"))
    assert all(v.type.tensor_type.elem_type == TensorProto.FLOAT for v in [*m.graph.input, *m.graph.output])
    conv_w = {n.input[1] for n in m.graph.node if n.op_type == "Conv"}
    assert all(i.data_type == TensorProto.FLOAT16 for i in m.graph.initializer if i.name in conv_w)
    ver = art.manifest["verification"]
    assert ver["proxy"] is True and ver["drift"]["cosine"] > 0.999
    script = (art.path / "build_engine.sh").read_text()
    assert "--onnx=model.onnx --saveEngine=model.engine --memPoolSize=workspace:1024M --fp16" in script
    tr11 = script.split("  11)")[1]
    assert "--onnx=model_fp16.onnx" in tr11 and "--fp16" not in tr11 and "--int8" not in tr11


def test_trtexec_line_with_profiles() -> None:
    prof = {"images": {"min": [1, 3, 128, 128], "opt": [1, 3, 256, 256], "max": [4, 3, 512, 512]}}
    line = trtexec_line(BuildPlan("10", "model.onnx", "fp16-flag", fp16_flag=True), prof, 512)
    assert "--minShapes=images:1x3x128x128" in line and "--maxShapes=images:4x3x512x512" in line
    assert "--fp16" in line
    line11 = trtexec_line(BuildPlan("11", "model_fp16.onnx", "fp16-typed", strongly_typed=True), prof, 512)
    assert "--fp16" not in line11 and "--stronglyTyped" not in line11  # always strongly typed in 11


def test_proxy_runs_qdq_without_graph_optimizations(tiny_prepared, tiny_calib, tmp_path: Path) -> None:
    import onnxruntime as ort

    from edgeconv.core.artifact import Artifact

    art = _convert(tiny_prepared, tmp_path, "int8", tiny_calib)
    with TensorRtTarget().runner(Artifact.load(art.path)) as r:
        assert r.proxy is True
        assert r.session.get_session_options().graph_optimization_level == ort.GraphOptimizationLevel.ORT_DISABLE_ALL
