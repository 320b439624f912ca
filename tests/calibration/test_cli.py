"""``edgeconv calibrate``: statistics JSON written, cached on re-run, clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

pytest.importorskip("onnxruntime", reason="statistics are collected with ONNX Runtime")


def run(args: list[str]):
    from edgeconv.cli import main

    return CliRunner().invoke(main, ["calibrate", *args])


@pytest.mark.slow  # two full CLI runs (model load + export check): ~20 s alone, more on a shared machine
def test_calibrate_writes_json_and_reuses_cache(tiny_weights: Path, tiny_calib_dir: Path, tmp_path: Path) -> None:
    fixtures = Path(__file__).parents[1] / "fixtures"
    base = ["-m", f"{fixtures / 'tiny_model.py'}:build", "-w", str(tiny_weights), "--input", "images:1x3x64x64",
            "--calib", str(tiny_calib_dir), "--calib-size", "16", "--preprocess", "size=64x64"]
    r = run([*base, "-o", str(tmp_path / "s.json"), "--trt-cache", str(tmp_path / "trt.cache")])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "trt.cache").read_text().startswith("TRT-")
    doc = json.loads((tmp_path / "s.json").read_text())
    assert doc["method"] == "minmax" and len(doc["ranges"]) >= 4 and doc["calibration"]["size"] == 16
    assert doc["input_stats"]["samples"] == 16
    r2 = run([*base, "-o", str(tmp_path / "s2.json")])
    assert "cache hit" in r2.output
    assert json.loads((tmp_path / "s2.json").read_text())["ranges"] == doc["ranges"]


def test_calibrate_overlap_and_empty_are_refused(tiny_weights: Path, tiny_calib_dir: Path, tmp_path: Path) -> None:
    fixtures = Path(__file__).parents[1] / "fixtures"
    base = ["-m", f"{fixtures / 'tiny_model.py'}:build", "-w", str(tiny_weights), "--input", "images:1x3x64x64",
            "--preprocess", "size=64x64", "-o", str(tmp_path / "s.json")]
    r = run([*base, "--calib", str(tiny_calib_dir), "--calib-size", "8", "--eval", str(tiny_calib_dir)])
    assert r.exit_code == 2 and "also in the calibration sample" in r.output and "--allow-overlap" in r.output
    (tmp_path / "empty").mkdir()
    r = run([*base, "--calib", str(tmp_path / "empty")])
    assert r.exit_code == 2 and "holds no images" in r.output
