"""zoo:yolo and zoo:centernet end to end: the contract computed in the graph (ONNX Runtime, OpenVINO when
installed), by the numpy files and by the C++ header gives the harness's reference mAP50-95 (within 0.1 point)
on the 500-image eval split, and a converted artifact with its post-processor files runs the README's example."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import edgeconv.postprocess as pp

ort = pytest.importorskip("onnxruntime", reason="the end2end graph runs on ONNX Runtime")
pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module", params=["yolo", "centernet"])
def zoo(request):
    from edgeconv.bench.evaluate import load_eval_data
    from edgeconv.bench.plugins import load_callable
    from edgeconv.pipeline import prepare

    prep = prepare(f"zoo:{request.param}")
    data = load_eval_data("zoo:detection", input_spec=prep.reference.inputs[0], preprocess=prep.preprocess,
                          task="detection", limit=500)
    sess = ort.InferenceSession(str(prep.reference.onnx_path))
    names = [o.name for o in sess.get_outputs()]
    raws = [dict(zip(names, sess.run(None, f))) for f in data.feeds]
    ref = [load_callable(prep.info["postprocess"])(r)[0] for r in raws]  # today's harness decode + NMS
    return request.param, prep, data, raws, ref


def _stack(results):
    return np.concatenate([d for d, _ in results]), np.concatenate([c for _, c in results])


def test_in_graph_and_beside_post_processing_keep_the_reference_map(zoo, tmp_path: Path):
    _, prep, data, raws, ref = zoo
    spec = pp.spec_for(prep)
    ref_map = pp.contract_map(ref, data.labels, data.metas)
    assert ref_map["map50_95"] > 0.7  # the trained checkpoints
    e2e = pp.make_end2end_onnx(prep.reference.onnx_path, spec, tmp_path / "e2e.onnx", nms="onnx")
    sess = ort.InferenceSession(str(e2e))
    graph = [tuple(sess.run(None, f)) for f in data.feeds]
    beside = [pp.apply_postprocessor(r, spec) for r in raws]
    for got in (graph, beside):
        m = pp.contract_map(_stack(got), data.labels, data.metas)
        assert abs(m["map50_95"] - ref_map["map50_95"]) <= 0.001, (m, ref_map)
    cmp = pp.compare_detections(_stack(beside), _stack(graph))
    assert cmp["matched_fraction"] == 1.0 and cmp["extra_fraction"] == 0.0 and cmp["score_drift_max"] < 1e-5
    agree = pp.compare_detections(ref, _stack(graph), min_score=0.05)  # vs bench/detection.py (K 300 vs 100)
    assert agree["matched_fraction"] >= 0.999 and agree["pass"]


def test_cpp_header_agrees_on_zoo_outputs(zoo, tmp_path: Path):
    gxx = shutil.which("g++")
    if gxx is None:
        pytest.skip("g++ is not installed")
    _, prep, _, raws, _ = zoo
    spec = pp.spec_for(prep)
    pp.write_postprocessor(tmp_path, spec)
    main = tmp_path / "main.cpp"
    main.write_text('#include "postprocess.hpp"\n#include <cstdio>\n#include <vector>\n'
                    "int main(int argc, char** argv) {\n  std::vector<std::vector<float>> b;\n"
                    "  std::vector<const float*> p;\n  for (int i = 2; i < argc; ++i) {\n"
                    "    FILE* f = std::fopen(argv[i], \"rb\"); std::fseek(f, 0, SEEK_END); long n = std::ftell(f);\n"
                    "    std::fseek(f, 0, SEEK_SET); b.emplace_back(size_t(n) / 4);\n"
                    "    if (std::fread(b.back().data(), 4, b.back().size(), f) != b.back().size()) return 3;\n"
                    "    std::fclose(f);\n  }\n  for (auto& v : b) p.push_back(v.data());\n"
                    "  std::vector<float> d(edgeconv_post::kMaxDet * 6);\n"
                    "  int n = edgeconv_post::run_contract(p.data(), d.data());\n"
                    "  FILE* o = std::fopen(argv[1], \"wb\"); std::fwrite(&n, 4, 1, o);\n"
                    "  std::fwrite(d.data(), 4, d.size(), o); std::fclose(o); return 0;\n}\n")
    exe = tmp_path / "run"
    subprocess.run([gxx, "-std=c++11", "-O2", "-I", str(tmp_path), str(main), "-o", str(exe)], check=True)
    for raw in raws[:: len(raws) // 20]:
        files = []
        for n in spec.decode.outputs:
            raw[n][0].astype(np.float32).tofile(tmp_path / f"{n}.bin")
            files.append(str(tmp_path / f"{n}.bin"))
        subprocess.run([str(exe), str(tmp_path / "out.bin"), *files], check=True)
        buf = np.fromfile(tmp_path / "out.bin", np.float32)
        dets, count = pp.apply_postprocessor(raw, spec)
        assert int(buf[:1].view(np.int32)[0]) == int(count[0])
        np.testing.assert_allclose(buf[1:].reshape(-1, 6), dets[0], atol=1e-3)


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_converted_end2end_artifact_and_the_readme_example(zoo, tmp_path: Path, backend: str):
    if backend == "openvino":
        pytest.importorskip("openvino", reason="openvino backend not installed")
    from edgeconv.pipeline import convert_reference

    _, prep, data, _, ref = zoo
    spec = pp.spec_for(prep)
    place = pp.plan_postprocess(backend, spec)
    assert place.stage == "detections"
    e2e = pp.end2end_reference(prep, spec, place, tmp_path / "work")
    assert [o.name for o in e2e.reference.outputs] == [pp.DETECTIONS, pp.COUNT]
    art = convert_reference(e2e, backend, out=tmp_path / "art", precision="fp32", use_cache=False)
    pp.write_postprocessor(art.path, pp.effective_spec(spec, place), stage=place.stage)
    post = pp.harness_postprocess(art.path)
    from edgeconv.targets.registry import get_target

    with get_target(backend).runner(art) as r:
        got = [post(r.infer(f))[0] for f in data.feeds[:100]]
    m_ref = pp.contract_map(ref[:100], data.labels[:100], data.metas[:100])
    m_got = pp.contract_map(got, data.labels[:100], data.metas[:100])
    assert abs(m_got["map50_95"] - m_ref["map50_95"]) <= 0.001
    images = [str(p) for p in data.files[:2]]
    res = subprocess.run([sys.executable, str(ROOT / "examples" / "detect.py"), str(art.path), *images],
                         capture_output=True, text=True, check=True)
    lines = res.stdout.strip().splitlines()
    assert lines and all(line.startswith(images[0]) or line.startswith(images[1]) for line in lines)
    expect = sum(int((d.scores >= 0.25).sum()) for d in got[:2])
    assert len(lines) == expect


@pytest.mark.parametrize("backend", ["tflite", "ncnn"])
def test_torch_route_and_beside_backends_give_the_contract(zoo, tmp_path: Path, backend: str):
    """TFLite: decode + TopK in the converted module (NMS beside); ncnn: raw graph, everything beside."""
    pytest.importorskip({"tflite": "litert_torch", "ncnn": "ncnn"}[backend], reason=f"{backend} not installed")
    from edgeconv.core.artifact import Artifact, file_table, write_manifest
    from edgeconv.pipeline import build_context
    from edgeconv.profiles import load_profile
    from edgeconv.targets.registry import get_target

    name, prep, data, _, ref = zoo
    spec = pp.spec_for(prep)
    place = pp.plan_postprocess(backend, spec)
    assert place.stage == ("raw" if backend == "ncnn" else "detections" if name == "centernet" else "candidates")
    e2e = pp.end2end_reference(prep, spec, place, tmp_path / "work")
    out = tmp_path / "art"
    out.mkdir()
    target, ctx = build_context(e2e, load_profile(backend), "fp32", out_dir=out)
    res = target.convert(ctx)  # the pipeline's tensor check does not apply to TopK outputs: judged on detections
    write_manifest(out, {"target": backend, "precision": "fp32", "roles": res.roles, "conversion": res.meta,
                         "inputs": [s.to_dict() for s in e2e.reference.inputs], "input_layout": res.input_layout,
                         "outputs": [s.to_dict() for s in e2e.reference.outputs], "profile": ctx.profile.to_dict(),
                         "options": ctx.options, "files": file_table(out, res.files)})
    pp.write_postprocessor(out, spec, stage=place.stage)
    post = pp.harness_postprocess(out)
    with get_target(backend).runner(Artifact.load(out)) as r:
        got = [post(r.infer(f))[0] for f in data.feeds[:100]]
    m_ref = pp.contract_map(ref[:100], data.labels[:100], data.metas[:100])
    m_got = pp.contract_map(got, data.labels[:100], data.metas[:100])
    assert abs(m_got["map50_95"] - m_ref["map50_95"]) <= 0.001, (m_got, m_ref)
    assert pp.compare_detections(ref[:100], got, min_score=0.05)["matched_fraction"] >= 0.999
