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
    assert fp32_art.manifest["conversion"]["folded_batch_norms"] >= 1  # litert-torch got the folded view


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


def test_fp32_and_fp16_share_one_lowering(fp32_art, fp16_art, tiny_prepared, tmp_path):
    """The fp16 row casts the fp32 row's flatbuffer (or the other way round, whichever ran first), and what it
    writes is byte for byte the artifact a conversion without the shared stage writes."""
    lowering = {fp32_art.manifest["conversion"]["fp32_lowering"], fp16_art.manifest["conversion"]["fp32_lowering"]}
    assert lowering == {"converted", "shared stage (cache)"}
    fresh = convert_reference(tiny_prepared, "tflite", out=tmp_path / "fp16", precision="fp16", use_cache=False)
    assert fresh.manifest["conversion"]["fp32_lowering"] == "converted"
    assert fresh.file("model").read_bytes() == fp16_art.file("model").read_bytes()
    assert fp16_art.manifest["verification"]["status"] == "ok"


def test_fp16_cast_is_litert_torchs_own_fp16_route():
    """The cast applied to the fp32 flatbuffer equals litert-torch's full_fp16_recipe conversion (it lowers to the
    same fp32 module, then runs the same ai-edge-quantizer recipe); a litert-torch that changes this fails here."""
    import litert_torch
    import torch
    from litert_torch.generative.quantize import quant_recipes
    from litert_torch.quantize import translate_recipe

    m = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.SiLU(), torch.nn.Conv2d(8, 4, 1)).eval()
    x = (torch.randn(1, 3, 16, 16),)
    own = bytes(litert_torch.convert(m, x, quant_config=quant_recipes.full_fp16_recipe()).model_content())
    fp32 = bytes(litert_torch.convert(m, x).model_content())
    recipe = translate_recipe.translate_to_ai_edge_recipe(quant_recipes.full_fp16_recipe().generative_recipe)
    assert bytes(translate_recipe.quantize_model(fp32, recipe)) == own


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


# -- a YOLO11-style detector head: DFL softmax, first-call anchors from stride.item(), a module attribute ----------
import math  # noqa: E402

import torch  # noqa: E402
from torch import nn  # noqa: E402


class _Conv(nn.Module):
    def __init__(self, c1: int, c2: int, k: int = 3, s: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c1, c2, k, s, k // 2, bias=False)
        self.bn = nn.BatchNorm2d(c2)

    def forward(self, x):
        return nn.functional.silu(self.bn(self.conv(x)))


class _DFL(nn.Module):
    """Distribution focal loss integral: softmax over 16 bins, then a 1x1 conv with weights 0..15."""

    def __init__(self, c1: int = 16) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c1, 1, 1, bias=False).requires_grad_(False)
        self.conv.weight.data[:] = torch.arange(c1, dtype=torch.float).view(1, c1, 1, 1)
        self.c1 = c1

    def forward(self, x):
        b, _, a = x.shape
        return self.conv(x.view(b, 4, self.c1, a).transpose(2, 1).softmax(1)).view(b, 4, a)


def _make_anchors(feats, strides, offset=0.5):
    points, stride_t = [], []
    for i, stride in enumerate(strides):
        h, w = feats[i].shape[2:]
        sy, sx = torch.meshgrid(torch.arange(h, dtype=torch.float32) + offset,
                                torch.arange(w, dtype=torch.float32) + offset, indexing="ij")
        points.append(torch.stack((sx, sy), -1).view(-1, 2))
        stride_t.append(torch.full((h * w, 1), stride.item()))  # .item(): aten._local_scalar_dense when traced
    return torch.cat(points), torch.cat(stride_t)


class Yolo11Head(nn.Module):
    """Ultralytics' Detect head pattern (reg_max 16 DFL, sigmoid classes, anchors computed on the first call)."""

    def __init__(self, nc: int = 3, ch: tuple[int, ...] = (16, 32), reg_max: int = 16) -> None:
        super().__init__()
        self.nc, self.reg_max, self.nl, self.no = nc, reg_max, len(ch), nc + 4 * reg_max
        self.register_buffer("stride", torch.tensor([8.0, 16.0]))
        self.cv2 = nn.ModuleList(nn.Sequential(_Conv(c, 16), nn.Conv2d(16, 4 * reg_max, 1)) for c in ch)
        self.cv3 = nn.ModuleList(nn.Sequential(_Conv(c, 16), nn.Conv2d(16, nc, 1)) for c in ch)
        self.dfl = _DFL(reg_max)
        self.anchors = self.strides = self.shape = None
        self.math = math  # a Python module as an attribute: copy.deepcopy(model) fails on it

    def forward(self, xs):
        shape = xs[0].shape
        x = [torch.cat((self.cv2[i](xs[i]), self.cv3[i](xs[i])), 1) for i in range(self.nl)]
        x_cat = torch.cat([xi.view(shape[0], self.no, -1) for xi in x], 2)
        if self.anchors is None or self.shape != shape:
            a, s = _make_anchors(x, self.stride)
            self.anchors, self.strides, self.shape = a.transpose(0, 1), s.transpose(0, 1), shape
        box, cls = x_cat.split((self.reg_max * 4, self.nc), 1)
        lt, rb = self.dfl(box).chunk(2, 1)
        x1y1, x2y2 = self.anchors.unsqueeze(0) - lt, self.anchors.unsqueeze(0) + rb
        return torch.cat((torch.cat(((x1y1 + x2y2) / 2, x2y2 - x1y1), 1) * self.strides, cls.sigmoid()), 1)


class Yolo11Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(_Conv(3, 8, 3, 2), _Conv(8, 16, 3, 2), _Conv(16, 16, 3, 2))
        self.gate = nn.Conv2d(16, 16, 1)  # a sigmoid gate inside the network (int8 LOGISTIC with fixed params)
        self.down = _Conv(16, 32, 3, 2)
        self.head = Yolo11Head()
        self.train = {"epochs": 300}  # shadows nn.Module.train(): .eval() on this model would crash

    def forward(self, x):
        p3 = self.stem(x)
        p3 = p3 * torch.sigmoid(self.gate(p3))
        return self.head([p3, self.down(p3)])


def build_yolo11() -> nn.Module:
    torch.manual_seed(0)
    m = Yolo11Tiny()
    with torch.no_grad():
        for mod in m.stem.modules():
            if isinstance(mod, nn.BatchNorm2d):
                mod.running_mean.uniform_(-0.2, 0.2)
                mod.running_var.uniform_(0.5, 1.5)
    return m


@pytest.fixture(scope="module")
def yolo11(tiny_calib_dir):
    from edgeconv.pipeline import prepare

    prep = prepare(f"{__file__}:build_yolo11", inputs=["images:1x3x64x64"])
    prep.reference.module.head.anchors = None  # as after a reference cache hit: the first call is still to come
    return prep, make_calibration(prep, tiny_calib_dir, size=16)


def test_first_call_state_left_by_the_reference_run_does_not_break_pt2e(tiny_calib_dir, out_root):
    """The reference run (torch outputs for verification) is the head's first call: the anchors it caches must be
    ordinary tensors. Under ``torch.inference_mode`` they were inference tensors and PT2E's export of the same
    module failed ("Inference tensors cannot be saved for backward") on a real YOLO11n checkpoint."""
    from edgeconv.pipeline import prepare

    prep = prepare(f"{__file__}:build_yolo11", inputs=["images:1x3x64x64"], use_cache=False)
    anchors = prep.reference.module.head.anchors
    assert anchors is not None and not anchors.is_inference()
    art = convert_reference(prep, "tflite", out=out_root / "y11-fresh", precision="int8",
                            calibration=make_calibration(prep, tiny_calib_dir, size=8),
                            options={"observer": "minmax"}, use_cache=False)
    assert art.manifest["verification"]["status"] == "ok"


def _ops(art) -> list[tuple[str, list[dict]]]:
    it = _interp(art)
    tensors = {t["index"]: t for t in it.get_tensor_details()}
    return [(op["op_name"], [tensors[i] for i in op["outputs"]]) for op in it._get_ops_details()]


def test_yolo11_head_int8_converts_with_fixed_softmax_and_logistic_params(yolo11, out_root):
    prep, cal = yolo11
    art = convert_reference(prep, "tflite", out=out_root / "y11-int8", precision="int8", calibration=cal,
                            options={"observer": "minmax"}, use_cache=False)
    v = art.manifest["verification"]
    assert v["status"] == "ok" and v["drift"]["cosine"] > 0.99
    q = art.manifest["conversion"]["quantization"]
    assert {"softmax", "sigmoid", "sigmoid_1"} <= set(q["fixed_qparams"])
    int8 = [(name, outs[0]["quantization"]) for name, outs in _ops(art)
            if name in ("SOFTMAX", "LOGISTIC") and outs[0]["dtype"] == np.int8]
    assert {name for name, _ in int8} == {"SOFTMAX", "LOGISTIC"}  # the DFL softmax and the gate run in int8 ...
    assert all(qp == (pytest.approx(1 / 256), -128) for _, qp in int8)  # ... with the parameters TFLite requires
    # every SiLU is rewritten x * sigmoid(x) and runs in int8 (the quantizer has no SiLU annotator: it stayed a
    # float LOGISTIC + MUL between DEQUANTIZE and QUANTIZE), as do the adds and muls it finds by source
    assert q["silu_decomposed"] >= 4 and q["source_tagged"].get("add", 0) >= 1
    assert sum(name == "LOGISTIC" for name, _ in int8) >= q["silu_decomposed"]
    # the output concat of boxes (pixels) and class probabilities stays float: probabilities are not requantized
    # onto the box scale (nor boxes onto 1/256)
    assert any(c.startswith("cat") and c.endswith("(float)") for c in q["fixed_qparams"])
    feeds = list(cal.feeds())[:4]
    from edgeconv.targets.registry import get_target

    with OrtRunnerCtx(prep) as ref, get_target("tflite").runner(art) as r:
        for f in feeds:
            want, got = ref.infer(f)["output"][:, 4:], r.infer(f)["output"][:, 4:]
            assert np.abs(want - got).max() < 0.02  # probabilities within 2 points


def OrtRunnerCtx(prep):  # noqa: N802 - reads like the class it returns
    from edgeconv.targets.base import OrtRunner

    return OrtRunner(prep.reference.onnx_path)


def test_yolo11_keep_fp32_softmax_applies_on_pt2e_route(yolo11, out_root):
    prep, cal = yolo11
    art = convert_reference(prep, "tflite", out=out_root / "y11-keep", precision="int8", calibration=cal,
                            options={"observer": "minmax"}, keep_fp32=("op:Softmax",), use_cache=False)
    q = art.manifest["conversion"]["quantization"]
    assert q["keep_fp32"]["patterns"]["op:Softmax"]["traced"] == ["softmax"]
    assert "softmax" in q["kept_float"]
    softmax = [outs[0]["dtype"] for name, outs in _ops(art) if name == "SOFTMAX"]
    assert softmax == [np.float32]  # the softmax really runs in float
    assert art.manifest["verification"]["status"] == "ok"


def test_yolo11_fp32_converts_without_deep_copy(yolo11, out_root):
    prep, _ = yolo11
    art = convert_reference(prep, "tflite", out=out_root / "y11-fp32", precision="fp32", use_cache=False)
    assert art.manifest["verification"]["drift"]["max_abs"] <= 1e-4
    assert prep.reference.module.head.math is math  # the user's module is used as it is, not copied


def test_keep_fp32_without_counterpart_is_an_error(tiny_prepared, calib, tmp_path, monkeypatch):
    from edgeconv.targets import pt2e_keep as keep

    monkeypatch.setattr(keep, "traced_values", lambda gm, args: {})
    with pytest.raises(ConfigError, match="no counterpart"):
        convert_reference(tiny_prepared, "tflite", out=tmp_path / "k", precision="int8", calibration=calib,
                          options={"observer": "minmax"}, keep_fp32=("op:Sigmoid",), use_cache=False)


@pytest.mark.parametrize("text,op,hint", [
    ("loc(...): error: 'tfl.pad' op quantization parameters violate the same scale constraint: "
     "!quant.uniform<i8:f32, 0.05> vs. !quant.uniform<i8:f32, 0.02>\n<long MLIR dump>", "tfl.pad", "op:Pad"),
    ("error: 'tfl.add' op operands don't have broadcast-compatible shapes\n...", "tfl.add", "op:Add"),
    ("tflite/kernels/activations.cc:560 output->params.scale not near 1.f / 256 (0.000318 != 0.003906)"
     "Node number 62 (SOFTMAX) failed to prepare.", "SOFTMAX kernel (node 62)", "op:Softmax"),
])
def test_litert_errors_are_one_line_naming_op_and_what_to_try(text, op, hint):
    from edgeconv.targets.tflite.errors import explain

    e = explain(RuntimeError(text), "int8")
    assert "\n" not in e.message and op in e.message and len(e.message) < 300
    assert f"--keep-fp32 {hint}" in e.hint and "int8_mode=dynamic" in e.hint
    assert "broadcast" not in text or "same rank" in e.hint


def test_an_op_the_converter_cannot_legalize_is_named_with_its_source_line():
    from edgeconv.targets.tflite.errors import explain

    text = ("Failed to run converter passes: /repo/models/yolo.py:55:0: error: failed to legalize operation "
            "'tfl.pow' that was explicitly marked illegal: %1180 = \"tfl.pow\"(%1179, %231) : (tensor<1x3x40x40x2xf32>"
            ", tensor<i64>) -> tensor<1x3x40x40x2xf32>" + " x" * 300)
    e = explain(ValueError(text), "fp32")
    assert e.message == ("litert-torch's converter has no TFLite form of tfl.pow as this model uses it (fp32), "
                         "from /repo/models/yolo.py:55")
    assert "fp16 or another target" in e.hint
    from edgeconv.targets.tflite.errors import _first_line

    cut = _first_line("word " * 100)
    assert cut.endswith(" …") and len(cut) <= 202 and "wor …" not in cut


def test_item_in_forward_is_explained():
    from edgeconv.targets.tflite.errors import explain

    e = explain(type("ConcretizationTypeError", (Exception,), {})("Abstract tracer value encountered"), "fp32")
    assert ".item()" in e.hint and "tensor-to-Python-number" in e.message


def test_full_integer_failure_falls_back_to_dynamic_range(tiny_prepared, calib, tmp_path, monkeypatch):
    """LPRNet's int8 stopped in litert's NHWC layout pass; the target then tries its other int8 route itself."""
    from edgeconv.core.errors import ConversionError
    from edgeconv.targets.tflite import convert as tconv

    real = tconv.convert

    def static_fails(ctx):
        if str(ctx.option("int8_mode", "static")) == "static":
            raise ConversionError("litert-torch conversion failed (int8): AssertionError: Attempting to convert "
                                  "non-NHWC compatible node to NHWC: dequantize_per_tensor_1")
        return real(ctx)

    monkeypatch.setattr(tconv, "convert", static_fails)
    art = convert_reference(tiny_prepared, "tflite", out=tmp_path / "fb", precision="int8", calibration=calib,
                            options={"observer": "minmax"}, use_cache=False)
    conv = art.manifest["conversion"]
    assert [a["route"] for a in conv["attempts"]] == ["int8_mode=static", "int8_mode=dynamic"]
    assert not conv["attempts"][0]["ok"] and "NHWC" in conv["attempts"][0]["error"]
    assert art.manifest["verification"]["status"] == "ok"
    with pytest.raises(ConversionError, match="NHWC"):  # a mode the user chose is not replaced
        convert_reference(tiny_prepared, "tflite", out=tmp_path / "no", precision="int8", calibration=calib,
                          options={"observer": "minmax", "int8_mode": "static"}, use_cache=False)


# -- a YOLOv5-style head: 5-D (na, ny, nx, no) view, int64 grid offsets, (2 * wh) ** 2 * anchor_grid ---------------


class Yolo5Head(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, 4, 1), nn.SiLU())
        self.m = nn.Conv2d(8, 3 * 7, 1)  # 3 anchors x (4 box + 1 obj + 2 classes)
        self.register_buffer("anchor_grid", torch.tensor([10.0, 13, 16, 30, 33, 23]).view(1, 3, 1, 1, 2))

    def forward(self, x):
        x = self.m(self.stem(x))
        bs, _, ny, nx = x.shape
        x = x.view(bs, 3, 7, ny, nx).permute(0, 1, 3, 4, 2).contiguous()
        yv, xv = torch.meshgrid(torch.arange(ny), torch.arange(nx), indexing="ij")
        grid = torch.stack((xv, yv), 2).view(1, 1, ny, nx, 2)  # int64, as YOLOv5's _make_grid before .float()
        y = x.sigmoid()
        xy = (y[..., 0:2] * 2.0 - 0.5 + grid) * 4
        wh = (y[..., 2:4] * 2) ** 2 * self.anchor_grid  # tfl.pow with an integer exponent: refused by litert
        return torch.cat((xy, wh, y[..., 4:]), -1).view(bs, -1, 7)


def build_yolo5() -> nn.Module:
    torch.manual_seed(0)
    return Yolo5Head()


def test_yolov5_head_converts_at_fp32_and_int8(tiny_calib_dir, out_root):
    """litert refused ``x ** 2`` on the 5-D tensor ('failed to legalize tfl.pow') at every precision, and the int8
    route observed the int64 grid offsets ('"histogram_cpu" not implemented for Long'): YOLOv5-Lite failed both."""
    from edgeconv.pipeline import prepare

    prep = prepare(f"{__file__}:build_yolo5", inputs=["images:1x3x64x64"], use_cache=False)
    for precision in ("fp32", "int8"):
        cal = make_calibration(prep, tiny_calib_dir, size=8) if precision == "int8" else None
        art = convert_reference(prep, "tflite", out=out_root / f"y5-{precision}", precision=precision,
                                calibration=cal, options={"observer": "histogram"}, use_cache=False)
        assert art.manifest["verification"]["status"] == "ok"
        if precision == "int8":
            assert art.manifest["conversion"]["quantization"]["integer_unannotated"]


def test_an_mlir_verifier_error_names_the_models_source_line():
    from edgeconv.targets.tflite.errors import explain

    text = ("Failed to run converter passes: /work/tp/sinet/models/SINet.py:524:0: error: 'tfl.mul' op operands "
            "don't have broadcast-compatible shapes\n<MLIR dump>")
    e = explain(RuntimeError(text), "fp32")
    assert e.message.startswith("litert-torch cannot build tfl.mul (fp32), from models/SINet.py:524: operands")
