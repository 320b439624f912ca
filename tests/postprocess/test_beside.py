"""Post-processor files beside the graph: standalone numpy module, generated C++ header (compiled with g++), and the
torch wrapper for torch-route backends, all against the same numpy reference."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgeconv.core.errors import ConfigError
from edgeconv.postprocess import (
    DecodeParams,
    PostprocessSpec,
    apply_postprocessor,
    decode_params_from_module,
    end2end_module,
    load_postprocessor,
    make_end2end_onnx,
    read_postprocessor,
    write_postprocessor,
)

torch = pytest.importorskip("torch", reason="synthetic heads are torch modules")

LEVELS = ["p3", "p4", "p5"]
MAIN_CPP = r"""
#include "postprocess.hpp"
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>
static std::vector<float> load(const char* p) {
  FILE* f = std::fopen(p, "rb");
  std::fseek(f, 0, SEEK_END); long n = std::ftell(f); std::fseek(f, 0, SEEK_SET);
  std::vector<float> v(size_t(n) / 4);
  if (std::fread(v.data(), 4, v.size(), f) != v.size()) std::exit(3);
  std::fclose(f);
  return v;
}
// usage: run raw OUT IN... | run cand OUT N IN
int main(int argc, char** argv) {
  std::vector<std::vector<float>> bufs;
  std::vector<edgeconv_post::Detection> d;
  if (std::string(argv[1]) == "cand") {
    bufs.push_back(load(argv[4]));
    d = edgeconv_post::from_candidates(bufs[0].data(), std::atoi(argv[3]));
  } else {
    std::vector<const float*> ptrs;
    for (int i = 3; i < argc; ++i) bufs.push_back(load(argv[i]));
    for (size_t i = 0; i < bufs.size(); ++i) ptrs.push_back(bufs[i].data());
    d = edgeconv_post::run(ptrs.data());
  }
  std::vector<float> dets(size_t(edgeconv_post::kMaxDet) * 6);
  int n = edgeconv_post::to_contract(d, dets.data());
  FILE* o = std::fopen(argv[2], "wb");
  std::fwrite(&n, 4, 1, o); std::fwrite(dets.data(), 4, dets.size(), o); std::fclose(o);
  return 0;
}
"""


def _raw(heads, kind: str, seed: int) -> tuple[DecodeParams, dict[str, np.ndarray], object]:
    if kind == "centernet":
        raw = heads.centernet_raw(seed, 1)
        return DecodeParams("centernet", 3, (64, 64), ("heatmap", "wh", "offset"), strides=(4,),
                            output_shapes=tuple(v.shape for v in raw.values())).validate(), raw, None
    net = heads.build_v8() if kind.startswith("yolov8") else heads.build_v5()
    x = np.random.default_rng(seed).random((1, 3, 64, 64), dtype=np.float32)
    if kind.endswith("decoded"):
        with torch.no_grad():
            raw = {"output0": net(torch.from_numpy(x)).numpy()}
    else:
        raw = heads.raw_outputs(net, x, LEVELS)
    return decode_params_from_module(net, outputs=[(k, v.shape) for k, v in raw.items()], input_size=(64, 64)), \
        raw, net


def test_write_postprocessor_files_and_standalone_import(heads, tmp_path: Path):
    dec, raw, _ = _raw(heads, "yolov5", 0)
    spec = PostprocessSpec(dec, max_det=30, score_threshold=0.1).validate()
    files = write_postprocessor(tmp_path, spec, stage="raw")
    assert sorted(files) == ["postprocess.hpp", "postprocess.json", "postprocess.py"]
    rec = read_postprocessor(tmp_path)
    assert rec["stage"] == "raw" and PostprocessSpec.from_dict(rec["spec"]) == spec
    np.savez(tmp_path / "raw.npz", **raw)
    # The application side: a fresh interpreter that has only numpy and the artifact folder.
    code = ("import sys, json, numpy as np; sys.path.insert(0, sys.argv[1]); import postprocess as p; "
            "o = dict(np.load(sys.argv[1] + '/raw.npz')); d, c = p.apply(o); "
            "print(json.dumps({'edgeconv': any(m.startswith('edgeconv') for m in sys.modules), 'count': int(c[0]), "
            "'dets': d[0].tolist(), 'boxes': len(p.boxes_of(d, c))}))")
    res = subprocess.run([sys.executable, "-I", "-c", code, str(tmp_path)], capture_output=True, text=True, check=True,
                         cwd=tmp_path)
    out = json.loads(res.stdout)
    ref, ref_n = apply_postprocessor(raw, spec)
    assert out["edgeconv"] is False and out["count"] == int(ref_n[0]) == out["boxes"] and ref_n[0] > 0
    np.testing.assert_array_equal(np.asarray(out["dets"], np.float32), ref[0])
    post = load_postprocessor(tmp_path)
    np.testing.assert_array_equal(post(raw)[0], ref)
    with pytest.raises(ConfigError, match="does not exist"):
        read_postprocessor(tmp_path / "nowhere")


@pytest.fixture(scope="module")
def gxx() -> str:
    path = shutil.which("g++")
    if path is None:
        pytest.skip("g++ is not installed: the C++ header cannot be compile-tested here")
    return path


def _compile(gxx: str, folder: Path) -> Path:
    (folder / "main.cpp").write_text(MAIN_CPP)
    exe = folder / "run"
    res = subprocess.run([gxx, "-std=c++11", "-O1", "-Wall", "-Wextra", "-pedantic", "-Werror", "-I", str(folder),
                          str(folder / "main.cpp"), "-o", str(exe)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-3000:]
    return exe


def _read(path: Path) -> tuple[int, np.ndarray]:
    buf = np.fromfile(path, np.float32)
    return int(buf[:1].view(np.int32)[0]), buf[1:].reshape(-1, 6)


@pytest.mark.parametrize("kind, agnostic", [("yolov5", False), ("yolov5", True), ("yolov8", False),
                                            ("yolov5-decoded", False), ("yolov8-decoded", True), ("centernet", False)])
def test_cpp_header_matches_numpy_on_saved_raw_outputs(heads, gxx: str, tmp_path: Path, kind: str, agnostic: bool):
    dec, _, _ = _raw(heads, kind, 0)
    spec = PostprocessSpec(dec, max_det=25, score_threshold=0.05, iou_threshold=0.5, class_agnostic=agnostic,
                           max_candidates=100).validate()
    write_postprocessor(tmp_path, spec)
    exe = _compile(gxx, tmp_path)
    for seed in range(3):
        _, raw, _ = _raw(heads, kind, seed)
        ins = []
        for name in dec.outputs:
            raw[name][0].astype(np.float32).tofile(tmp_path / f"{name}.bin")
            ins.append(str(tmp_path / f"{name}.bin"))
        subprocess.run([str(exe), "raw", str(tmp_path / "out.bin"), *ins], check=True)
        n, dets = _read(tmp_path / "out.bin")
        ref, ref_n = apply_postprocessor(raw, spec)
        assert n == int(ref_n[0]) > 0
        np.testing.assert_allclose(dets, ref[0], atol=2e-4)


def test_cpp_and_numpy_nms_on_in_graph_candidates(heads, gxx: str, tmp_path: Path):
    """A graph without NMS op (decode + TopK) leaves NMS to the files: both implementations give the contract."""
    ort = pytest.importorskip("onnxruntime", reason="runs the decode-only graph")
    dec, raw, _ = _raw(heads, "yolov8", 7)
    spec = PostprocessSpec(dec, max_det=20, score_threshold=0.05, max_candidates=80).validate()
    path = make_end2end_onnx(heads.identity_onnx(tmp_path / "raw.onnx", {k: v.shape for k, v in raw.items()}), spec,
                             tmp_path / "decode.onnx", nms="none")
    sess = ort.InferenceSession(str(path))
    out = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, {f"in_{k}": v for k, v in raw.items()})))
    write_postprocessor(tmp_path, spec, stage="candidates")
    exe = _compile(gxx, tmp_path)
    out["candidates"][0].tofile(tmp_path / "cand.bin")
    subprocess.run([str(exe), "cand", str(tmp_path / "out.bin"), str(int(out["candidate_count"][0])),
                    str(tmp_path / "cand.bin")], check=True)
    n, dets = _read(tmp_path / "out.bin")
    from_graph, graph_n = load_postprocessor(tmp_path)(out)
    ref, ref_n = apply_postprocessor(raw, spec)
    assert n == int(graph_n[0]) == int(ref_n[0])
    np.testing.assert_allclose(dets, from_graph[0], atol=1e-6)
    np.testing.assert_allclose(from_graph, ref, atol=2e-4)


@pytest.mark.parametrize("kind", ["yolov5", "yolov8", "yolov8-decoded", "centernet"])
def test_torch_wrapper_equals_the_decode_only_graph(heads, tmp_path: Path, kind: str):
    ort = pytest.importorskip("onnxruntime", reason="runs the decode-only graph")
    dec, raw, net = _raw(heads, kind, 9)
    spec = PostprocessSpec(dec, max_det=15, score_threshold=0.05, max_candidates=50).validate()
    path = make_end2end_onnx(heads.identity_onnx(tmp_path / "raw.onnx", {k: v.shape for k, v in raw.items()}), spec,
                             tmp_path / "decode.onnx", nms="none")
    sess = ort.InferenceSession(str(path))
    onnx_out = sess.run(None, {f"in_{k}": v for k, v in raw.items()})
    if net is None:  # CenterNet: wrap a module that returns the saved maps
        class Maps(torch.nn.Module):
            def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
                return tuple(torch.from_numpy(raw[n]) + 0 * x.sum() for n in dec.outputs)

        net, x = Maps(), torch.zeros(1, 3, 64, 64)
    else:
        x = torch.from_numpy(np.random.default_rng(9).random((1, 3, 64, 64), dtype=np.float32))
        if not kind.endswith("decoded"):
            net.model[0].raw = True
    wrapped = end2end_module(net, spec)
    with torch.no_grad():
        t_rows, t_count = wrapped(x)
    assert t_count.dtype == torch.int32 and t_count.tolist() == onnx_out[1].tolist()
    np.testing.assert_allclose(t_rows.numpy(), onnx_out[0], atol=2e-4)
    if kind != "centernet":
        with pytest.raises(ConfigError, match="no NMS"):
            end2end_module(net, spec, with_nms=True)
