"""Report writers: the four files, the JUnit structure, the self-contained HTML, the Pareto front."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

from edgeconv.bench.latency import summarize
from edgeconv.bench.report import FILES, SCHEMA, make_report, pareto_front, render_junit, write_all


def _row(profile: str, precision: str, p50: float, rel_l2: float, *, drift_ok: bool = True) -> dict:
    import numpy as np

    lat = summarize(np.random.default_rng(0).normal(p50, p50 * 0.05, 200).clip(p50 * 0.5))
    return {"target": profile, "profile": profile, "precision": precision, "status": "ok", "error": None,
            "artifact": {"path": "/x", "bytes": 12345, "sha256": "ab"}, "latency_ms": lat,
            "drift": {"shape_ok": True, "max_abs": 0.01, "rel_l2": rel_l2, "cosine": 0.999,
                      "checks": [{"name": "cosine", "value": 0.999, "limit": 0.98, "pass": drift_ok}],
                      "pass": drift_ok},
            "task": {"metric": "map50_95", "reference": 50.0, "value": 49.5, "delta": -0.5, "tolerance": 1.0,
                     "pass": True},
            "checks": {"drift": drift_ok, "task": True}}


def _report() -> dict:
    rows = [_row("onnxruntime", "fp32", 10.0, 1e-7), _row("openvino", "int8", 4.0, 1e-2, drift_ok=False),
            _row("ncnn", "fp32", 12.0, 1e-3),
            {"target": "tflite", "profile": "tflite", "precision": "int8", "status": "failed",
             "error": "conversion error [convert/tflite]: <boom> & co", "artifact": None, "latency_ms": None,
             "drift": None, "task": None}]
    return make_report(rows, model={"name": "tiny", "sha256": "00"}, env={"cpu": "Test CPU", "cores": 2,
                                                                          "versions": {"onnxruntime": "1"}})


def test_pareto_front() -> None:
    pts = [(10, 1.0), (4, 3.0), (12, 0.5), (11, 2.0), (4, 5.0)]
    assert pareto_front(pts) == [1, 0, 2]


def test_write_all_produces_four_parseable_files(tmp_path: Path) -> None:
    paths = write_all(_report(), tmp_path)
    assert set(paths) == set(FILES) and all(p.is_file() for p in paths.values())
    rep = json.loads(paths["report.json"].read_text())
    assert rep["schema"] == SCHEMA
    assert [r["status"] for r in rep["results"]] == ["ok", "ok", "ok", "failed"]
    md = paths["report.md"].read_text()
    assert md.count("\n| ") >= 5 and "tflite | int8 | ❌ failed" in md
    html = paths["report.html"].read_text()
    assert "<svg" in html and "<script" not in html and "http" not in html.replace("http://www.w3.org", "")
    assert "&lt;boom&gt; &amp; co" in html  # escaped error text
    assert "Pareto" in html


def test_junit_one_testcase_per_row_and_check() -> None:
    root = ET.fromstring(render_junit(_report()))
    cases = list(root.iter("testcase"))
    assert len(cases) == 4 * 4  # rows × (run, drift, task, latency)
    by = {(c.get("classname"), c.get("name")): c for c in cases}
    assert by[("edgeconv.openvino.int8", "drift")].find("failure") is not None
    assert by[("edgeconv.onnxruntime.fp32", "drift")].find("failure") is None
    err = by[("edgeconv.tflite.int8", "run")].find("error")
    assert err is not None and "boom" in err.get("message")
    assert by[("edgeconv.tflite.int8", "latency")].find("skipped") is not None
    suite = root.find("testsuite")
    assert suite.get("tests") == "16" and suite.get("failures") == "1" and suite.get("errors") == "1"


def test_proxy_row_has_null_latency_and_note(tmp_path: Path) -> None:
    rep = _report()
    rep["results"][0].update(latency_ms=None, proxy=True, latency_note="TensorRT proxy: ORT on the Q/DQ ONNX")
    write_all(rep, tmp_path)
    md = (tmp_path / "report.md").read_text()
    assert "proxy: n/a" in md and "TensorRT proxy" in md
    root = ET.parse(tmp_path / "junit.xml").getroot()
    lat = next(c for c in root.iter("testcase") if c.get("classname") == "edgeconv.onnxruntime.fp32"
           and c.get("name") == "latency")
    assert lat.find("skipped") is not None
