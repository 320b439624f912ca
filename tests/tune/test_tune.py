"""``edgeconv tune`` end to end on the tiny conv net: two backends, a few candidates, one refused by its profile."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
MODEL = f"{FIXTURES / 'tiny_model.py'}:build"
FAST = ["--min-iters", "10", "--min-seconds", "0.05", "--limit", "4", "--threads", "1"]


def test_tune_measures_candidates_and_links_the_fastest_accepted_one(tmp_path: Path) -> None:
    pytest.importorskip("openvino", reason="the second backend of the search is OpenVINO")
    from edgeconv.cli import main

    # a copy of the ORT profile whose fp16 bar no fp16 artifact can meet: verification refuses it
    strict = tmp_path / "ort-strict.toml"
    strict.write_text('backend = "onnxruntime"\nprecision = "fp32"\nprecisions = ["fp32", "fp16"]\n'
                      '[tolerance.fp16]\nmax_abs = 1e-9\n')
    out = tmp_path / "tune"
    res = CliRunner().invoke(main, ["tune", "--model", MODEL, "--input", "images:1x3x32x32", "--device", str(strict),
                                    "--device", "openvino", "-p", "fp32", "-p", "fp16", "--max-candidates", "3",
                                    "--out", str(out), *FAST])
    assert res.exit_code == 0, res.output
    doc = json.loads((out / "tune.json").read_text())
    assert doc["schema"] == "edgeconv.tune/1" and doc["search"]["tried"] == 3
    by = {c["id"]: c for c in doc["candidates"]}
    assert set(by) == {"ort-strict/fp32/t1", "ort-strict/fp16/t1", "openvino/fp32/t1"}
    assert by["ort-strict/fp16/t1"]["status"] == "rejected" and "verification" in by["ort-strict/fp16/t1"]["reason"]
    assert "openvino/fp16/t1" in doc["search"]["not_tried"]  # bounded by --max-candidates
    ok = [c for c in doc["candidates"] if c["status"] == "ok"]
    assert len(ok) == 2 and all(c["latency_ms"]["p50"] > 0 and c["verification"] == "ok" for c in ok)
    fastest = min(ok, key=lambda c: c["latency_ms"]["p50"])
    assert doc["recommended"] == fastest["id"] and doc["cost_axis"] == "drift"  # random inputs: no task metric
    assert fastest["id"] in doc["pareto"] and not by["ort-strict/fp16/t1"]["pareto"]
    best = json.loads((out / "best" / "manifest.json").read_text())
    assert best["target"] == fastest["backend"] and best["precision"] == "fp32"
    assert json.loads((out / "best" / "tune-choice.json").read_text())["id"] == fastest["id"]
    md = (out / "tune.md").read_text()
    assert f"**Recommended:** {fastest['id']}" in md and "| ort-strict/fp16/t1 | rejected | - |" in md
    assert "recommended:" in res.output


def test_time_budget_stops_before_the_next_candidate(tmp_path: Path) -> None:
    from edgeconv.tune.search import TuneOptions, tune

    opts = TuneOptions(precisions=["fp32", "fp16"], threads=[1], time_budget_s=0.0, min_iters=10, min_seconds=0.05,
                       limit=4)
    doc = tune(MODEL, ["onnxruntime"], tmp_path / "t", inputs=["images:1x3x32x32"], options=opts)
    assert doc["search"]["tried"] == 0 and doc["recommended"] is None and not (tmp_path / "t" / "best").exists()
    assert doc["search"]["not_tried"] == ["onnxruntime/fp32/t1", "onnxruntime/fp16/t1",
                                          "onnxruntime/fp16/fp16_compute=half/t1",
                                          "onnxruntime/fp16/fp16_compute=float/t1"]


def test_without_data_the_calibration_images_are_the_evaluation_inputs(tmp_path: Path, tiny_calib_dir: Path) -> None:
    """INT8 drift on uniform noise says nothing about real inputs: with --calib and no --data the candidates are
    measured on the calibration images (in-sample, and recorded as such)."""
    from edgeconv.tune.search import TuneOptions, tune

    opts = TuneOptions(precisions=["int8"], threads=[1], min_iters=10, min_seconds=0.05, limit=4, budget_limit=0)
    doc = tune(MODEL, ["onnxruntime"], tmp_path / "t", inputs=["images:1x3x64x64"], data="zoo",
               calib=str(tiny_calib_dir), options=opts)
    assert doc["data"]["eval"] == str(tiny_calib_dir) and doc["data"]["samples"] == 4
    assert doc["candidates"][0]["status"] == "ok" and doc["candidates"][0]["drift"]["cosine"] > 0.9
