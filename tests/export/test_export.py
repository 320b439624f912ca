"""Export: both exporters verified against torch, awkward modules, dynamic axes, simplification records."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from edgeconv.core.errors import ConfigError, ExportError
from edgeconv.core.tensors import TensorSpec, random_feeds
from edgeconv.export.onnx_export import DynamicSpec, export_verified, onnx_outputs
from edgeconv.export.reference import prepare_reference
from edgeconv.intake.loader import load_source

FIX = Path(__file__).parents[1] / "fixtures" / "tiny_model.py"
SPEC = [TensorSpec("images", (1, 3, 32, 32), "float32", "NCHW")]


@pytest.mark.parametrize("route", ["legacy", "dynamo"])
def test_each_exporter_is_verified(tmp_path: Path, route: str) -> None:
    src = load_source(f"{FIX}:build")
    feeds = [random_feeds(SPEC, seed=i) for i in range(2)]
    rec = export_verified(src.module, SPEC, ["logits"], tmp_path / "m.onnx", exporters=(route,), sample_feeds=feeds)
    assert rec["route"] == route and rec["max_abs_vs_torch"] < 1e-4
    assert rec["attempts"] == [{"route": route, "ok": True, "opset": rec["opset"],
                                "max_abs_vs_torch": rec["max_abs_vs_torch"]}]


def test_dict_outputs_inplace_ops_and_shadowing_attributes(tmp_path: Path) -> None:
    src = load_source(f"{FIX}:build_shadowing")
    assert isinstance(src.module.train, dict)  # the attribute that breaks module.eval()
    assert not src.module.bn.training  # ... and inference mode was still set
    feeds = [random_feeds(SPEC, seed=0)]
    rec = export_verified(src.module, SPEC, None, tmp_path / "m.onnx", sample_feeds=feeds)
    assert rec["output_names"] == ["output0", "output1"]


class _AuxNone(torch.nn.Module):
    """Returns ``(y, None, pooled)``: the None an auxiliary head gives outside training."""

    def __init__(self) -> None:
        super().__init__()
        self.c = torch.nn.Conv2d(3, 4, 3)

    def forward(self, x):  # noqa: ANN001, ANN201
        y = self.c(x)
        return y, None, {"pooled": y.mean((2, 3)), "aux": None}


@pytest.mark.parametrize("route", ["legacy", "dynamo"])
def test_none_outputs_are_no_outputs(tmp_path: Path, route: str) -> None:
    feeds = [random_feeds(SPEC, seed=0)]
    rec = export_verified(_AuxNone().eval(), SPEC, None, tmp_path / "m.onnx", exporters=(route,), sample_feeds=feeds)
    assert rec["output_names"] == ["output0", "output1"] and rec["max_abs_vs_torch"] < 1e-5


def test_none_outputs_are_dropped_on_the_torch_routes_too() -> None:
    from edgeconv.targets.base import flat_module

    outs = flat_module(_AuxNone().eval())(torch.rand(1, 3, 8, 8))
    assert [tuple(o.shape) for o in outs] == [(1, 4, 6, 6), (1, 4)]


def test_failing_exporters_report_their_reasons(tmp_path: Path) -> None:
    @torch.library.custom_op("edgeconv_test::twice", mutates_args=())
    def twice(x: torch.Tensor) -> torch.Tensor:  # a custom op neither exporter can translate
        return x * 2

    @twice.register_fake
    def _(x: torch.Tensor) -> torch.Tensor:
        return torch.empty_like(x)

    class Bad(torch.nn.Module):
        def forward(self, x):
            return twice(x)

    with pytest.raises(ExportError) as ei:
        export_verified(Bad(), SPEC, None, tmp_path / "m.onnx", sample_feeds=[random_feeds(SPEC)])
    assert "dynamo:" in ei.value.message and "legacy:" in ei.value.message
    assert not (tmp_path / "m.onnx").exists()


def test_dynamic_batch_records_profile() -> None:
    src = load_source(f"{FIX}:build")
    ref = prepare_reference(src, SPEC, dynamic=DynamicSpec(batch=True, max_batch=4), exporters=("legacy",),
                            use_cache=False)
    assert ref.dynamic_profiles["images"] == {"min": [1, 3, 32, 32], "opt": [1, 3, 32, 32], "max": [4, 3, 32, 32]}
    x = np.random.default_rng(0).random((3, 3, 32, 32), dtype=np.float32)
    out = onnx_outputs(ref.onnx_path, {"images": x})
    assert next(iter(out.values())).shape[0] == 3


def test_reference_records_simplification_and_uses_cache() -> None:
    src = load_source(f"{FIX}:build")
    a = prepare_reference(src, SPEC)
    b = prepare_reference(src, SPEC)
    assert a.record["cache"] == "miss" and b.record["cache"] == "hit"
    s = a.record["simplify"]
    assert s["simplifier"] in ("onnxsim", "onnxslim") and sum(s["ops_after"].values()) == s["nodes_after"]
    assert a.sha256 == b.sha256


def test_onnx_input_skips_export(tmp_path: Path) -> None:
    src = load_source(f"{FIX}:build")
    ref = prepare_reference(src, SPEC, use_cache=False)
    onnx_src = load_source(str(ref.onnx_path))
    ref2 = prepare_reference(onnx_src, None, use_cache=False)
    assert ref2.record["export"]["route"] == "onnx-input"
    assert ref2.inputs[0].shape == (1, 3, 32, 32)


class _Seg(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.c = torch.nn.Conv2d(3, 4, 3, 1, 1)

    def forward(self, x):  # noqa: ANN001, ANN201
        return torch.nn.functional.interpolate(torch.nn.functional.relu6(self.c(x)), scale_factor=2.0, mode="bilinear")


def test_a_float16_onnx_model_is_referenced_by_its_float32_upcast(tmp_path: Path) -> None:
    """A ``half=True`` export: float16 inputs, weights and Clip bounds (Constant nodes). The reference is its
    float32 upcast (what every backend and the float32 calibration feeds expect), recorded with its distance to
    the fp16 graph."""
    path = tmp_path / "half.onnx"
    torch.onnx.export(_Seg().half(), (torch.rand(1, 3, 16, 16).half(),), str(path), input_names=["images"],
                      opset_version=17, dynamo=False)
    ref = prepare_reference(load_source(str(path)), None, use_cache=False)
    assert ref.inputs[0].dtype == "float32" and ref.outputs[0].dtype == "float32"
    up = ref.record["export"]["upcast_from_float16"]
    assert 0 < up["max_abs_fp16_graph_vs_upcast"] < 1e-2  # fp16 arithmetic vs float32 on the same weights
    x = random_feeds(ref.inputs, seed=1)
    assert np.isfinite(onnx_outputs(ref.onnx_path, x)[ref.outputs[0].name]).all()


def test_an_onnx_image_size_left_open_needs_input_and_is_then_fixed(tmp_path: Path) -> None:
    path = tmp_path / "dyn.onnx"
    torch.onnx.export(_Seg(), (torch.rand(1, 3, 16, 16),), str(path), input_names=["images"], opset_version=17,
                      dynamo=False, dynamic_axes={"images": {0: "n", 2: "h", 3: "w"}})
    with pytest.raises(ConfigError, match=r"dynamic dimensions \(h, w\)") as ei:
        prepare_reference(load_source(str(path)), None, use_cache=False)
    assert "--input images:1x3xHxW" in ei.value.hint
    ref = prepare_reference(load_source(str(path)), [TensorSpec("images", (1, 3, 24, 40), "float32", "NCHW")],
                            use_cache=False)
    assert ref.outputs[0].shape == (1, 4, 48, 80)  # static through the graph, not 1x1 placeholders


def test_a_broken_protobuf_is_an_environment_error_not_an_opset_hint(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from google.protobuf.runtime_version import VersionError

    from edgeconv.core.errors import MissingDependencyError
    from edgeconv.export import onnx_export

    def broken(*a: object, **k: object) -> None:
        raise VersionError("Detected incompatible Protobuf Gencode/Runtime versions when loading onnx/onnx-ml.proto")

    monkeypatch.setattr(onnx_export, "_export_one", broken)
    m = torch.nn.Conv2d(3, 4, 3).eval()
    spec = [TensorSpec("x", (1, 3, 8, 8))]
    with pytest.raises(MissingDependencyError, match="protobuf installation") as e:
        export_verified(m, spec, None, tmp_path / "m.onnx", sample_feeds=[random_feeds(spec)])
    assert "setup.sh" in (e.value.hint or "") and "--opset" not in (e.value.hint or "")
    assert onnx_export._broken_environment(ImportError("No module named 'onnxscript'", name="onnxscript")) is None


def test_an_onnx_model_below_opset_13_is_referenced_at_13_and_quantizes(tmp_path: Path) -> None:
    """UltraFace ships an opset-9 ONNX: ORT's per-channel Q/DQ (DequantizeLinear's axis, opset 13) built an
    artifact that could not load. The reference is the version-converted graph, equal in outputs."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    from PIL import Image

    from edgeconv import api

    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((4, 3, 3, 3)).astype(np.float32), "w")
    g = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
                           helper.make_node("Relu", ["c"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 16, 16])], [w])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 9)]), str(tmp_path / "old.onnx"))
    ref = prepare_reference(load_source(str(tmp_path / "old.onnx")), None, use_cache=False)
    assert ref.record["export"]["opset_upgrade"]["ok"] and ref.record["export"]["opset_upgrade"]["from"] == 9
    calib = tmp_path / "calib"
    calib.mkdir()
    for i in range(8):
        Image.fromarray(np.random.default_rng(i).integers(0, 255, (16, 16, 3), np.uint8)).save(calib / f"{i}.png")
    (oc,) = api.convert(str(tmp_path / "old.onnx"), targets=["onnxruntime"], precisions=["int8"], out=tmp_path / "o",
                        calib=str(calib), preprocess="size=16x16", use_cache=False)
    assert oc.ok and oc.artifact.manifest["verification"]["status"] == "ok"
