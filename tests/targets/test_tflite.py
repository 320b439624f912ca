"""TFLite target: litert-torch conversion of the tiny fixture, verified against the reference ONNX by the pipeline.

Conversions take seconds each, so artifacts are made once per module and shared; each test then asserts on the
manifest, the runner or the .tflite itself.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("litert_torch", reason="tflite target needs litert-torch (pip install 'edgeconv[tflite]')")
pytest.importorskip("ai_edge_litert", reason="tflite runner needs ai-edge-litert (pip install 'edgeconv[tflite]')")

from edgeconv.core.errors import ConfigError, VerificationError
from edgeconv.pipeline import convert_reference, make_calibration


@pytest.fixture(scope="module")
def calib(tiny_prepared, tiny_calib_dir):
    return make_calibration(tiny_prepared, tiny_calib_dir, size=32)


@pytest.fixture(scope="module")
def out_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("tflite")


@pytest.fixture(scope="module")
def fp32_art(tiny_prepared, out_root):
    return convert_reference(tiny_prepared, "tflite", out=out_root / "fp32", precision="fp32")


@pytest.fixture(scope="module")
def fp16_art(tiny_prepared, out_root):
    return convert_reference(tiny_prepared, "tflite", out=out_root / "fp16", precision="fp16")


@pytest.fixture(scope="module")
def int8_art(tiny_prepared, calib, out_root):
    return convert_reference(tiny_prepared, "tflite", out=out_root / "int8", precision="int8", calibration=calib)


@pytest.fixture(scope="module")
def phone_int8io_art(tiny_prepared, calib, out_root):
    """The android-phone profile (NHWC) with int8 inputs/outputs and the fast min/max observer, in one conversion."""
    return convert_reference(tiny_prepared, "android-phone", out=out_root / "phone-int8io", precision="int8",
                             calibration=calib, options={"int8_io": True, "observer": "minmax"})


def _interp(art):
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(art.file("model")))
    it.allocate_tensors()
    return it


def test_fp32_converts_and_verifies(fp32_art, tiny_prepared):
    v = fp32_art.manifest["verification"]
    assert v["status"] == "ok"
    assert v["drift"]["max_abs"] <= 1e-4
    assert fp32_art.manifest["input_layout"] == "NCHW"
    io = fp32_art.manifest["conversion"]["io"]
    assert [r["reference"] for r in io["outputs"]] == [o.name for o in tiny_prepared.reference.outputs]
    assert io["inputs"][0]["dtype"] == "float32"


def test_fp32_runner_matches_reference(fp32_art, tiny_prepared):
    from edgeconv.targets.base import OrtRunner
    from edgeconv.targets.registry import get_target

    feeds = tiny_prepared.reference.random_feeds(1, seed=7)[0]
    with OrtRunner(tiny_prepared.reference.onnx_path) as ref, get_target("tflite").runner(fp32_art, threads=1) as r:
        want, got = ref.infer(feeds), r.infer(feeds)
    assert set(got) == set(want)
    for k in want:
        assert got[k].shape == want[k].shape
        np.testing.assert_allclose(got[k], want[k], atol=1e-4)


def test_fp16_has_half_weights(fp16_art, fp32_art):
    v = fp16_art.manifest["verification"]
    assert v["status"] == "ok" and v["drift"]["cosine"] >= 0.999
    tensors = _interp(fp16_art).get_tensor_details()
    assert any(t["dtype"] == np.float16 for t in tensors), "fp16 route left no float16 weights"
    assert fp16_art.file("model").stat().st_size < fp32_art.file("model").stat().st_size


def test_int8_full_integer_with_float_io(int8_art):
    v = int8_art.manifest["verification"]
    assert v["status"] == "ok" and v["samples"] >= 1
    q = int8_art.manifest["conversion"]["quantization"]
    assert q["method"] == "pt2e" and q["mode"] == "static" and q["calibration_samples"] == 32
    it = _interp(int8_art)
    assert it.get_input_details()[0]["dtype"] == np.float32  # float interface by default
    assert it.get_output_details()[0]["dtype"] == np.float32
    assert any(t["dtype"] == np.int8 for t in it.get_tensor_details())  # int8 inside


def test_android_phone_nhwc_int8_io(phone_int8io_art, tiny_prepared):
    m = phone_int8io_art.manifest
    assert m["verification"]["status"] == "ok"
    assert m["input_layout"] == "NHWC" and m["conversion"]["layout"] == "NHWC"
    assert m["conversion"]["quantization"]["observer"] == "minmax" and m["conversion"]["quantization"]["int8_io"]
    it = _interp(phone_int8io_art)
    (inp,) = it.get_input_details()
    assert inp["dtype"] == np.int8 and inp["quantization"][0] > 0
    n, c, h, w = tiny_prepared.reference.inputs[0].static_shape
    assert tuple(inp["shape"]) == (n, h, w, c)
    assert all(o["dtype"] == np.int8 for o in it.get_output_details())
    # the runner still speaks NCHW float in reference names
    feeds = {tiny_prepared.reference.inputs[0].name: np.random.default_rng(0).random((n, c, h, w), np.float32)}
    from edgeconv.targets.registry import get_target

    with get_target("tflite").runner(phone_int8io_art) as r:
        out = r.infer(feeds)
    for spec in tiny_prepared.reference.outputs:
        assert out[spec.name].dtype == np.float32 and out[spec.name].shape == spec.static_shape


def test_nhwc_option_fp32(tiny_prepared, out_root):
    art = convert_reference(tiny_prepared, "tflite", out=out_root / "nhwc", precision="fp32",
                            options={"layout": "NHWC"})
    assert art.manifest["input_layout"] == "NHWC"
    assert art.manifest["verification"]["drift"]["max_abs"] <= 1e-4
    assert {r["layout"] for r in art.manifest["conversion"]["io"]["outputs"]} == {"NHWC"}


@pytest.mark.parametrize("corruption", ["transpose_hw", "swap_channels"])
def test_corrupted_layout_is_caught(tiny_prepared, out_root, monkeypatch, corruption):
    """A converter that silently transposes H/W or reverses RGB must fail verification, never be 'converted'."""
    import torch

    from edgeconv.targets.tflite import convert as conv

    real = conv.prepare_module

    class Corrupt(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            return self.inner(x.transpose(2, 3) if corruption == "transpose_hw" else x.flip(1))

    monkeypatch.setattr(conv, "prepare_module", lambda m, i, o, lay: real(Corrupt(m), i, o, lay))
    out = out_root / f"corrupt-{corruption}"
    with pytest.raises(VerificationError, match="differs from the reference"):
        convert_reference(tiny_prepared, "tflite", out=out, precision="fp32", use_cache=False)
    assert not out.exists()  # nothing reported as converted


def test_onnx_only_source_is_refused(tiny_prepared, tmp_path):
    from edgeconv.pipeline import prepare

    onnx_only = prepare(str(tiny_prepared.reference.onnx_path))
    assert onnx_only.reference.module is None
    with pytest.raises(ConfigError, match="PyTorch") as e:
        convert_reference(onnx_only, "tflite", out=tmp_path / "x", precision="fp32")
    assert "--model" in (e.value.hint or "")


def test_dynamic_int8_io_conflict_is_config_error(tiny_prepared, tmp_path):
    with pytest.raises(ConfigError, match="int8_io"):
        convert_reference(tiny_prepared, "tflite", out=tmp_path / "d", precision="int8",
                          options={"int8_mode": "dynamic", "int8_io": True})


@pytest.mark.slow
def test_dynamic_range_int8(tiny_prepared, calib, out_root):
    art = convert_reference(tiny_prepared, "tflite", out=out_root / "dyn", precision="int8", calibration=calib,
                            options={"int8_mode": "dynamic"})
    assert art.manifest["conversion"]["quantization"]["mode"] == "dynamic"
    assert art.manifest["verification"]["status"] == "ok"
    assert _interp(art).get_input_details()[0]["dtype"] == np.float32


def test_runs_here_needs_only_an_interpreter(monkeypatch):
    """Running needs ai_edge_litert or tflite_runtime; with neither, runs_here says why and the runner refuses."""
    from edgeconv.core.errors import MissingDependencyError
    from edgeconv.targets import tflite
    from edgeconv.targets.tflite import runner

    t = tflite.TfliteTarget()
    assert t.runs_here() == (True, "")
    assert t.needs_torch_module and t.modules == ("litert_torch",)
    monkeypatch.setattr(tflite, "available", lambda m: False)
    monkeypatch.setattr(runner, "available", lambda m: False)
    ok, why = t.runs_here()
    assert not ok and "ai_edge_litert" in why
    with pytest.raises(MissingDependencyError):
        runner.interpreter_module()


def test_runner_quantize_roundtrip():
    from edgeconv.targets.tflite.runner import dequantize, quantize

    x = np.array([-2.0, -0.5, 0.0, 0.26, 5.0], np.float32)
    q = quantize(x, "int8", 0.02, 3)
    assert q.dtype == np.int8 and q[-1] == 127  # saturates like TFLite's QUANTIZE
    np.testing.assert_allclose(dequantize(q, 0.02, 3)[:4], x[:4], atol=0.01)
