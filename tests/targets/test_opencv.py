"""OpenCV DNN target: the reference ONNX read by cv2.dnn, an exact OpenCV-friendly variant when OpenCV rejects a
function operator, unsupported operators named, fp16 only where the build offers it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2", reason="opencv target needs OpenCV (pip install 'edgeconv[opencv]')")
onnx = pytest.importorskip("onnx", reason="onnx builds the test graphs")
ort = pytest.importorskip("onnxruntime", reason="onnxruntime runs the reference")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from edgeconv.core.errors import ConfigError, ConversionError  # noqa: E402
from edgeconv.pipeline import convert_reference, prepare  # noqa: E402
from edgeconv.profiles import load_profile_file  # noqa: E402
from edgeconv.targets.opencv.rewrites import expand_functions  # noqa: E402


def _conv_then(op: str, path: Path, out_hw: int = 16, **attrs: object) -> Path:
    """x → Conv(3→4) → ``op`` → y: a real layer in front, so the rewrite is checked inside a graph."""
    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((4, 3, 3, 3)).astype(np.float32), "w")
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1], name="conv"),
             helper.make_node(op, ["c"], ["y"], name="tail", **attrs)]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, out_hw, out_hw])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def test_function_expansion_is_exact(tmp_path: Path) -> None:
    path = _conv_then("MeanVarianceNormalization", tmp_path / "mvn.onnx")
    model, done = expand_functions(onnx.load(str(path)), {"MeanVarianceNormalization"})
    assert done and done[0]["op"] == "MeanVarianceNormalization" and "ReduceMean" in done[0]["into"]
    assert all(n.op_type != "MeanVarianceNormalization" for n in model.graph.node)
    x = np.random.default_rng(1).random((1, 3, 16, 16), dtype=np.float32)
    a = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    b = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_allclose(a, b, atol=1e-6)


def test_non_function_ops_are_left_alone(tmp_path: Path) -> None:
    path = _conv_then("Relu", tmp_path / "relu.onnx")
    model, done = expand_functions(onnx.load(str(path)), {"Relu", "Conv"})
    assert done == [] and [n.op_type for n in model.graph.node] == ["Conv", "Relu"]


def test_tiny_model_fp32_loads_the_reference_unchanged(tiny_prepared, tmp_path: Path) -> None:
    art = convert_reference(tiny_prepared, "opencv", out=tmp_path / "fp32", precision="fp32", use_cache=False)
    conv = art.manifest["conversion"]
    assert art.manifest["verification"]["status"] == "ok"
    assert art.manifest["verification"]["drift"]["max_abs"] < 1e-4
    assert conv["unchanged_reference"] and conv["rewrites"] == []
    assert art.file("model").read_bytes() == tiny_prepared.reference.onnx_path.read_bytes()
    assert conv["runtime"] == {"engine": "auto", "backend": "opencv", "target": "cpu"}
    assert sum(conv["layers"].values()) >= 3


def test_rejected_function_op_gets_a_recorded_rewrite(tmp_path: Path) -> None:
    prep = prepare(str(_conv_then("MeanVarianceNormalization", tmp_path / "mvn.onnx")), simplify=False)
    art = convert_reference(prep, "opencv", out=tmp_path / "out", precision="fp32", use_cache=False)
    conv = art.manifest["conversion"]
    assert [r["op"] for r in conv["rewrites"]] == ["MeanVarianceNormalization"]
    assert not conv["unchanged_reference"]
    assert art.manifest["verification"]["status"] == "ok"
    ops = {n.op_type for n in onnx.load(str(art.file("model"))).graph.node}
    assert "MeanVarianceNormalization" not in ops and "ReduceMean" in ops


@pytest.mark.parametrize("engine", ["auto", "new", "classic"])
def test_unsupported_operator_is_named(tmp_path: Path, engine: str) -> None:
    """GlobalLpPool: standard ONNX (ONNX Runtime runs it), not a function, and OpenCV 5 has no layer for it."""
    prep = prepare(str(_conv_then("GlobalLpPool", tmp_path / "lp.onnx", out_hw=1)), simplify=False)
    no_classic = engine == "classic" and not hasattr(cv2.dnn, "ENGINE_CLASSIC")  # OpenCV >= 5.1
    with pytest.raises(ConfigError if no_classic else ConversionError,
                       match="no classic DNN engine" if no_classic else "GlobalLpPool"):
        convert_reference(prep, "opencv", out=tmp_path / "out", precision="fp32", options={"engine": engine},
                          use_cache=False)
    assert not (tmp_path / "out").exists()


def test_fp16_only_where_opencv_offers_a_cpu_fp16_target(tiny_prepared, tmp_path: Path) -> None:
    src = (Path(__file__).resolve().parents[2] / "targets" / "opencv.toml").read_text()
    prof = tmp_path / "opencv-fp16.toml"
    prof.write_text(src.replace('precisions = ["fp32"]', 'precisions = ["fp32", "fp16"]'))
    profile = load_profile_file(prof)
    if cv2.dnn.DNN_TARGET_CPU_FP16 not in cv2.dnn.getAvailableTargets(cv2.dnn.DNN_BACKEND_OPENCV):
        with pytest.raises(ConversionError, match="DNN_TARGET_CPU_FP16"):
            convert_reference(tiny_prepared, profile, out=tmp_path / "fp16", precision="fp16", use_cache=False)
    elif not hasattr(cv2.dnn, "ENGINE_CLASSIC"):  # OpenCV >= 5.1: fp16 needs the classic engine it no longer has
        with pytest.raises(ConfigError, match="no classic DNN engine"):
            convert_reference(tiny_prepared, profile, out=tmp_path / "fp16", precision="fp16", use_cache=False)
    else:
        art = convert_reference(tiny_prepared, profile, out=tmp_path / "fp16", precision="fp16", use_cache=False)
        assert art.manifest["conversion"]["runtime"]["target"] == "cpu_fp16"


def test_engine_names_map_on_opencv_5_0_and_5_1() -> None:
    from types import SimpleNamespace

    from edgeconv.targets.opencv.runner import engine_flag

    v50 = SimpleNamespace(__version__="5.0.0", dnn=SimpleNamespace(ENGINE_AUTO=0, ENGINE_CLASSIC=1, ENGINE_NEW=2))
    v51 = SimpleNamespace(__version__="5.1.0", dnn=SimpleNamespace(ENGINE_AUTO=0, ENGINE_OPENCV=1, ENGINE_ORT=2))
    assert [engine_flag(v50, e) for e in ("auto", "classic", "new")] == [0, 1, 2]
    assert [engine_flag(v51, e) for e in ("auto", "new")] == [0, 1]  # 5.1's ENGINE_OPENCV is the new engine
    with pytest.raises(ConfigError, match=r"OpenCV 5\.1\.0 has no classic DNN engine") as e:
        engine_flag(v51, "classic")
    assert "opencv-python-headless<5.1" in (e.value.hint or "")


def test_runner_batches(tiny_prepared, tmp_path: Path) -> None:
    from edgeconv.targets.opencv.runner import OpenCvRunner

    ref = tiny_prepared.reference
    x = np.random.default_rng(2).random((2, 3, 64, 64), dtype=np.float32)
    with OpenCvRunner(ref.onnx_path, inputs=[s.name for s in ref.inputs], outputs=[s.name for s in ref.outputs],
                      threads=1) as r:
        got = r.infer({"images": x})
    sess = ort.InferenceSession(str(ref.onnx_path), providers=["CPUExecutionProvider"])
    name = ref.outputs[0].name
    want = np.concatenate([sess.run([name], {"images": x[i:i + 1]})[0] for i in range(2)])
    np.testing.assert_allclose(got[name], want, atol=1e-4)


@pytest.mark.slow  # exporting the bundled model's reference takes ~25 s from an empty cache
def test_bundled_classifier_fp32(tmp_path: Path) -> None:
    art = convert_reference(prepare("zoo:classifier"), "opencv", out=tmp_path / "cls", precision="fp32")
    assert art.manifest["verification"]["status"] == "ok"
    assert art.manifest["conversion"]["io"]["outputs"] == ["logits"]
