"""The ssd (prior-box) head: priors and decode equal RetinaFace's own PriorBox/decode, and the in-graph decode +
NMS (ONNX), the numpy files, the torch wrapper and the C++ header give one contract; a converted end2end artifact
verifies on ONNX Runtime (NMS in the graph) and ncnn (NMS beside)."""

from __future__ import annotations

import itertools
import math
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import edgeconv.postprocess as pp
from edgeconv.core.errors import ConfigError
from edgeconv.postprocess.standalone import decode_ssd, ssd_priors

torch = pytest.importorskip("torch", reason="the test detector is a torch module")
ort = pytest.importorskip("onnxruntime", reason="the end2end graph runs on ONNX Runtime")

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
import tiny_ssd  # noqa: E402

OPTIONS = {"head": "ssd", "num_classes": "1", "strides": "8,16", "min_sizes": "8/16;32"}


def _retinaface_priors(h: int, w: int) -> np.ndarray:
    """RetinaFace's PriorBox.forward, verbatim in numpy (normalised cx, cy, w, h)."""
    out = []
    for k, step in enumerate(tiny_ssd.STRIDES):
        for i, j in itertools.product(range(math.ceil(h / step)), range(math.ceil(w / step))):
            for m in tiny_ssd.MIN_SIZES[k]:
                out += [(j + 0.5) * step / w, (i + 0.5) * step / h, m / w, m / h]
    return np.asarray(out, np.float32).reshape(-1, 4)


@pytest.fixture(scope="module")
def raw(tmp_path_factory: pytest.TempPathFactory):
    net = tiny_ssd.build()
    path = tmp_path_factory.mktemp("ssd") / "raw.onnx"
    x = torch.zeros(1, 3, 64, 64)
    torch.onnx.export(net, (x,), str(path), input_names=["images"], output_names=["loc", "conf"], opset_version=17,
                      dynamo=False)
    rng = np.random.default_rng(0)
    feeds = [rng.random((1, 3, 64, 64), dtype=np.float32) for _ in range(3)]
    sess = ort.InferenceSession(str(path))
    outs = [dict(zip(["loc", "conf"], sess.run(None, {"images": f}))) for f in feeds]
    dec = pp.decode_params_from_module(None, outputs=[("loc", (1, 144, 4)), ("conf", (1, 144, 2))],
                                       input_size=(64, 64), **OPTIONS)
    return net, path, feeds, outs, dec


def test_priors_and_decode_are_retinafaces(raw) -> None:
    _, _, _, outs, dec = raw
    d = pp.PostprocessSpec(dec).to_dict()["decode"]
    ref = _retinaface_priors(64, 64)
    np.testing.assert_allclose(ssd_priors(d) / 64.0, ref, atol=1e-6)
    loc = outs[0]["loc"][0]
    b = np.concatenate([ref[:, :2] + loc[:, :2] * 0.1 * ref[:, 2:], ref[:, 2:] * np.exp(loc[:, 2:] * 0.2)], 1)
    b[:, :2] -= b[:, 2:] / 2
    b[:, 2:] += b[:, :2]  # RetinaFace's decode, then x the image size
    boxes, scores = decode_ssd(outs[0], d)
    np.testing.assert_allclose(boxes[0], b * 64.0, atol=1e-4)
    np.testing.assert_allclose(scores[0, 0], outs[0]["conf"][0, :, 1])  # background column dropped


def test_outputs_are_found_by_shape_and_bad_options_are_config_errors() -> None:
    dec = pp.decode_params_from_module(None, outputs=[("landms", (1, 144, 10)), ("conf", (1, 144, 2)),
                                                      ("loc", (1, 144, 4))], input_size=(64, 64), **OPTIONS)
    assert dec.outputs == ("loc", "conf") and dec.min_sizes == ((8.0, 16.0), (32.0,)) and dec.total_boxes == 144
    with pytest.raises(ConfigError, match="min_sizes"):
        pp.decode_params_from_module(None, outputs=[("loc", (1, 144, 4)), ("conf", (1, 144, 2))],
                                     input_size=(64, 64), head="ssd", num_classes="1", strides="8,16")
    with pytest.raises(ConfigError, match="one stride per min_sizes level"):
        pp.decode_params_from_module(None, outputs=[("loc", (1, 144, 4)), ("conf", (1, 144, 2))],
                                     input_size=(64, 64), **{**OPTIONS, "strides": "8"})


@pytest.mark.parametrize("agnostic", [False, True])
def test_graph_numpy_and_candidates_agree(raw, tmp_path: Path, agnostic: bool) -> None:
    _, path, feeds, outs, dec = raw
    spec = pp.PostprocessSpec(dec, max_det=20, score_threshold=0.3, iou_threshold=0.4,
                              class_agnostic=agnostic).validate()
    full = ort.InferenceSession(str(pp.make_end2end_onnx(path, spec, tmp_path / "e2e.onnx", nms="onnx")))
    cand = ort.InferenceSession(str(pp.make_end2end_onnx(path, spec, tmp_path / "cand.onnx", nms="none")))
    for f, o in zip(feeds, outs, strict=True):
        want, n = pp.apply_postprocessor(o, spec)
        assert int(n[0]) > 3
        got = dict(zip(["detections", "count"], full.run(None, {"images": f})))
        assert got["count"].tolist() == n.tolist()
        np.testing.assert_allclose(got["detections"], want, atol=1e-4)
        c = dict(zip(["candidates", "candidate_count"], cand.run(None, {"images": f})))
        beside, n2 = pp.apply_postprocessor(c, spec)
        assert n2.tolist() == n.tolist()
        np.testing.assert_allclose(beside, want, atol=1e-4)


def test_torch_wrapper_equals_the_decode_only_graph(raw, tmp_path: Path) -> None:
    net, path, feeds, _, dec = raw
    spec = pp.PostprocessSpec(dec, max_det=20, score_threshold=0.3, max_candidates=60).validate()
    sess = ort.InferenceSession(str(pp.make_end2end_onnx(path, spec, tmp_path / "cand.onnx", nms="none")))
    wrapped = pp.end2end_module(net, spec, output_names=["loc", "conf"])
    with torch.no_grad():
        rows, count = wrapped(torch.from_numpy(feeds[0]))
    want = sess.run(None, {"images": feeds[0]})
    assert count.tolist() == want[1].tolist()
    np.testing.assert_allclose(rows.numpy(), want[0], atol=1e-4)


def test_cpp_header_matches_numpy(raw, tmp_path: Path) -> None:
    gxx = shutil.which("g++")
    if gxx is None:
        pytest.skip("g++ is not installed: the C++ header cannot be compile-tested here")
    from test_beside import MAIN_CPP, _read

    _, _, _, outs, dec = raw
    spec = pp.PostprocessSpec(dec, max_det=20, score_threshold=0.3, iou_threshold=0.4).validate()
    pp.write_postprocessor(tmp_path, spec)
    (tmp_path / "main.cpp").write_text(MAIN_CPP)
    exe = tmp_path / "run"
    res = subprocess.run([gxx, "-std=c++11", "-O1", "-Wall", "-Wextra", "-pedantic", "-Werror", "-I", str(tmp_path),
                          str(tmp_path / "main.cpp"), "-o", str(exe)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-3000:]
    for o in outs:
        for name in dec.outputs:
            o[name][0].astype(np.float32).tofile(tmp_path / f"{name}.bin")
        subprocess.run([str(exe), "raw", str(tmp_path / "out.bin"), *(str(tmp_path / f"{n}.bin")
                                                                        for n in dec.outputs)], check=True)
        n, dets = _read(tmp_path / "out.bin")
        want, want_n = pp.apply_postprocessor(o, spec)
        assert n == int(want_n[0]) > 0
        np.testing.assert_allclose(dets, want[0], atol=2e-4)


@pytest.mark.parametrize("target", ["onnxruntime", "ncnn"])
def test_an_end2end_conversion_of_a_prior_box_detector_verifies(tmp_path: Path, target: str) -> None:
    if target == "ncnn":
        pytest.importorskip("ncnn", reason="ncnn backend not installed")
    from edgeconv import api

    (oc,) = api.convert(f"{HERE / 'tiny_ssd.py'}:build", targets=[target], precisions=["fp32"], out=tmp_path,
                        inputs=["images:1x3x64x64"], output_names=["loc", "conf"], postprocess="end2end",
                        postprocess_options={**OPTIONS, "score_threshold": "0.3"}, use_cache=False)
    assert oc.error is None, oc.error
    m = oc.artifact.manifest
    assert m["verification"]["status"] == "ok" and m["postprocess"]["spec"]["decode"]["head"] == "ssd"


def test_a_decode_that_does_not_fit_the_head_is_refused_not_shipped(tmp_path: Path) -> None:
    from edgeconv import api

    with pytest.raises(ConfigError, match=r"scores the reference's boxes up to .* do not fit this head"):
        api.convert(f"{HERE / 'tiny_ssd.py'}:build_logits", targets=["onnxruntime"], precisions=["fp32"],
                    out=tmp_path, inputs=["images:1x3x64x64"], output_names=["loc", "conf"], postprocess="end2end",
                    postprocess_options=dict(OPTIONS), use_cache=False)
    # told the truth (logits), the same head decodes
    (oc,) = api.convert(f"{HERE / 'tiny_ssd.py'}:build_logits", targets=["onnxruntime"], precisions=["fp32"],
                        out=tmp_path / "ok", inputs=["images:1x3x64x64"], output_names=["loc", "conf"],
                        postprocess="end2end", postprocess_options={**OPTIONS, "conf_softmax": "true"},
                        use_cache=False)
    assert oc.error is None, oc.error
