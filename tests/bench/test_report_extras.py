"""What reports show beside the contract's fields when rows carry it: the roofline efficiency column (and
``add_roofline``, which attaches it), the task delta's 95 % interval, and the lint findings of an artifact's
manifest; each tolerated when absent, and a missing value is never printed as a number."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import pytest

from edgeconv.bench.report import make_report, render_html, render_junit, render_markdown, write_all

PEAK = {"threads": 1, "gemm_n": 256, "gflops": {"fp32": 100.0, "int8": 400.0, "bf16": None}, "bandwidth_gbs": 20.0,
        "isa": {"FP16": False}}


def _row(profile: str, precision: str, p50: float, *, path: str = "/nowhere", task: dict | None = None) -> dict:
    return {"target": profile, "profile": profile, "precision": precision, "status": "ok", "error": None,
            "artifact": {"path": path, "bytes": 1000, "sha256": "ab"}, "threads": 1,
            "latency_ms": {"p50": p50, "p99": p50 * 1.2, "p50_ci": [p50 * 0.9, p50 * 1.1], "n": 50},
            "drift": {"shape_ok": True, "max_abs": 0.01, "rel_l2": 1e-3, "cosine": 0.9999, "checks": [], "pass": True},
            "task": task, "checks": {"drift": True, "task": True}}


def _report(rows: list[dict]) -> dict:
    return make_report(rows, model={"name": "tiny"}, env={"cpu": "Test CPU", "cores": 2})


def _conv_graph(path: Path) -> None:
    """x(1,3,16,16) -> Conv 3->8 k3 p1: 8*16*16*27 MACs."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.ones((8, 3, 3, 3), np.float32), "w")
    node = helper.make_node("Conv", ["x", "w"], ["y"], name="conv", kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 16, 16])], [w])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


def _artifact(tmp_path: Path, name: str, precision: str, lint: list | None = None, graph: bool = False) -> Path:
    """An artifact folder (manifest, and the reference graph add_roofline reads when ``graph``)."""
    d = tmp_path / name
    d.mkdir()
    if graph:
        _conv_graph(d / "reference.onnx")
    mf = {"target": "onnxruntime", "precision": precision, "reference": {"file": "reference.onnx"}}
    if lint is not None:
        mf["lint"] = lint
    (d / "manifest.json").write_text(json.dumps(mf))
    return d


def test_add_roofline_gives_measured_rows_an_efficiency_column(tmp_path: Path) -> None:
    pytest.importorskip("onnx", reason="roofline counts from the ONNX graph")
    from edgeconv.bench import roofline

    fp32, int8 = _artifact(tmp_path, "fp32", "fp32", graph=True), _artifact(tmp_path, "int8", "int8", graph=True)
    failed = {"target": "ncnn", "profile": "ncnn", "precision": "fp32", "status": "failed", "error": "boom",
              "artifact": None, "latency_ms": None, "drift": None, "task": None}
    rep = _report([_row("onnxruntime", "fp32", 0.01, path=str(fp32)), _row("onnxruntime", "int8", 0.005,
                                                                         path=str(int8)),
                   _row("broken", "fp32", 1.0, path=str(tmp_path / "missing")), failed])
    asked: list[int] = []
    roofline.add_roofline(rep, measure=lambda t: asked.append(t) or PEAK)
    assert asked == [1]  # one peak per thread count, shared by the rows
    r32, r8, broken, bad = rep["results"]
    cost = roofline.model_cost(fp32 / "reference.onnx")
    assert cost["macs"] == 8 * 16 * 16 * 27
    assert r32["roofline"]["gflops"] == pytest.approx(cost["flops"] / 1e-5 / 1e9, rel=1e-2)
    assert r32["roofline"]["fraction_of_peak"] == pytest.approx(r32["roofline"]["gflops"] / 100.0, rel=1e-2)
    assert r8["roofline"]["peak_gflops"] == 400.0 and r8["roofline"]["compute_precision"] == "int8"
    assert "error" in broken["roofline"] and "roofline" not in bad
    assert rep["roofline"]["peaks"]["1"]["gflops"]["fp32"] == 100.0

    md = render_markdown(rep)
    header = next(line for line in md.splitlines() if line.startswith("| target"))
    assert header.endswith("| efficiency |")
    line32 = next(line for line in md.splitlines() if line.startswith("| onnxruntime | fp32"))
    frac = r32["roofline"]["fraction_of_peak"]
    assert f"of fp32 peak, {r32['roofline']['bound']}-bound" in line32 and f"{frac:.0%}" in line32
    assert next(line for line in md.splitlines() if line.startswith("| broken")).endswith("| – |")
    assert "Roofline (measured at 1 thread(s)): GEMM peak fp32 100, int8 400 GFLOP/s" in md
    html = render_html(rep)
    assert "<th>efficiency</th>" in html and "of int8 peak" in html and "Roofline (measured" in html
    out = write_all(rep, tmp_path / "rep")
    assert json.loads(out["report.json"].read_text())["results"][0]["roofline"]["gflops"] > 0


def test_no_roofline_data_no_efficiency_column() -> None:
    rep = _report([_row("onnxruntime", "fp32", 1.0)])
    assert "efficiency" not in render_markdown(rep) and "<th>efficiency</th>" not in render_html(rep)
    assert "Roofline" not in render_markdown(rep)


def test_best_row_under_30_percent_says_why() -> None:
    row = _row("onnxruntime", "fp32", 1.0)
    row["roofline"] = {"gflops": 10.0, "fraction_of_peak": 0.1, "fraction_of_fp32_peak": 0.1, "bound": "memory",
                       "compute_precision": "fp32", "threads": 2, "memory_bound_layers": 7,
                       "memory_bound_macs_share": 0.42, "intensity": 3.1,
                       "peak": {"gflops": {"fp32": 100.0}, "bandwidth_gbs": 20.0}}
    md = render_markdown(_report([row]))
    assert "best row onnxruntime/fp32 at 10% of the fp32 peak (under 30 %: 7 memory-bound layers hold 42% of" in md


def test_task_delta_interval_is_shown_when_present_and_missing_values_are_never_numbers() -> None:
    ci = _row("openvino", "int8", 2.0, task={"metric": "map50_95", "reference": 78.96, "value": 78.77,
                                             "delta": -0.19, "delta_ci95": [-0.42, 0.03], "pass": True})
    plain = _row("ncnn", "int8", 2.0, task={"metric": "map50_95", "reference": 78.96, "value": 78.58,
                                            "delta": -0.38, "pass": True})
    nodata = _row("tflite", "int8", 2.0, task={"metric": "label_free_map50", "reference": None, "value": None,
                                               "delta": None, "delta_ci95": None, "pass": False})
    nan = _row("mnn", "int8", 2.0, task={"metric": "top1", "reference": 90.0, "value": float("nan"),
                                         "delta": float("nan"), "delta_ci95": [float("nan"), 1.0], "pass": None})
    rep = _report([ci, plain, nodata, nan])
    md = render_markdown(rep)
    assert "78.77 (-0.19 [-0.42, +0.03]) map50_95" in md and "78.58 (-0.38) map50_95" in md
    assert "no data (label_free_map50)" in md and "no data (top1)" in md
    assert not re.search(r"-100|nan", md, re.I)
    assert "78.77 (-0.19 [-0.42, +0.03]) map50_95" in render_html(rep)
    junit = render_junit(rep)  # the failed-task message of a row without numbers still renders
    assert "no data (label_free_map50) vs reference –" in junit


def test_lint_findings_come_from_the_manifest_and_are_listed_as_notes(tmp_path: Path) -> None:
    lint = [{"rule": "wide-range", "severity": "warning", "message": "head.1 output spans 1e4", "nodes": ["x"]},
            {"rule": "bounded-op", "severity": "info", "message": "Softmax  after\nconv"}]
    with_lint = _artifact(tmp_path, "a", "int8", lint=lint)
    without = _artifact(tmp_path, "b", "int8")
    rows = [_row("onnxruntime", "int8", 1.0, path=str(with_lint)), _row("openvino", "int8", 1.0, path=str(without)),
            _row("ncnn", "int8", 1.0, path=str(tmp_path / "gone"))]
    rep = _report(copy.deepcopy(rows))
    a, b, c = rep["results"]
    assert a["lint"] == [{"rule": "wide-range", "severity": "warning", "message": "head.1 output spans 1e4"},
                         {"rule": "bounded-op", "severity": "info", "message": "Softmax  after\nconv"}]
    assert "lint" not in b and "lint" not in c
    md = render_markdown(rep)
    assert "- `onnxruntime/int8`: lint warning [wide-range]: head.1 output spans 1e4" in md
    assert "- `onnxruntime/int8`: lint info [bounded-op]: Softmax after conv" in md
    assert "lint" not in md.split("onnxruntime/int8", 2)[0]  # no lint text for rows that have none
    assert "lint warning [wide-range]" in render_html(rep)


@pytest.mark.parametrize(("compute", "isa", "device", "words"), [
    ({"int8_path": "VNNI", "detail": "MLAS U8S8 VNNI", "source": "MLAS"}, {"VNNI": True}, None,
     "int8 path: VNNI (MLAS U8S8 VNNI; from MLAS)"),
    (None, {"VNNI": True}, None, "int8 path: not reported by NcnnRunner (this CPU has VNNI)"),
    (None, {"VNNI": False}, None, "int8 path: not reported by NcnnRunner (this CPU has no VNNI)"),
    (None, {"VNNI": True}, "pi5", None),  # measured on a device: the host's ISA says nothing about it
    (None, {"NEON": True}, None, None),  # not x86: no VNNI to speak of
])
def test_int8_rows_say_which_integer_path_ran(compute, isa, device, words) -> None:
    row = _row("ncnn", "int8", 2.0)
    row["runner"] = "NcnnRunner"
    if compute:
        row["compute"] = compute
    if device:
        row["device"] = device
    fp32 = _row("ncnn", "fp32", 3.0)
    fp32["runner"] = "NcnnRunner"
    rep = make_report([fp32, row], model={"name": "tiny"},
                      env={"cpu": "Test CPU", "cores": 2, "isa": isa, "isa_line": "AVX2 VNNI (no AMX)"})
    md, html = render_markdown(rep), render_html(rep)
    assert "Test CPU · 2 cores · AVX2 VNNI (no AMX) · " in md and "AVX2 VNNI (no AMX)" in html
    if words is None:
        assert "int8 path" not in md and "int8 path" not in html
    else:
        assert f"- `ncnn/int8`: {words}" in md and words in html
        assert md.count("int8 path") == 1  # the fp32 row says nothing


def test_ort_int8_path_is_mlas_dispatch_on_this_cpu(monkeypatch) -> None:
    import platform

    from edgeconv.core import env
    from edgeconv.targets.base import OrtRunner

    r = object.__new__(OrtRunner)  # the rule needs no session
    monkeypatch.setattr(platform, "machine", lambda: "x86_64")
    for vnni, path in ((True, "VNNI"), (False, "no VNNI")):
        monkeypatch.setattr(env, "isa_features", lambda v=vnni: {"AVX2": True, "VNNI": v})
        assert r.compute("int8")["int8_path"] == path
    assert r.compute("fp32") is None
    monkeypatch.setattr(platform, "machine", lambda: "aarch64")
    assert r.compute("int8") is None


def test_a_reduced_precision_row_slower_than_its_fp32_says_so_only_when_the_intervals_part() -> None:
    rows = [_row("ncnn", "fp32", 6.0), _row("ncnn", "int8", 7.5), _row("tflite", "fp32", 10.0),
            _row("tflite", "int8", 10.5), _row("openvino", "fp32", 5.0), _row("openvino", "int8", 3.6)]
    md = render_markdown(_report(rows))
    # ncnn int8 [6.75, 8.25] vs fp32 [5.4, 6.6]: apart; tflite [9.45, 11.55] vs [9, 11]: overlapping, no claim
    assert "`ncnn/int8`: slower than ncnn fp32 here (p50 7.5 vs 6 ms" in md and "buys size, not speed" in md
    assert "`tflite/int8`: slower" not in md and "`openvino/int8`: slower" not in md
    assert "slower than ncnn fp32 here" in render_html(_report(rows))
