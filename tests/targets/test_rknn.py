"""RKNN target: the contract expressed in rknn.config, the toolkit's layer table and errors, and real conversions
(fp16, INT8) in the ``rknn`` backend environment verified on the toolkit simulator by the pipeline.

The conversions need the environment (made by ``edgeconv env create rknn`` or the slow test in tests/envs); without
it they skip, and the pure tests still run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx", reason="the rknn host side reads ONNX")

from edgeconv.calibration.preprocess import Preprocess  # noqa: E402
from edgeconv.core.errors import ConfigError, ConversionError  # noqa: E402
from edgeconv.targets.rknn import handler  # noqa: E402
from edgeconv.targets.rknn.convert import to_raw, toolkit_normalization  # noqa: E402

TEST_ENVS = Path(os.environ.get("EDGECONV_TEST_ENVS", "~/.cache/edgeconv/envs")).expanduser()


@pytest.fixture
def rknn_env(monkeypatch: pytest.MonkeyPatch):  # noqa: ANN201
    from edgeconv.envs.manager import locate
    from edgeconv.targets.rknn.env import ENV

    monkeypatch.setenv("EDGECONV_ENVS", str(TEST_ENVS))
    env = locate(ENV)
    if env is None:
        pytest.skip("rknn environment not made yet (edgeconv env create rknn, or tests/envs slow test)")
    return env


@pytest.mark.parametrize("order", ["scale-first", "normalize-first"])
def test_rknn_mean_std_are_the_contract_arithmetic(order: str) -> None:
    pp = Preprocess(size=(16, 16), mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), order=order,
                    scale=1 / 255 if order == "scale-first" else 1.0)
    mean, std = toolkit_normalization(pp, (1, 3, 16, 16))
    img = (np.arange(16 * 16 * 3) % 256).astype(np.uint8).reshape(16, 16, 3)
    want = pp.apply(img)  # what the reference ONNX is fed
    got = (img.transpose(2, 0, 1)[None].astype(np.float32) - np.float32(mean).reshape(1, 3, 1, 1)) / \
        np.float32(std).reshape(1, 3, 1, 1)  # what the NPU computes from the raw image
    np.testing.assert_allclose(got, want, atol=2e-6)
    np.testing.assert_allclose(to_raw(want, (mean, std)), img.transpose(2, 0, 1)[None], atol=2e-4)


def test_inexpressible_contracts_feed_tensors() -> None:
    assert toolkit_normalization(None, (1, 3, 8, 8)) is None
    assert toolkit_normalization(Preprocess(size=(8, 8)), (1, 5, 8, 8)) is None  # not an image
    assert toolkit_normalization(Preprocess(size=(8, 8), layout="NHWC"), (1, 3, 8, 8)) is None


def test_layer_table_lists_ops_left_on_the_cpu() -> None:
    log = """D RKNN: [21:45:01.581] ID   OpType             DataType Target InputShape   OutputShape   Cycles(DDR/NPU/Total)    RW(KB)       FullName
D RKNN: [21:45:01.581] 0    InputOperator      FLOAT16  CPU    \\    (1,3,32,32)    0/0/0    0     InputOperator:x
D RKNN: [21:45:01.581] 1    Conv               FLOAT16  NPU    (1,3,32,32),(8,3,3,3)   (1,8,32,32)   1002/9216/9216   7   Conv:c
D RKNN: [21:45:01.581] 2    Atan               FLOAT16  CPU    (1,8,32,32)   (1,8,32,32)   0/0/0   16   Atan:y
"""  # noqa: E501 - the toolkit's own line format
    rows = handler.layer_table(log)
    assert [(r["op"], r["target"]) for r in rows] == [("InputOperator", "CPU"), ("Conv", "NPU"), ("Atan", "CPU")]
    assert rows[2]["name"] == "Atan:y"


def _onnx(path: Path, op: str, domain: str = "") -> Path:
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((8, 3, 3, 3)).astype(np.float32), "W")
    nodes = [helper.make_node("Conv", ["x", "W"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node(op, ["c"], ["y"], domain=domain)]
    out_t = TensorProto.INT64 if op == "NonZero" else TensorProto.FLOAT
    out_shape = [4, None] if op == "NonZero" else [1, 8, 32, 32]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 32, 32])],
                          [helper.make_tensor_value_info("y", out_t, out_shape)], [w])
    opsets = [helper.make_opsetid("", 17)] + ([helper.make_opsetid(domain, 1)] if domain else [])
    m = helper.make_model(g, opset_imports=opsets)
    m.ir_version = 8
    onnx.save(m, str(path))
    return path


def test_rejected_op_is_named(tmp_path: Path) -> None:
    p = _onnx(tmp_path / "nz.onnx", "NonZero")
    err = ValueError("The input 0 of NonZero('y') need to be constant! It will cause the graph to be dynamic!")
    e = handler._explain("build", err, str(p), "")
    assert "rejected op NonZero" in str(e) and e.kind == "conversion"
    custom = handler._explain("build", err, str(_onnx(tmp_path / "c.onnx", "FancyOp", "com.example")), "")
    assert "FancyOp (domain com.example)" in str(custom)


def test_fp32_and_keep_fp32_are_config_errors(tiny_prepared) -> None:  # noqa: ANN001
    from edgeconv.pipeline import convert_reference

    with pytest.raises(ConfigError, match="no fp32 route"):
        convert_reference(tiny_prepared, "rk3588", precision="fp32", out="/nonexistent/never")


# --- real conversions in the environment ---------------------------------------------------------------------------

@pytest.mark.parametrize("precision", ["fp16", pytest.param("int8", marks=pytest.mark.slow)])
def test_simulator_verifies_with_a_per_channel_contract(rknn_env, tiny_prepared, tiny_calib_dir, tmp_path: Path,
                                                        precision: str) -> None:
    """INT8 verifies only if the contract's per-channel mean/std reached rknn.config and the raw-pixel dataset."""
    from edgeconv.pipeline import convert_reference, make_calibration

    pp = Preprocess(size=(64, 64), mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    calib = make_calibration(tiny_prepared, tiny_calib_dir, size=16, preprocess=pp)
    art = convert_reference(tiny_prepared, "rk3566", precision=precision, out=tmp_path / precision,
                            calibration=calib if precision == "int8" else None, preprocess=pp, use_cache=False,
                            options={"simulator_runs": 2})
    conv, ver = art.manifest["conversion"], art.manifest["verification"]
    assert ver["status"] == "ok" and ver["proxy"] is True and ver["drift"]["cosine"] > 0.98
    assert conv["platform"] == "rk3566" and conv["embedded_preprocess"] is True
    np.testing.assert_allclose(conv["mean_values"][0], [0.485 * 255, 0.456 * 255, 0.406 * 255], rtol=1e-6)
    np.testing.assert_allclose(conv["std_values"][0], [0.229 * 255, 0.224 * 255, 0.225 * 255], rtol=1e-6)
    assert "not a device number" in conv["latency_note"] and conv["simulator_latency_ms"]["runs"] == 2
    assert conv["layer_table_found"] and conv["npu_layers"] >= 3 and conv["cpu_layers"] == []
    assert (art.path / "model.rknn").stat().st_size > 1000
    recipe = json.loads((art.path / "rknn_build.json").read_text())["recipe"]
    assert recipe["quantize"] is (precision == "int8")
    if precision == "int8":
        assert conv["simulator_calibration"]["dtype"] == "uint8 raw pixels"
        assert conv["quantization"]["samples"] == 16


def test_rejected_op_fails_the_row_naming_it(rknn_env, tmp_path: Path) -> None:
    from edgeconv.pipeline import convert_reference, prepare

    prep = prepare(str(_onnx(tmp_path / "nz.onnx", "NonZero")), simplify=False)
    with pytest.raises(ConversionError, match="NonZero"):
        convert_reference(prep, "rk3588", precision="fp16", out=tmp_path / "out", use_cache=False)
    assert not (tmp_path / "out").exists()


def test_op_on_the_cpu_is_listed(rknn_env, tmp_path: Path) -> None:
    from edgeconv.pipeline import convert_reference, prepare

    prep = prepare(str(_onnx(tmp_path / "atan.onnx", "Atan")), simplify=False)
    art = convert_reference(prep, "rk3588", precision="fp16", out=tmp_path / "out", use_cache=False,
                            options={"simulator_runs": 0})
    assert art.manifest["conversion"]["cpu_layers"] == ["Atan:Atan:y"]


@pytest.mark.slow
def test_cli_converts_the_bundled_detector_to_int8(rknn_env, tmp_path: Path) -> None:
    out = tmp_path / "x"
    cli = str(Path(sys.executable).with_name("edgeconv"))
    done = subprocess.run([cli, "convert", "--model", "zoo:yolo", "--target", "rk3588", "--precision", "int8",
                           "--out", str(out)], capture_output=True, text=True,
                          env={**os.environ, "EDGECONV_ENVS": str(TEST_ENVS)}, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    mf = json.loads((out / "rk3588-int8" / "manifest.json").read_text())
    assert mf["verification"]["status"] == "ok" and mf["verification"]["drift"]["cosine"] > 0.99
