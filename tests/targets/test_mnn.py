"""MNN target: MNNConvert fp32/fp16, INT8 by MNN's quantization tool fed through the preprocessing contract, and the
session-API runner, each verified against the reference ONNX by the pipeline."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("MNN", reason="mnn target needs the MNN wheel (pip install 'edgeconv[mnn]')")
onnx = pytest.importorskip("onnx", reason="onnx builds the unsupported-operator model")

from edgeconv.calibration.dataset import CalibrationSet  # noqa: E402
from edgeconv.calibration.preprocess import Preprocess  # noqa: E402
from edgeconv.core.errors import ConfigError, ConversionError  # noqa: E402
from edgeconv.pipeline import convert_reference, make_calibration, prepare  # noqa: E402
from edgeconv.targets.mnn import calib as mcal  # noqa: E402
from edgeconv.targets.mnn.tools import _CONVERT, _QUANT  # noqa: E402


@pytest.fixture(scope="module")
def out_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("mnn")


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Images of several sizes and aspect ratios, so resizing and letterboxing really happen."""
    from PIL import Image

    d = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(1)
    for i, (h, w) in enumerate([(64, 64), (50, 90), (120, 70), (33, 47)]):
        Image.fromarray((rng.random((h, w, 3)) * 255).astype("uint8")).save(d / f"p{i}.png")
    return d


def test_tools_bypass_the_wrappers_that_pip_install_and_phone_home() -> None:
    """MNN's mnnconvert/mnnquant wrappers import MNN.tools.utils.log (pip install at import, remote logging)."""
    assert "MNN.tools" not in _CONVERT and "MNN.tools" not in _QUANT
    assert "_tools.mnnconvert" in _CONVERT and "_tools.mnnquant" in _QUANT


@pytest.mark.parametrize("order", ["scale-first", "normalize-first"])
def test_mnn_normalization_is_the_contract_arithmetic(order: str) -> None:
    pp = Preprocess(size=(16, 16), mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), order=order,
                    scale=1 / 255 if order == "scale-first" else 1.0)
    mean, normal = mcal.mnn_normalization(pp)
    x = np.arange(256, dtype=np.float32)[:, None].repeat(3, 1)
    want = pp.apply(x.reshape(16, 16, 3).astype(np.uint8))[0].transpose(1, 2, 0).reshape(-1, 3)
    got = (x - np.float32(mean)) * np.float32(normal)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=2e-6)  # float rounding only


@pytest.mark.parametrize("contract", [
    "size=64x96,color=RGB,resize=stretch,scale=1/255",
    "size=64x96,color=BGR,resize=letterbox,scale=1/255,mean=0.485/0.456/0.406,std=0.229/0.224/0.225",
    "size=64x96,color=RGB,resize=center-crop,scale=1/255,mean=0.5/0.5/0.5,std=0.5/0.5/0.5",
])
def test_images_fed_to_quantized_out_reproduce_the_contract(photos: Path, tmp_path: Path, contract: str) -> None:
    """What MNN's own preprocessing (CVImageProcess, quantized.out's settings) makes of the written PNGs equals
    edgeconv's calibration tensors."""
    pp = Preprocess.parse(contract)
    cal = CalibrationSet(photos, pp, "images", (1, 3, 64, 96), size=None, warn_small=False)
    data = mcal.write_images(cal, tmp_path / "img", check=len(cal))
    assert data["written"] == 4 and data["checked"] == 4
    mean, normal = data["config"]["mean"], data["config"]["normal"]
    pngs = sorted((tmp_path / "img").glob("*.png"))
    for png, feed in zip(pngs, cal.feeds(), strict=True):
        got = mcal.mnn_image_tensor(png, pp, mean, normal)
        np.testing.assert_allclose(got, feed["images"], rtol=0, atol=mcal.EXACT)
        if pp.mean == (0.0, 0.0, 0.0):
            assert np.array_equal(got, feed["images"])  # x·(1/255) in both: bit-exact
    assert data["contract_max_rel"] <= mcal.EXACT
    assert data["config"]["format"] == pp.color and data["config"]["width"] == 96 and data["config"]["height"] == 64


def test_image_sizes_mnn_cannot_map_exactly_are_detected(photos: Path, tmp_path: Path) -> None:
    """At 40x48 quantized.out's own poly-to-poly mapping is not the identity (float error in MNN's solve): its
    bilinear sampler then shifts ~45 % of pixels by one level; the check sees it, so auto mode feeds tensors."""
    pp = Preprocess.parse("size=40x48,scale=1/255")
    cal = CalibrationSet(photos, pp, "images", (1, 3, 40, 48), size=None, warn_small=False)
    data = mcal.write_images(cal, tmp_path / "img", check=2)
    assert data["contract_max_rel"] > mcal.EXACT


def test_tensor_mode_round_trips_float32_exactly(photos: Path, tmp_path: Path) -> None:
    pp = Preprocess.parse("size=40x48,scale=1/255,mean=0.485/0.456/0.406,std=0.229/0.224/0.225")
    cal = CalibrationSet(photos, pp, "images", (1, 3, 40, 48), size=None, warn_small=False)
    data = mcal.write_tensors(cal, tmp_path / "seq", ["images"])
    assert data["written"] == 4 and data["config"] == {"input_type": "sequence"}
    for i, feed in enumerate(cal.feeds()):
        back = mcal.read_tensor(tmp_path / "seq" / f"{i:05d}", "images", (1, 3, 40, 48))
        assert np.array_equal(back, feed["images"])


def test_images_mode_refuses_tensor_calibration_sets(tmp_path: Path) -> None:
    np.save(tmp_path / "a.npy", np.zeros((1, 3, 8, 8), np.float32))
    cal = CalibrationSet(tmp_path, Preprocess(size=(8, 8)), "x", (1, 3, 8, 8), size=None, warn_small=False)
    assert "tensors" in mcal.images_possible(cal, (1, 3, 8, 8), 1)


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_tiny_model_converts_and_verifies(tiny_prepared, out_root: Path, precision: str) -> None:
    art = convert_reference(tiny_prepared, "mnn", out=out_root / precision, precision=precision, use_cache=False)
    conv = art.manifest["conversion"]
    assert art.manifest["verification"]["status"] == "ok"
    assert conv["io"]["outputs"] == {o.name: o.name for o in tiny_prepared.reference.outputs}
    assert conv["operators"].get("Convolution", 0) >= 3
    assert art.file("model").stat().st_size > 0
    if precision == "fp32":
        assert art.manifest["verification"]["drift"]["max_abs"] < 1e-4


def test_fp16_weights_are_half_the_size(tiny_prepared, out_root: Path) -> None:
    fp32 = convert_reference(tiny_prepared, "mnn", out=out_root / "s32", precision="fp32")
    fp16 = convert_reference(tiny_prepared, "mnn", out=out_root / "s16", precision="fp16")
    assert fp16.file("model").stat().st_size < 0.75 * fp32.file("model").stat().st_size


def test_int8_through_quantized_out_from_the_contract(tiny_prepared, tiny_calib_dir: Path, out_root: Path) -> None:
    calib = make_calibration(tiny_prepared, tiny_calib_dir, size=16)
    art = convert_reference(tiny_prepared, "mnn", out=out_root / "int8", precision="int8", calibration=calib,
                            use_cache=False)
    q = art.manifest["conversion"]["quantization"]
    assert q["tool"] == "MNN quantized.out" and q["feature_method"] == "EMA" and q["samples"] == 16
    assert q["calib_input"] == "images" and q["contract_max_rel"] <= mcal.EXACT
    assert q["config"]["normal"] == pytest.approx([1 / 255] * 3)
    assert art.manifest["verification"]["status"] == "ok"
    assert art.manifest["verification"]["drift"]["cosine"] > 0.97


def test_int8_tensor_input_and_kl(tiny_prepared, tiny_calib_dir: Path, out_root: Path) -> None:
    calib = make_calibration(tiny_prepared, tiny_calib_dir, size=8)
    art = convert_reference(tiny_prepared, "mnn", out=out_root / "kl", precision="int8", calibration=calib,
                            options={"calib_input": "tensors", "calib_method": "entropy"}, use_cache=False)
    q = art.manifest["conversion"]["quantization"]
    assert q["calib_input"] == "tensors" and q["feature_method"] == "KL" and q["samples"] == 8
    assert art.manifest["verification"]["status"] == "ok"


def test_admm_on_tensors_is_refused(tiny_prepared, tiny_calib_dir: Path, out_root: Path) -> None:
    calib = make_calibration(tiny_prepared, tiny_calib_dir, size=4)
    with pytest.raises(ConfigError, match="last sample"):
        convert_reference(tiny_prepared, "mnn", out=out_root / "admm", precision="int8", calibration=calib,
                          options={"calib_input": "tensors", "feature_method": "ADMM"}, use_cache=False)


def test_runner_batches(tiny_prepared, out_root: Path) -> None:
    from edgeconv.core.artifact import Artifact
    from edgeconv.targets.mnn.runner import MnnRunner
    from edgeconv.targets.onnxruntime.runner import OrtRunner

    art = Artifact.load(convert_reference(tiny_prepared, "mnn", out=out_root / "b", precision="fp32").path)
    x = np.random.default_rng(3).random((3, 3, 64, 64), dtype=np.float32)
    with MnnRunner.from_artifact(art, threads=1) as r:
        got = r.infer({"images": x})
        again = r.infer({"images": x[:1]})
    with OrtRunner(tiny_prepared.reference.onnx_path) as o:
        want = np.concatenate([o.infer({"images": x[i:i + 1]})[k] for i in range(3) for k in o.output_names])
    name = tiny_prepared.reference.outputs[0].name
    assert got[name].shape[0] == 3 and again[name].shape[0] == 1
    np.testing.assert_allclose(got[name], want.reshape(got[name].shape), atol=1e-4)


def test_unsupported_operator_is_named(tmp_path: Path) -> None:
    from onnx import TensorProto, helper

    node = helper.make_node("Hardmax", ["x"], ["y"], axis=1)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, tmp_path / "hardmax.onnx")
    prep = prepare(str(tmp_path / "hardmax.onnx"), simplify=False)
    with pytest.raises(ConversionError, match="Hardmax"):
        convert_reference(prep, "mnn", out=tmp_path / "out", precision="fp32", use_cache=False)
    assert not (tmp_path / "out").exists()


@pytest.mark.slow  # exporting the bundled model's reference takes ~25 s from an empty cache
def test_bundled_classifier_fp32(tmp_path: Path) -> None:
    prep = prepare("zoo:classifier")
    art = convert_reference(prep, "mnn", out=tmp_path / "cls", precision="fp32")
    assert art.manifest["verification"]["status"] == "ok"
    assert art.manifest["conversion"]["io"]["outputs"] == {"logits": "logits"}


@pytest.mark.parametrize("precision,mode", [("fp32", "normal"), ("fp16", "low")])
def test_board_profile_computes_fp16_only_for_fp16_rows(tiny_prepared, out_root: Path, precision: str,
                                                        mode: str) -> None:
    """arm-board-mnn asks for fp16 arithmetic for its fp16 rows: an fp32 row computing in fp16 drifted 0.27 max abs
    on the emulated Cortex-A76 against 3.7e-5 on x86."""
    art = convert_reference(tiny_prepared, "arm-board-mnn", out=out_root / f"board-{precision}", precision=precision,
                            use_cache=False)
    assert art.manifest["conversion"]["runtime"]["precision_mode"] == mode


class _ScoresAndArgmax(__import__("torch").nn.Module):
    def __init__(self) -> None:
        import torch

        super().__init__()
        torch.manual_seed(0)
        self.c = torch.nn.Conv2d(3, 5, 3, 1, 1)

    def forward(self, x):  # noqa: ANN001, ANN201
        s = self.c(x)
        return s, s.argmax(1)


def test_integer_outputs_come_back_as_integers(tmp_path: Path) -> None:
    """An ArgMax output is int32 in MNN: read through a float host tensor it was its bits as floats (max_abs 4)."""
    prep = prepare(_ScoresAndArgmax().eval(), inputs=["x:1x3x16x16"], use_cache=False)
    art = convert_reference(prep, "mnn", out=tmp_path / "fp32", precision="fp32", use_cache=False)
    assert art.manifest["verification"]["status"] == "ok"
    assert art.manifest["verification"]["drift"]["max_abs"] < 1e-4


def test_an_output_the_int8_tool_dropped_is_named(tiny_prepared, tmp_path: Path) -> None:
    from edgeconv.targets.mnn.runner import MnnRunner

    art = convert_reference(tiny_prepared, "mnn", out=tmp_path / "fp32", precision="fp32", use_cache=False)
    with pytest.raises(ConversionError, match="has no output 'lost'"):
        MnnRunner(art.file("model"), io={"inputs": {"images": "images"}, "outputs": {"lost": "nope"}})


def test_weight_only_int8_is_smaller_float_accurate_and_says_so(tiny_prepared, tiny_calib_dir: Path,
                                                                out_root: Path) -> None:
    calib = make_calibration(tiny_prepared, tiny_calib_dir, size=4)
    fp32 = convert_reference(tiny_prepared, "mnn", out=out_root / "w32", precision="fp32")
    art = convert_reference(tiny_prepared, "mnn", out=out_root / "w8", precision="int8", calibration=calib,
                            options={"int8_mode": "weight"}, use_cache=False)
    conv = art.manifest["conversion"]
    assert conv["quantization"]["mode"] == "weight" and conv["quantization"]["activations"] == "float"
    assert "float activations" in conv["weights_storage"] and conv["int8_route"].startswith("weight-only")
    assert art.manifest["verification"]["status"] == "ok"
    assert art.manifest["verification"]["drift"]["cosine"] > 0.999  # weights only: no activation rounding
    assert art.file("model").stat().st_size < 0.75 * fp32.file("model").stat().st_size  # tiny: headers weigh
    from edgeconv.cli.inspect import _inspect_artifact

    assert _inspect_artifact(art.path)["ops"].get("Convolution", 0) >= 3  # inspect lists the .mnn's operators


def test_a_refused_int8_row_names_the_weight_only_route(tiny_prepared, tiny_calib_dir: Path, tmp_path: Path) -> None:
    import dataclasses

    from edgeconv.core.errors import VerificationError
    from edgeconv.profiles import load_profile

    strict = load_profile("mnn")
    strict = dataclasses.replace(strict, tolerance={**strict.tolerance, "int8": {"cosine": 0.9999999}})
    calib = make_calibration(tiny_prepared, tiny_calib_dir, size=4)
    with pytest.raises(VerificationError) as e:
        convert_reference(tiny_prepared, strict, out=tmp_path / "full", precision="int8", calibration=calib,
                          use_cache=False)
    assert "--option int8_mode=weight" in (e.value.hint or "")
    with pytest.raises(VerificationError) as e:  # the route it already took is not suggested again
        convert_reference(tiny_prepared, dataclasses.replace(strict, tolerance={"int8": {"max_abs": 1e-9}}),
                          out=tmp_path / "weight", precision="int8", calibration=calib,
                          options={"int8_mode": "weight"}, use_cache=False)
    assert "int8_mode=weight" not in (e.value.hint or "")


def test_fp32_over_max_abs_by_rounding_alone_says_so(tiny_prepared, out_root: Path, tmp_path: Path) -> None:
    import dataclasses

    from edgeconv.core.errors import VerificationError
    from edgeconv.pipeline import _round_up, _rounding_only
    from edgeconv.profiles import load_profile

    base = load_profile("mnn")
    art = convert_reference(tiny_prepared, base, out=out_root / "r32", precision="fp32", use_cache=False)
    scaled = art.manifest["verification"]["drift"]["max_abs_scaled"]
    assert 0 < scaled < 1e-4  # MNN sums in another order: not bit-exact, far inside its bar
    strict = dataclasses.replace(base, tolerance={**base.tolerance, "fp32": {"max_abs": scaled / 3}})
    with pytest.raises(VerificationError) as e:
        convert_reference(tiny_prepared, strict, out=tmp_path / "strict", precision="fp32", use_cache=False)
    assert "float-accumulation order" in (e.value.hint or "") and "--tol fp32.max_abs=" in (e.value.hint or "")
    assert (_round_up(2.1e-4), _round_up(3e-4), _round_up(9.99e-4)) == ("3e-04", "3e-04", "1e-03")
    drift = {"max_abs": 2e-4, "max_abs_scaled": 2e-4, "cosine": 0.9999999}
    assert _rounding_only(["max_abs 2e-4 > 1e-4 (on real inputs)"], drift, {"max_abs": 1e-4, "cosine": 0.99999})
    assert not _rounding_only(["max_abs 2e-2 > 1e-4"], {**drift, "max_abs_scaled": 2e-2}, {"max_abs": 1e-4})
    assert not _rounding_only(["max_abs 2e-4 > 1e-4", "cosine 0.9 < 0.99999"], drift, {"max_abs": 1e-4})
