"""OpenVINO target: fp32/fp16/int8 IR through the pipeline (convert + verify), routes, ignored scope, embedded
preprocessing, accuracy control and the async runner, on the tiny fixture model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("openvino", reason="OpenVINO not installed (pip install 'edgeconv[openvino]')")
pytest.importorskip("nncf", reason="NNCF not installed (pip install 'edgeconv[openvino]')")

from edgeconv.core.errors import ConfigError  # noqa: E402
from edgeconv.pipeline import convert_reference, make_calibration  # noqa: E402
from edgeconv.targets.base import OrtRunner  # noqa: E402
from edgeconv.targets.registry import get_target  # noqa: E402


@pytest.fixture(scope="module")
def calib(tiny_prepared, tiny_calib_dir):
    return make_calibration(tiny_prepared, tiny_calib_dir, size=32)


def _convert(prep, tmp_path: Path, precision: str, calib=None, **kw):
    return convert_reference(prep, "openvino", out=tmp_path / f"ov-{precision}", precision=precision,
                             calibration=calib, use_cache=False, **kw)


def _reference(prep, feeds):
    with OrtRunner(prep.reference.onnx_path) as r:
        return r.infer(feeds)


def test_registered():
    t = get_target("openvino")
    assert t.name == "openvino" and t.extra == "openvino"
    assert t.modules == ("openvino", "nncf") and t.precisions == ("fp32", "fp16", "bf16", "int8")


def test_fp32_ir_matches_reference(tiny_prepared, tmp_path):
    art = _convert(tiny_prepared, tmp_path, "fp32")
    conv = art.manifest["conversion"]
    assert conv["route"] == "onnx" and conv["format"] == "openvino-ir" and not conv["compress_to_fp16"]
    assert (art.path / "model.xml").is_file() and (art.path / "model.bin").stat().st_size > 0
    v = art.manifest["verification"]
    assert v["status"] == "ok" and v["drift"]["max_abs"] <= 1e-4
    # outputs come back under the reference ONNX's names
    feeds = tiny_prepared.reference.random_feeds(1, seed=7)[0]
    with get_target("openvino").runner(art) as r:
        got = r.infer(feeds)
    ref = _reference(tiny_prepared, feeds)
    assert set(got) == set(ref)
    for k in ref:
        np.testing.assert_allclose(got[k], ref[k], atol=1e-4)


def test_fp16_ir_halves_weights(tiny_prepared, tmp_path):
    fp32 = _convert(tiny_prepared, tmp_path, "fp32")
    fp16 = _convert(tiny_prepared, tmp_path, "fp16")
    assert fp16.manifest["conversion"]["compress_to_fp16"] is True
    v = fp16.manifest["verification"]
    assert v["status"] == "ok" and v["drift"]["max_abs"] <= 1e-2
    assert (fp16.path / "model.bin").stat().st_size < 0.6 * (fp32.path / "model.bin").stat().st_size


def test_torch_route(tiny_prepared, tmp_path):
    art = _convert(tiny_prepared, tmp_path, "fp32", options={"route": "torch"})
    conv = art.manifest["conversion"]
    assert conv["route"] == "torch" and conv["source"] == "torch.nn.Module"
    assert art.manifest["verification"]["drift"]["max_abs"] <= 1e-4


def test_int8_keep_fp32_becomes_ignored_scope(tiny_prepared, calib, tmp_path):
    # ONNX node names are what the one --keep-fp32 matcher resolves: the head's last conv, by its reference name
    import onnx

    head = [n.name for n in onnx.load(str(tiny_prepared.reference.onnx_path)).graph.node if n.op_type == "Conv"][-1]
    art = _convert(tiny_prepared, tmp_path, "int8", calib, keep_fp32=(head, "op:Sigmoid"))
    q = art.manifest["conversion"]["int8"]
    assert q["quantizer"] == "nncf.quantize" and q["calibration"]["size"] == 32
    assert q["ignored_scope"]["types"] == ["Swish"]  # ONNX Sigmoid(+Mul) is OpenVINO's fused Swish
    assert len(q["ignored_scope"]["names"]) == 1
    assert q["keep_fp32_matches"][head] == q["ignored_scope"]["names"]
    # the head conv really stayed float, the others were quantized
    assert q["float_layers"] == q["ignored_scope"]["names"]
    xml = (art.path / "model.xml").read_text()
    assert "FakeQuantize" in xml
    assert art.manifest["verification"]["status"] == "ok"


def test_a_reference_node_the_ir_no_longer_has_is_nothing_to_keep(tiny_prepared):
    """The float-fallback search ranks reference nodes; one OpenVINO folded away on reading the ONNX must not turn
    every attempt into a config error (it did: FastestDet's decode Concat)."""
    import openvino as ov

    from edgeconv.targets.openvino.int8 import resolve_ignored_scope

    model = ov.Core().read_model(str(tiny_prepared.reference.onnx_path))
    conv = next(op.get_friendly_name() for op in model.get_ordered_ops() if op.get_type_name() == "Convolution")
    scope, matched = resolve_ignored_scope(model, ("/folded/Concat", conv))
    assert matched == {"/folded/Concat": [], conv: [conv]} and scope == {"names": [conv], "types": []}


def test_keep_fp32_matching_nothing_is_an_error(tiny_prepared, calib, tmp_path):
    with pytest.raises(ConfigError, match="matches no layer"):
        _convert(tiny_prepared, tmp_path, "int8", calib, keep_fp32=("no_such_layer",))


def test_embed_preprocess_round_trip(tiny_prepared, calib, tmp_path):
    ov = pytest.importorskip("openvino")
    art = _convert(tiny_prepared, tmp_path, "fp32", calib, options={"embed_preprocess": True, "embed_color": "BGR"})
    meta = art.manifest["conversion"]["embedded_preprocess"]
    assert meta["raw_color"] == "BGR" and meta["model_color"] == "RGB" and art.manifest["input_layout"] == "NHWC"
    model = ov.Core().read_model(art.file("model"))
    assert model.inputs[0].get_element_type() == ov.Type.u8
    assert list(model.inputs[0].get_shape()) == [1, 64, 64, 3]
    # deployed path: a raw BGR u8 image in, the same outputs as the reference on the contract's float tensor
    rgb = calib.preprocess.load(calib.files[0])
    x = calib.preprocess.apply(rgb)
    ref = _reference(tiny_prepared, {"images": x})
    with get_target("openvino").runner(art) as r:
        raw = r.infer_raw(np.ascontiguousarray(rgb[None, ..., ::-1]))
        via_harness = r.infer({"images": x})
        assert r.last_route == "u8"  # a real image maps back onto exact pixels
        r.infer(tiny_prepared.reference.random_feeds(1)[0])
        assert r.last_route == "relaxed-f32"  # random tensors run the same graph with a float input
    for k in ref:
        np.testing.assert_allclose(raw[k], ref[k], atol=1e-4)
        np.testing.assert_allclose(via_harness[k], ref[k], atol=1e-4)


def test_runner_async_matches_sync(tiny_prepared, tmp_path):
    art = _convert(tiny_prepared, tmp_path, "fp32")
    feeds = tiny_prepared.reference.random_feeds(6, seed=3)
    with get_target("openvino").runner(art, performance_hint="THROUGHPUT", streams=2) as r:
        assert r.config["PERFORMANCE_HINT"] == "THROUGHPUT"
        sync = [r.infer(f) for f in feeds]
        batch = r.infer_async(feeds, streams=2)
    assert len(batch) == len(feeds)
    for a, b in zip(sync, batch, strict=True):
        for k in a:
            np.testing.assert_allclose(a[k], b[k], rtol=0, atol=1e-6)


def test_max_drop_without_metric_is_an_error(tiny_prepared, calib, tmp_path):
    with pytest.raises(ConfigError, match="validation function"):
        _convert(tiny_prepared, tmp_path, "int8", calib, options={"max_drop": 0.01})


def _agreement(compiled, items):
    """Toy task metric: mean cosine similarity of the model's output with the stored reference output."""
    scores = []
    for feeds, ref in items:
        out = np.asarray(compiled(feeds)[compiled.outputs[0]]).ravel()
        scores.append(float(out @ ref.ravel() / (np.linalg.norm(out) * np.linalg.norm(ref) + 1e-12)))
    return float(np.mean(scores))


def test_accuracy_control_with_pluggable_metric(tiny_prepared, calib, tmp_path):
    items = [(f, _reference(tiny_prepared, f)[tiny_prepared.reference.outputs[0].name])
             for f in list(calib.feeds())[:8]]
    art = _convert(tiny_prepared, tmp_path, "int8", calib,
                   options={"max_drop": 0.0005, "validation_fn": _agreement, "validation_data": items,
                            "validation_metric": "cosine"})
    q = art.manifest["conversion"]["int8"]
    assert q["quantizer"] == "nncf.quantize_with_accuracy_control" and q["validation"]["metric"] == "cosine"
    assert q["accuracy"]["drop"] <= 0.0005 + 1e-6
    assert isinstance(q["reverted_by_accuracy_control"], list)


def _bf16_here() -> bool:
    import openvino as ov

    return "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def test_fp32_ships_its_compile_config_and_a_deploy_snippet(tiny_prepared, tmp_path):
    import json
    import subprocess
    import sys

    art = _convert(tiny_prepared, tmp_path, "fp32")
    cfg = json.loads(art.file("compile_config").read_text())
    assert cfg["properties"]["INFERENCE_PRECISION_HINT"] == "f32" and cfg["device"] == "CPU"
    assert "compile_config.json" in art.manifest["files"] and "deploy_openvino.py" in art.manifest["files"]
    ip = art.manifest["conversion"]["inference_precision"]
    assert ip["pinned"] == "f32" and ip["runtime"]["compute_layers"] == {"f32": 3}
    # what a plain load runs is recorded, whatever this CPU's default is (bf16 where it has AVX-512-BF16/AMX)
    assert ip["default_load"] == ("bf16" if _bf16_here() else "f32")
    if ip["default_load"] != "f32":
        assert ip["default_load_drift"]["max_abs"] > ip["pinned_drift"]["max_abs"]
    # the snippet a user deploys with loads the pinned precision
    run = subprocess.run([sys.executable, str(art.file("deploy"))], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert "float32" in run.stdout.splitlines()[0]  # <Type: 'float32'>: the pinned precision, not the default


def test_bf16_is_its_own_precision(tiny_prepared, tmp_path):
    if not _bf16_here():
        pytest.skip("this CPU has no native bf16 (AVX-512-BF16/AMX)")
    art = _convert(tiny_prepared, tmp_path, "bf16")
    conv = art.manifest["conversion"]
    assert conv["compile_config"]["properties"]["INFERENCE_PRECISION_HINT"] == "bf16"
    assert conv["inference_precision"]["runtime"]["bf16_layers"] == 3
    v = art.manifest["verification"]
    assert v["status"] == "ok" and v["tolerance"]["cosine"] == 0.999
    assert 1e-6 < v["drift"]["max_abs"] < 1e-1  # really computed in bf16, and close
    with get_target("openvino").runner(art) as r:
        assert r.config["INFERENCE_PRECISION_HINT"] == "bf16"


def test_bf16_refused_on_a_cpu_without_it(tiny_prepared, tmp_path, monkeypatch):
    from edgeconv.targets.openvino import deploy

    monkeypatch.setattr(deploy, "cpu_capabilities", lambda core, device="CPU": ("FP32", "INT8", "BIN"))
    with pytest.raises(ConfigError, match="no native bf16"):
        _convert(tiny_prepared, tmp_path, "bf16")
    monkeypatch.setattr(deploy, "isa_features", lambda: {"AVX2": True, "BF16": False})
    assert "no native bf16" in get_target("openvino").skip_reason("bf16")
    assert get_target("openvino").skip_reason("fp32") is None


def test_int8_says_whether_vnni_ran(tiny_prepared, calib, tmp_path):
    from edgeconv.core.env import isa_features

    art = _convert(tiny_prepared, tmp_path, "int8", calib)
    q = art.manifest["conversion"]["int8"]
    rt = art.manifest["conversion"]["inference_precision"]["runtime"]
    assert q["int8_layers"] == rt["int8_layers"] >= 2
    assert q["vnni"] is bool(isa_features()["VNNI"] or rt["amx"])
    assert any("I8" in k or "i8" in k or "u8" in k for k in rt["kernels"])


def test_runner_reports_the_int8_path_and_float_precision(tiny_prepared, calib, tmp_path):
    from edgeconv.core.env import isa_features

    art = _convert(tiny_prepared, tmp_path / "q", "int8", calib)
    with get_target("openvino").runner(art) as r:
        c = r.compute("int8")
    assert c["source"] == "OpenVINO's execution graph" and c["compute_layers"].get("u8", 0) >= 2
    assert c["int8_path"] == ("VNNI" if isa_features()["VNNI"] else "no VNNI")
    assert "integer layers on oneDNN" in c["detail"]
    art = _convert(tiny_prepared, tmp_path / "f", "fp32")
    with get_target("openvino").runner(art) as r:
        c = r.compute("fp32")
    assert "int8_path" not in c and c["precision"] == "f32" and set(c["compute_layers"]) == {"f32"}


@pytest.mark.parametrize(("flags", "device", "expected"), [
    ({"AVX2": True, "VNNI": False, "AMX": False}, "CPU", "enable"),  # vpmaddubsw saturates: 7-bit weights
    ({"AVX2": True, "VNNI": True, "AMX": False}, "CPU", "first_layer_only"),
    ({"AVX2": True, "VNNI": False, "AMX": True}, "CPU", "first_layer_only"),
    ({"AVX2": True, "VNNI": False, "AMX": False}, "GPU", "first_layer_only"),
])
def test_overflow_fix_auto_follows_the_serving_cpu(monkeypatch, flags, device, expected):
    from edgeconv.core import env
    from edgeconv.targets.openvino.int8 import _overflow_fix

    monkeypatch.setattr(env, "isa_features", lambda: flags)
    assert _overflow_fix("auto", device) == expected
    assert _overflow_fix("disable", device) == "disable" and _overflow_fix("first_layer", device) == "first_layer_only"


def test_int8_records_the_overflow_fix_it_used(tiny_prepared, calib, tmp_path):
    from edgeconv.core.env import isa_features

    isa = isa_features()
    auto = _convert(tiny_prepared, tmp_path, "int8", calib).manifest["conversion"]["int8"]
    assert auto["overflow_fix"] == ("first_layer_only" if isa["VNNI"] or isa["AMX"] else "enable")
    off = _convert(tiny_prepared, tmp_path, "int8", calib, options={"overflow_fix": "disable"})
    assert off.manifest["conversion"]["int8"]["overflow_fix"] == "disable"


def test_the_cache_key_names_the_host_isa(tiny_prepared, monkeypatch):
    """An artifact verified on one CPU's kernels (and with options resolved by its ISA) is not another CPU's hit."""
    from edgeconv.core import env
    from edgeconv.pipeline import artifact_key, build_context
    from edgeconv.profiles import load_profile

    backend, ctx = build_context(tiny_prepared, load_profile("openvino"), "fp32")
    here = artifact_key(backend, ctx)
    monkeypatch.setattr(env, "isa_features", lambda: {"AVX2": True, "VNNI": True, "BF16": True})
    assert artifact_key(backend, ctx) != here


def test_onnx_route_that_differs_falls_back_to_torch(tiny_prepared, tmp_path, monkeypatch):
    import openvino as ov

    from edgeconv.targets.openvino import convert as ovc

    real = ovc._from_onnx

    def wrong(ctx):  # a converter bug: every output scaled by 1.5
        model = real(ctx)
        ops = ov.opset13
        res = model.get_results()[0]
        src = res.input(0).get_source_output()
        scaled = ops.multiply(src, ops.constant(np.float32(1.5)))
        res.input(0).replace_source_output(scaled.output(0))
        model.validate_nodes_and_infer_types()
        return model

    monkeypatch.setattr(ovc, "_from_onnx", wrong)
    art = _convert(tiny_prepared, tmp_path, "fp32")
    conv = art.manifest["conversion"]
    assert [a["route"] for a in conv["attempts"]] == ["onnx", "torch"]
    assert conv["attempts"][0]["ok"] is False and conv["attempts"][0]["check"]["failures"]
    assert conv["route"] == "torch" and art.manifest["verification"]["status"] == "ok"
    # an explicit --route is honoured as given: no fallback, and verification names the failure
    from edgeconv.core.errors import VerificationError

    with pytest.raises(VerificationError):
        _convert(tiny_prepared, tmp_path / "explicit", "fp32", options={"route": "onnx"})


def test_conversion_sends_no_telemetry() -> None:
    """OpenVINO's converter and NNCF run on their telemetry stubs once edgeconv's OpenVINO target is loaded: no
    sender thread (offline it waits on the network, and a worker forked meanwhile aborted)."""
    import subprocess
    import sys

    code = ("import sys; import edgeconv.targets.openvino; import openvino, nncf; "
            "from openvino.tools.ovc import convert_impl; from nncf.telemetry import wrapper; "
            "print(sys.modules.get('openvino_telemetry'), convert_impl.tm.__name__, "
            "isinstance(wrapper.telemetry, wrapper.NNCFTelemetryStub))")  # the stub is a MagicMock
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True)
    assert out.stdout.split()[-3:] == ["None", "openvino.tools.ovc.telemetry_stub", "True"], out.stdout
