"""ncnn target: exact ONNX rewrites, pnnx log handling, fp32/fp16/int8 conversion verified in the ncnn runtime."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

ncnn = pytest.importorskip("ncnn", reason="ncnn is not installed (pip install 'edgeconv[ncnn]')")
pytest.importorskip("pnnx", reason="pnnx is not installed (pip install 'edgeconv[ncnn]')")
onnx = pytest.importorskip("onnx", reason="onnx is needed for the rewrites")
ort = pytest.importorskip("onnxruntime", reason="onnxruntime runs the reference")
torch = pytest.importorskip("torch", reason="torch builds the small test models")

from torch import nn  # noqa: E402

from edgeconv.core.errors import ConversionError  # noqa: E402
from edgeconv.targets.ncnn import ncnnfile  # noqa: E402
from edgeconv.targets.ncnn.rewrites import apply_rewrites  # noqa: E402


# -- small models (factories are importable as f"{__file__}:name" by the pipeline) --------------------------------
class Focus(nn.Module):
    """YOLOv5's stem: four step-2 slices + concat, then a conv (or a ReLU: no conv to fold into)."""

    def __init__(self, conv: bool = True) -> None:
        super().__init__()
        self.conv = nn.Conv2d(12, 8, 3, padding=1) if conv else None
        self.head = nn.Conv2d(12 if not conv else 8, 4, 1)

    def forward(self, x):
        y = torch.cat([x[..., ::2, ::2], x[..., 1::2, ::2], x[..., ::2, 1::2], x[..., 1::2, 1::2]], 1)
        y = torch.nn.functional.silu(self.conv(y)) if self.conv is not None else torch.relu(y)
        return self.head(y)


class OptionA(nn.Module):
    """ResNet "option A" shortcut: x[:, :, ::2, ::2] zero-padded on channels, added to a stride-2 branch."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(4, 8, 3, stride=2, padding=1)

    def forward(self, x):
        short = torch.nn.functional.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, 2, 2))
        return torch.relu(self.conv(x) + short)


class ChannelStep(nn.Module):
    def forward(self, x):
        return x[:, ::2] * 2.0


class Peaks(nn.Module):
    """CenterNet's in-graph NMS: keep a heatmap value where its 3x3 max pool equals it (a float mask or a where)."""

    def __init__(self, where: bool = False) -> None:
        super().__init__()
        self.where = where
        self.conv = nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, x):
        h = torch.sigmoid(self.conv(x))
        m = torch.nn.functional.max_pool2d(h, 3, 1, 1)
        return torch.where(m == h, h, torch.zeros_like(h)) if self.where else h * (m == h).float()


def build_peaks(where: bool = False) -> nn.Module:
    torch.manual_seed(0)
    return Peaks(where).eval()


class TinyVit(nn.Module):
    """Patch conv, attention (ncnn MultiHeadAttention) and an MLP on tokens (Linear on 3-D input: ncnn Gemm)."""

    def __init__(self) -> None:
        super().__init__()
        self.patch = nn.Conv2d(3, 16, 8, 8)
        self.att = nn.MultiheadAttention(16, 2, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(16, 32), nn.GELU(), nn.Linear(32, 16))
        self.head = nn.Linear(16, 5)

    def forward(self, x):
        t = self.patch(x).flatten(2).transpose(1, 2)
        t = t + self.att(t, t, t, need_weights=False)[0]
        return self.head((t + self.mlp(t)).mean(1))


def build_focus() -> nn.Module:
    torch.manual_seed(0)
    return Focus().eval()


def export(module: nn.Module, shape: tuple[int, ...], path: Path) -> Path:
    x = torch.rand(*shape)
    torch.onnx.export(module.eval(), (x,), str(path), input_names=["x"], output_names=["y"], opset_version=17,
                      dynamo=False)
    return path


def run_onnx(model_or_path, x: np.ndarray, outputs: list[str] | None = None) -> list[np.ndarray]:
    data = model_or_path.SerializeToString() if hasattr(model_or_path, "SerializeToString") else str(model_or_path)
    sess = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    return sess.run(outputs, {"x": x})


# -- rewrites -----------------------------------------------------------------------------------------------------
def test_focus_rewrite_is_exact_and_folds_into_conv(tmp_path: Path) -> None:
    torch.manual_seed(0)
    path = export(Focus(conv=True), (1, 3, 16, 16), tmp_path / "focus.onnx")
    model = onnx.load(str(path))
    x = np.random.default_rng(0).random((1, 3, 16, 16), dtype=np.float32)
    before = run_onnx(model, x)[0]
    model, done = apply_rewrites(model)
    assert [d["rewrite"] for d in done] == ["focus->pixel_unshuffle"]
    assert done[0]["offsets"] == [[0, 0], [1, 0], [0, 1], [1, 1]] and done[0]["folded_into"]
    assert not any(n.op_type == "Slice" for n in model.graph.node)
    after = run_onnx(model, x)[0]
    # only the conv's summation order over input channels changed (weights permuted): float-rounding identical
    np.testing.assert_allclose(after, before, rtol=0, atol=2e-6)


@pytest.mark.parametrize("where", [False, True])
def test_peak_test_becomes_exact_arithmetic(tmp_path: Path, where: bool) -> None:
    """Equal(max_pool(h), h) has no ncnn layer; 1 - min(ceil(pool - h), 1) is the same mask bit for bit, ties
    (flat regions: several equal maxima in a window) included."""
    path = export(build_peaks(where), (1, 3, 16, 16), tmp_path / "peaks.onnx")
    model = onnx.load(str(path))
    rng = np.random.default_rng(0)
    xs = [rng.random((1, 3, 16, 16), dtype=np.float32), np.zeros((1, 3, 16, 16), np.float32),
          np.round(rng.random((1, 3, 16, 16)) * 2).astype(np.float32)]  # noise, flat, few levels: many ties
    before = [run_onnx(model, x)[0] for x in xs]
    model, done = apply_rewrites(model)
    assert [d["rewrite"] for d in done] == ["peak-equal->arithmetic"]
    assert not any(n.op_type in ("Equal", "Cast", "Where") for n in model.graph.node)
    for x, b in zip(xs, before, strict=True):
        assert np.array_equal(run_onnx(model, x)[0], b)


def test_an_equal_that_is_not_a_peak_test_is_left_alone(tmp_path: Path) -> None:
    class Eq(nn.Module):
        def forward(self, x):
            return (x == 0.5).float() * x

    model = onnx.load(str(export(Eq(), (1, 3, 8, 8), tmp_path / "eq.onnx")))
    _, done = apply_rewrites(model)
    assert done == []


def test_focus_without_conv_uses_exact_subsampling(tmp_path: Path) -> None:
    torch.manual_seed(0)
    path = export(Focus(conv=False), (1, 3, 16, 16), tmp_path / "focus_relu.onnx")
    model = onnx.load(str(path))
    x = np.random.default_rng(1).random((1, 3, 16, 16), dtype=np.float32)
    before = run_onnx(model, x)[0]
    model, done = apply_rewrites(model)
    assert {d["rewrite"] for d in done} == {"step-slice->maxpool1x1"} and len(done) >= 4  # chained per axis
    assert np.array_equal(run_onnx(model, x)[0], before)


def test_option_a_shortcut_rewritten_exactly_and_runs_in_ncnn(tmp_path: Path) -> None:
    from edgeconv.targets.ncnn.pnnx_log import run_pnnx
    from edgeconv.targets.ncnn.runner import NcnnRunner

    torch.manual_seed(0)
    path = export(OptionA(), (1, 4, 16, 16), tmp_path / "opta.onnx")
    model = onnx.load(str(path))
    x = np.random.default_rng(2).random((1, 4, 16, 16), dtype=np.float32)
    before = run_onnx(model, x)[0]
    model, done = apply_rewrites(model)
    assert {d["rewrite"] for d in done} == {"step-slice->maxpool1x1"}  # one per sliced axis (legacy export)
    assert np.array_equal(run_onnx(model, x)[0], before)
    model.ir_version = min(model.ir_version, 10)
    onnx.save(model, str(tmp_path / "opta_rw.onnx"))
    run = run_pnnx(tmp_path / "opta_rw.onnx", tmp_path / "pnnx", [([1, 4, 16, 16], "float32")], fp16=False,
                   timeout=120, route="onnx")
    assert run.ok, run.unsupported
    with NcnnRunner(run.param, run.bin, inputs={"x": ("in0", (1, 4, 16, 16))},
                    outputs={"y": ("out0", tuple(before.shape))}) as r:
        got = r.infer({"x": x})["y"]
    np.testing.assert_allclose(got, before, atol=1e-5)


def test_channel_step_slice_is_a_clear_error(tmp_path: Path) -> None:
    path = export(ChannelStep(), (1, 4, 8, 8), tmp_path / "chan.onnx")
    model = onnx.load(str(path))
    node = next(n.name for n in model.graph.node if n.op_type == "Slice")
    with pytest.raises(ConversionError, match=rf"Slice node '{node}'.*axis \[1\]"):
        apply_rewrites(model)


# -- pnnx log ------------------------------------------------------------------------------------------------------
def test_pnnx_log_names_unsupported_operator(tmp_path: Path) -> None:
    from edgeconv.targets.ncnn.convert import prepare_onnx
    from edgeconv.targets.ncnn.pnnx_log import describe_failure, parse_log, run_pnnx

    path = export(Focus(conv=False), (1, 3, 16, 16), tmp_path / "focus.onnx")
    plain = tmp_path / "plain.onnx"
    assert prepare_onnx(path, plain, rewrite=False) == []
    run = run_pnnx(plain, tmp_path / "p", [([1, 3, 16, 16], "float32")], fp16=False, timeout=120, route="onnx")
    assert run.returncode == 0  # pnnx says "fine" ...
    assert not run.ok  # ... but left layers ncnn cannot run
    assert {u["type"] for u in run.unsupported} == {"Tensor.slice"} and len(run.unsupported) >= 4
    assert all("2" in (u["params"].get("steps") or u["params"].get("step", "")) for u in run.unsupported)
    msg = describe_failure(run, plain)
    assert "Tensor.slice" in msg and "step=2" in msg and "(Slice)" in msg and "not supported" in msg
    ignored, messages = parse_log("ignore Tensor.slice s_1 param steps=(2,2)\nslice with step 2 is not supported\n")
    assert ignored == {"s_1": {"type": "Tensor.slice", "steps": "(2,2)"}}
    assert messages == ["slice with step 2 is not supported"]


# -- pipeline: fp32 / fp16 / int8 ---------------------------------------------------------------------------------
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_tiny_model_converts_and_verifies(tiny_prepared, tmp_path: Path, precision: str) -> None:
    from edgeconv.pipeline import convert_reference

    art = convert_reference(tiny_prepared, "ncnn", out=tmp_path / precision, precision=precision, use_cache=False)
    m = json.loads((tmp_path / precision / "manifest.json").read_text())
    conv = m["conversion"]
    assert conv["route"] == "onnx" and conv["blobs"]["inputs"] == {"images": "in0"}
    assert conv["runtime"]["fp16_storage"] is (precision == "fp16")
    assert m["verification"]["status"] == "ok"
    if precision == "fp32":
        assert m["verification"]["drift"]["max_abs"] <= 1e-4
    else:
        assert m["verification"]["drift"]["cosine"] >= 0.999
        tags = ncnnfile.load(art.file("model"), art.file("weights"))
        assert any(w.data.dtype == np.float16 for la in tags.layers for w in la.weights)


@pytest.mark.parametrize("where", [False, True])
def test_centernet_peaks_convert_and_verify(tmp_path: Path, where: bool) -> None:
    from edgeconv.pipeline import convert_reference, prepare

    prep = prepare(build_peaks(where), inputs=["x:1x3x32x32"], use_cache=False)
    art = convert_reference(prep, "ncnn", out=tmp_path / "a", precision="fp32", use_cache=False)
    assert art.manifest["verification"]["status"] == "ok"
    assert [r["rewrite"] for r in art.manifest["conversion"]["rewrites"]] == ["peak-equal->arithmetic"]


def test_int8_walks_the_weights_of_attention_and_gemm_layers(tiny_calib_dir: Path, tmp_path: Path) -> None:
    """Re-packing the .bin walks every layer's weights: MultiHeadAttention and Gemm are walked (and left float)
    rather than refusing the model; the walk must consume the file exactly, or load() raises."""
    from edgeconv.pipeline import convert_reference, make_calibration, prepare

    torch.manual_seed(0)
    prep = prepare(TinyVit().eval(), inputs=["x:1x3x64x64"], use_cache=False)
    calib = make_calibration(prep, tiny_calib_dir, size=16)
    art = convert_reference(prep, "ncnn", out=tmp_path / "int8", precision="int8", calibration=calib,
                            use_cache=False)
    param = art.file("model").read_text()
    assert "MultiHeadAttention" in param and "Gemm" in param
    assert art.manifest["conversion"]["int8"]["layers_int8"] >= 1 and art.manifest["verification"]["status"] == "ok"


def test_focus_model_converts_fp32(tmp_path: Path) -> None:
    from edgeconv.pipeline import convert_reference, prepare

    prep = prepare(f"{__file__}:build_focus", inputs=["x:1x3x32x32"], exporters=("legacy",))
    art = convert_reference(prep, "ncnn", out=tmp_path / "focus", precision="fp32", use_cache=False)
    conv = art.manifest["conversion"]
    assert [r["rewrite"] for r in conv["rewrites"]] == ["focus->pixel_unshuffle"]
    assert "Reorg" in art.file("model").read_text()
    assert art.manifest["verification"]["drift"]["max_abs"] <= 1e-4


def _single_conv(tmp_path: Path, k: int, stride: int, cin: int = 8, cout: int = 16):
    rng = np.random.default_rng(k * 10 + stride)
    w = rng.normal(0, 0.2, (cout, cin, k, k)).astype(np.float32)
    b = rng.normal(0, 0.1, cout).astype(np.float32)
    pad = k // 2
    params = {0: str(cout), 1: str(k), 11: str(k), 2: "1", 12: "1", 3: str(stride), 13: str(stride), 4: str(pad),
              14: str(pad), 5: "1", 6: str(w.size)}
    layers = [ncnnfile.Layer("Input", "in", [], ["x"], {0: "12", 1: "12", 2: str(cin)}),
              ncnnfile.Layer("Convolution", "conv", ["x"], ["y"], params,
                             [ncnnfile.Blob(w.ravel(), True), ncnnfile.Blob(b, False)])]
    return ncnnfile.NcnnModel(layers, 2), w, b


@pytest.mark.parametrize("k,stride", [(3, 2), (1, 1), (3, 1)])
def test_int8_files_match_ncnn_runtime_semantics(tmp_path: Path, k: int, stride: int) -> None:
    """A conv quantized by edgeconv with known scales equals the integer arithmetic ncnn documents."""
    from edgeconv.targets.ncnn.int8 import quantize_layers, to_int8, weight_scales
    from edgeconv.targets.ncnn.runner import NcnnRunner

    model, w, b = _single_conv(tmp_path, k, stride)
    x = np.random.default_rng(5).uniform(-1, 1, (1, 8, 12, 12)).astype(np.float32)
    sx = 127.0 / 1.0
    sw = weight_scales(model.layers[1])
    assert np.allclose(sw, (31.0 if (k, stride) == (3, 1) else 127.0) / np.abs(w.reshape(16, -1)).max(1))
    assert quantize_layers(model, {"conv": sx}, {"conv": sw}) == ["conv"]
    model.write(tmp_path / "q.param", tmp_path / "q.bin")
    reread = ncnnfile.load(tmp_path / "q.param", tmp_path / "q.bin")  # the layout round-trips
    assert reread.layers[1].pint(8) == 2 and reread.layers[1].weights[0].data.dtype == np.int8
    # emulate: int8 x int8 → int32, dequantize by 1/(sx*sw), add bias
    qx = torch.from_numpy(to_int8(x, sx).astype(np.float32))
    qw = torch.from_numpy(to_int8(w.reshape(16, -1), sw[:, None]).reshape(w.shape).astype(np.float32))
    acc = torch.nn.functional.conv2d(qx, qw, stride=stride, padding=k // 2).numpy().astype(np.float64)
    want = acc / (sx * sw[None, :, None, None]) + b[None, :, None, None]
    exact = torch.nn.functional.conv2d(torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(b), stride=stride,
                                       padding=k // 2).numpy()
    with NcnnRunner(tmp_path / "q.param", tmp_path / "q.bin", inputs={"x": ("x", x.shape)},
                    outputs={"y": ("y", want.shape)}, runtime={"int8": True}) as r:
        got = r.infer({"x": x})["y"]
    np.testing.assert_allclose(got, want, atol=1e-4)  # the runtime reads our files as we meant them
    assert np.abs(got - exact).max() > 1e-4  # ... and really ran int8 (not the float weights)


def test_int8_tiny_model_runs_in_ncnn_and_stays_close(tiny_prepared, tiny_calib_dir: Path, tmp_path: Path) -> None:
    from edgeconv.pipeline import convert_reference, make_calibration

    calib = make_calibration(tiny_prepared, tiny_calib_dir, size=16)
    art = convert_reference(tiny_prepared, "ncnn", out=tmp_path / "int8", precision="int8", calibration=calib,
                            use_cache=False)
    meta = art.manifest["conversion"]["int8"]
    assert meta["layers_int8"] == 3 and meta["calib_method"] == "minmax"  # the measured default (not ncnn2table's KL)
    assert art.file("model").read_text().count(" 8=2") == 3
    table = art.file("table").read_text().splitlines()
    assert sum("_param_0" in t for t in table) == 3 and len(table) == 6
    v = art.manifest["verification"]
    assert v["status"] == "ok" and v["drift"]["cosine"] >= 0.97 and v["drift"]["max_abs"] > 0


def test_int8_activation_scales_from_shared_stats_match_ncnn_calibration(tiny_prepared, tiny_calib_dir: Path,
                                                                           tmp_path: Path) -> None:
    """minmax scales read from the reference's shared statistics (matched onto ncnn blobs by value) are the scales
    the fp32 ncnn net itself measures on the same calibration sample, to fp32 rounding."""
    from edgeconv.pipeline import convert_reference, make_calibration
    from edgeconv.targets.ncnn import ncnnfile
    from edgeconv.targets.ncnn.int8 import activation_scales

    calib = make_calibration(tiny_prepared, tiny_calib_dir, size=16)
    art = convert_reference(tiny_prepared, "ncnn", out=tmp_path / "int8", precision="int8", calibration=calib,
                            use_cache=False)
    meta = art.manifest["conversion"]
    assert meta["int8"]["activation_absmax"].startswith("the reference's shared minmax statistics")
    table = dict(line.split(" ", 1) for line in art.file("table").read_text().splitlines())
    shared = {k: float(v) for k, v in table.items() if not k.endswith("_param_0")}
    fp = convert_reference(tiny_prepared, "ncnn", out=tmp_path / "fp32", precision="fp32", use_cache=False)
    model = ncnnfile.load(fp.file("model"), fp.file("weights"))
    layers = [la for la in model.layers if la.name in shared]
    own, stats = activation_scales(fp.file("model"), fp.file("weights"), layers, calib.feeds(),
                                   meta["blobs"]["inputs"], "minmax")
    assert stats["blobs_from_ncnn"] == len({la.bottoms[0] for la in layers}) and len(own) == len(shared) == 3
    for name, scale in own.items():
        assert shared[name] == pytest.approx(scale, rel=1e-4), name


# -- runner --------------------------------------------------------------------------------------------------------
def test_runner_batches_and_restores_nchw(tiny_prepared, tmp_path: Path) -> None:
    from edgeconv.core.artifact import Artifact
    from edgeconv.pipeline import convert_reference
    from edgeconv.targets.base import OrtRunner
    from edgeconv.targets.ncnn import NcnnTarget

    convert_reference(tiny_prepared, "ncnn", out=tmp_path / "a", precision="fp32", use_cache=False)
    art = Artifact.load(tmp_path / "a")
    x = np.random.default_rng(0).random((1, 3, 64, 64), dtype=np.float32)
    with NcnnTarget().runner(art, threads=1) as r, OrtRunner(tiny_prepared.reference.onnx_path) as o:
        one = r.infer({"images": x})["output"]
        ref = o.infer({"images": x})["output"]
        assert one.shape == ref.shape == (1, 4, 32, 32)
        np.testing.assert_allclose(one, ref, atol=1e-4)
        two = r.infer({"images": np.concatenate([x, x[:, :, ::-1]])})["output"]
        assert two.shape == (2, 4, 32, 32) and np.array_equal(two[0], one[0])
        wrong = {"output": (r.outputs["output"][0], (1, 4, 16, 16))}
    from edgeconv.targets.ncnn.runner import NcnnRunner

    with (NcnnRunner(art.file("model"), art.file("weights"), inputs=r.inputs, outputs=wrong, threads=1) as bad,
          pytest.raises(Exception, match="needs 1024 values")):
        bad.infer({"images": x})


def test_int8_kl_thresholds_still_selectable(tiny_prepared, tiny_calib_dir: Path, tmp_path: Path) -> None:
    """ncnn2table's KL search stays available (``--calib-method entropy`` maps to it); unknown methods are refused."""
    from edgeconv.core.errors import ConfigError
    from edgeconv.pipeline import convert_reference, make_calibration

    calib = make_calibration(tiny_prepared, tiny_calib_dir, size=16)
    art = convert_reference(tiny_prepared, "ncnn", out=tmp_path / "kl", precision="int8", calibration=calib,
                            options={"calib_method": "entropy"}, use_cache=False)
    assert art.manifest["conversion"]["int8"]["calib_method"] == "kl"
    with pytest.raises(ConfigError, match="percentile"):
        convert_reference(tiny_prepared, "ncnn", out=tmp_path / "pc", precision="int8", calibration=calib,
                          options={"calib_method": "percentile"}, use_cache=False)
    assert not (tmp_path / "pc").exists()


# -- routes: --route honoured, fallbacks recorded, unsupported operators in one line -------------------------------
class GlobalMaxGate(nn.Module):
    """A segmentation-style gate: a global max over H, W (ONNX ReduceMax, which pnnx's ONNX route leaves to ncnn
    unconverted while its TorchScript route maps torch.amax)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.head = nn.Conv2d(8, 2, 1)

    def forward(self, x):
        y = torch.relu(self.conv(x))
        return self.head(y * torch.sigmoid(torch.amax(y, dim=(2, 3), keepdim=True)))


@pytest.fixture(scope="module")
def gate_prepared():
    from edgeconv.pipeline import prepare

    torch.manual_seed(0)
    return prepare(GlobalMaxGate(), inputs=["x:1x3x32x32"])


def test_route_torch_is_honoured(tiny_prepared, tmp_path: Path) -> None:
    from edgeconv.pipeline import convert_reference

    art = convert_reference(tiny_prepared, "ncnn", out=tmp_path / "t", precision="fp32", use_cache=False,
                            options={"route": "torch"})
    conv = art.manifest["conversion"]
    assert conv["route"] == "torch" and [a["route"] for a in conv["attempts"]] == ["torch"]
    assert art.manifest["verification"]["drift"]["max_abs"] <= 1e-4


def test_unsupported_operator_is_one_line_naming_op_node_and_route(gate_prepared, tmp_path: Path) -> None:
    from edgeconv.core.keep import graph_nodes
    from edgeconv.pipeline import convert_reference

    node = next(n for n, op, _ in graph_nodes(gate_prepared.reference.onnx_path) if op == "ReduceMax")
    with pytest.raises(ConversionError) as ei:
        convert_reference(gate_prepared, "ncnn", out=tmp_path / "g", precision="fp32", use_cache=False,
                          options={"route": "onnx"})
    msg = ei.value.message
    assert "\n" not in msg and len(msg) < 400
    assert "ReduceMax" in msg and f"{node} (ReduceMax)" in msg and "onnx route" in msg
    assert "--route torch" in ei.value.hint


def test_default_route_falls_back_to_torch_and_records_attempts(gate_prepared, tmp_path: Path) -> None:
    from edgeconv.pipeline import convert_reference

    art = convert_reference(gate_prepared, "ncnn", out=tmp_path / "g", precision="fp32", use_cache=False)
    conv = art.manifest["conversion"]
    assert conv["route"] == "torch"
    first, second = conv["attempts"]
    assert first["route"] == "onnx" and not first["ok"] and first["unsupported"][0]["type"] == "ReduceMax"
    assert second["route"] == "torch" and second["ok"]
    assert art.manifest["verification"]["status"] == "ok"


def test_onnx_route_that_differs_falls_back_to_torch(tiny_prepared, tmp_path: Path, monkeypatch) -> None:
    """A converter bug that gives a runnable but wrong model is caught before returning, and the torch route used."""
    from onnx import helper

    from edgeconv.pipeline import convert_reference
    from edgeconv.targets.ncnn import convert as nc

    real = nc.prepare_onnx

    def wrong(onnx_path, out, rewrite=True):
        done = real(onnx_path, out, rewrite)
        m = onnx.load(str(out))
        y = m.graph.output[0].name
        producer = next(n for n in m.graph.node if y in n.output)
        producer.output[list(producer.output).index(y)] = "pre_scale"
        m.graph.initializer.append(onnx.numpy_helper.from_array(np.array(1.5, np.float32), "k15"))
        m.graph.node.append(helper.make_node("Mul", ["pre_scale", "k15"], [y], name="corrupt"))
        onnx.save(m, str(out))
        return done

    monkeypatch.setattr(nc, "prepare_onnx", wrong)
    art = convert_reference(tiny_prepared, "ncnn", out=tmp_path / "w", precision="fp32", use_cache=False)
    conv = art.manifest["conversion"]
    assert [a["route"] for a in conv["attempts"]] == ["onnx", "torch"]
    assert conv["attempts"][0]["check"]["failures"] and conv["route"] == "torch"
    assert art.manifest["verification"]["status"] == "ok"


def test_explicit_torch_route_failure_points_to_the_onnx_route(tmp_path: Path) -> None:
    """YOLOv5's Focus stem: pnnx's TorchScript route leaves step-2 slices; only the onnx route's rewrite maps them."""
    from edgeconv.pipeline import convert_reference, prepare

    prep = prepare(f"{__file__}:build_focus", inputs=["x:1x3x32x32"], exporters=("legacy",))
    with pytest.raises(ConversionError) as ei:
        convert_reference(prep, "ncnn", out=tmp_path / "f", precision="fp32", use_cache=False,
                          options={"route": "torch"})
    msg = ei.value.message
    assert "torch route" in msg and "Tensor.slice x4" in msg and len(msg) < 400 and "\n" not in msg
    assert "default onnx route" in ei.value.hint


@pytest.mark.parametrize("first", ["ReLU relu 1 1 in0 out0", "Split sp 1 2 in0 a b\nReLU relu 1 1 a out0"])
def test_input_read_in_place_gets_a_mat_of_its_own(tmp_path: Path, first: str) -> None:
    """A Mat wrapping the caller's array has no reference count: in light mode a layer working in place on the
    input (here ReLU, directly or behind a Split) dereferenced it (SIGSEGV) or would overwrite the caller's array."""
    from edgeconv.targets.ncnn.runner import NcnnRunner, wrappable_inputs

    body = first.splitlines()
    param = tmp_path / "m.param"
    param.write_text("\n".join(["7767517", f"{1 + len(body)} {2 + 2 * (len(body) - 1)}",
                                 "Input in0 0 1 in0 0=4 1=4 2=3", *body]) + "\n")
    (tmp_path / "m.bin").write_bytes(b"")
    assert wrappable_inputs(param, ["in0"]) == frozenset()
    x = np.random.default_rng(0).standard_normal((2, 3, 4, 4)).astype(np.float32)
    x0 = x.copy()
    with NcnnRunner(param, tmp_path / "m.bin", inputs={"x": ("in0", (1, 3, 4, 4))},
                    outputs={"y": ("out0", (1, 3, 4, 4))}, runtime={"light_mode": True}, threads=1) as r:
        y = r.infer({"x": x})["y"]
    np.testing.assert_array_equal(x, x0)
    np.testing.assert_array_equal(y, np.maximum(x0, 0))
    # The device worker's runner (numpy + ncnn only) on the same file.
    from edgeconv.devices.worker import NcnnRunner as WorkerRunner

    mf = {"roles": {"model": "m.param", "weights": "m.bin"}, "inputs": [{"name": "x", "shape": [1, 3, 4, 4]}],
          "outputs": [{"name": "y"}], "conversion": {"blobs": {"inputs": {"x": "in0"}, "outputs": {"y": "out0"}},
                                                     "output_shapes": {"y": [1, 3, 4, 4]}, "runtime": {}}}
    w = WorkerRunner(tmp_path, mf, 1)
    np.testing.assert_array_equal(w.infer({"x": x})["y"], np.maximum(x0, 0))
    np.testing.assert_array_equal(x, x0)


def test_input_read_by_a_convolution_is_wrapped_without_a_copy(tmp_path: Path) -> None:
    from edgeconv.targets.ncnn.runner import wrappable_inputs

    param = tmp_path / "m.param"
    param.write_text("7767517\n4 4\nInput in0 0 1 in0\nReorg r 1 1 in0 a 0=2\nInput in1 0 1 in1\n"
                     "BinaryOp add 2 1 a in1 out0 0=0\n")
    assert wrappable_inputs(param, ["in0", "in1"]) == frozenset({"in0"})
    assert wrappable_inputs(tmp_path / "missing.param", ["in0"]) == frozenset()


# -- Swish fusion on pnnx's output ----------------------------------------------------------------------------------
def _run_param(tmp_path: Path, text: str, x: np.ndarray, outs: list[str]) -> list[np.ndarray]:
    (tmp_path / "f.param").write_text(text)
    net = ncnn.Net()
    net.opt.num_threads, net.opt.use_vulkan_compute = 1, False
    net.load_param(str(tmp_path / "f.param"))
    net.load_model(str(tmp_path / "m.bin"))
    ex = net.create_extractor()
    mat = ncnn.Mat(np.ascontiguousarray(x)).clone()  # ncnn-owned: Split + in-place Sigmoid read the input
    ex.input("in0", mat)
    got = [np.array(ex.extract(o)[1], copy=True) for o in outs]
    del ex, mat
    net.clear()
    return got


@pytest.mark.parametrize("split_tops,mul_order", [(2, "direct-first"), (2, "sigmoid-first"), (3, "direct-first")])
def test_split_sigmoid_mul_becomes_swish_with_the_same_values(tmp_path: Path, split_tops: int, mul_order: str) -> None:
    """pnnx leaves a SiLU that feeds a residual add as Split → Sigmoid → BinaryOp(mul); fused it is one Swish layer
    (a Split keeps consumers of x beyond the two), and the net computes the same numbers."""
    from edgeconv.targets.ncnn.fuse import fuse_swish

    tops = ["a", "b", "c"][:split_tops]
    mul_in = "a s" if mul_order == "direct-first" else "s a"
    body = [f"Split sp 1 {split_tops} in0 {' '.join(tops)}", "Sigmoid sig 1 1 b s", f"BinaryOp mul 2 1 {mul_in} m 0=2"]
    if split_tops == 3:
        body.append("BinaryOp add 2 1 m c out0 0=0")
    else:
        body.append("ReLU relu 1 1 m out0")
    text = "\n".join(["7767517", f"{1 + len(body)} 99", "Input in0 0 1 in0 0=4 1=4 2=3", *body]) + "\n"
    layers, _ = ncnnfile.parse_param(text)
    fused_layers, fused = fuse_swish(layers)
    assert fused == ["mul"]
    types = [la.type for la in fused_layers]
    assert "Sigmoid" not in types and types.count("Swish") == 1 and ("Split" in types) is (split_tops == 3)
    (tmp_path / "m.bin").write_bytes(b"")
    new = ncnnfile.NcnnModel(fused_layers, ncnnfile.count_blobs(fused_layers)).param_text()
    x = np.random.default_rng(1).standard_normal((3, 4, 4)).astype(np.float32) * 3
    before = _run_param(tmp_path, text.replace(" 99\n", f" {ncnnfile.count_blobs(layers)}\n", 1), x, ["out0"])[0]
    after = _run_param(tmp_path, new, x, ["out0"])[0]
    np.testing.assert_allclose(after, before, rtol=1e-6, atol=1e-6)
    silu = x / (1 + np.exp(-x))
    np.testing.assert_allclose(after, silu + x if split_tops == 3 else np.maximum(silu, 0), rtol=1e-5, atol=1e-5)


def test_swish_fusion_leaves_other_patterns_alone() -> None:
    from edgeconv.targets.ncnn.fuse import fuse_swish

    cases = [
        # the sigmoid of one tensor times another tensor (an attention gate), not x * sigmoid(x)
        "Input in0 0 1 in0\nInput in1 0 1 in1\nSigmoid sig 1 1 in1 s\nBinaryOp mul 2 1 in0 s out0 0=2",
        # x + sigmoid(x): not a multiplication
        "Input in0 0 1 in0\nSplit sp 1 2 in0 a b\nSigmoid sig 1 1 b s\nBinaryOp add 2 1 a s out0 0=0",
        # the sigmoid is also an output of the net (read twice through a Split)
        "Input in0 0 1 in0\nSplit sp 1 2 in0 a b\nSigmoid sig 1 1 b s\nSplit sp2 1 2 s s1 s2\n"
        "BinaryOp mul 2 1 a s1 out0 0=2",
    ]
    for body in cases:
        layers, _ = ncnnfile.parse_param("7767517\n9 9\n" + body + "\n")
        out, fused = fuse_swish(layers)
        assert fused == [] and [la.type for la in out] == [la.type for la in layers]


class ResidualSiLU(nn.Module):
    """YOLOv8/11's bottleneck: x + SiLU(conv(SiLU(conv(x)))) — the pattern pnnx's ONNX route does not fuse."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.cv1, self.cv2 = nn.Conv2d(8, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1)

    def forward(self, x):
        x = torch.nn.functional.silu(self.stem(x))
        return x + torch.nn.functional.silu(self.cv2(torch.nn.functional.silu(self.cv1(x))))


def build_residual_silu() -> nn.Module:
    torch.manual_seed(0)
    return ResidualSiLU().eval()


def test_residual_silu_converts_to_swish_layers_only(tmp_path: Path) -> None:
    from edgeconv.pipeline import convert_reference, prepare

    prep = prepare(f"{__file__}:build_residual_silu", inputs=["x:1x3x16x16"])
    art = convert_reference(prep, "ncnn", out=tmp_path / "fused", precision="fp32", use_cache=False)
    types = [la.type for la in ncnnfile.parse_param(art.file("model").read_text())[0]]
    assert types.count("Swish") == 3 and "Sigmoid" not in types
    assert len(art.manifest["conversion"]["attempts"][0]["fused_swish"]) >= 1
    assert art.manifest["verification"]["status"] == "ok"
    assert art.manifest["verification"]["drift"]["max_abs"] <= 1e-4
    plain = convert_reference(prep, "ncnn", out=tmp_path / "plain", precision="fp32", use_cache=False,
                              options={"fuse": False})
    assert "Sigmoid" in plain.file("model").read_text()  # what pnnx alone leaves, so the test above tests the fusion


def test_a_layer_the_ncnn_build_lacks_is_named_when_the_net_is_loaded(tmp_path: Path) -> None:
    """pnnx writes an ArgMax layer the pip wheel is built without; ncnn's load_param then fails with its reason on
    stderr only. The runner names the layer instead of 'could not load'."""
    import ncnn

    from edgeconv.targets.ncnn.runner import NcnnRunner, missing_layers

    param = tmp_path / "m.param"
    param.write_text("7767517\n3 3\nInput in0 0 1 in0\nAbsVal abs 1 1 in0 a\nArgMax am 1 1 a out0\n")
    (tmp_path / "m.bin").write_bytes(b"")
    assert missing_layers(ncnn, param) == ["ArgMax"]
    with pytest.raises(ConversionError, match="no ArgMax layer"):
        NcnnRunner(param, tmp_path / "m.bin", inputs={"x": ("in0", (1, 3, 4, 4))}, outputs={})
