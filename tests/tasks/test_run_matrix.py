"""``edgeconv run`` with a task spec in ``[data] task``: the spec reaches the evaluation data, the report rows' task
blocks (with their interval) and the conversion-time budget, with no new option anywhere."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("onnxruntime", reason="the rows run on ONNX Runtime")

import task_models as tm  # noqa: E402

from edgeconv.bench.matrix import run_matrix  # noqa: E402

HERE = Path(__file__).parent


def test_run_matrix_scores_ctc_rows(tmp_path: Path) -> None:
    tm.write_ctc_images(tmp_path / "calib", 40, seed=1, lo=0.4, hi=0.6)
    tm.write_ctc_images(tmp_path / "test", 30, seed=2, lo=0.4, hi=0.6)
    cfg = {"model": {"model": f"{HERE / 'task_models.py'}:build_ctc", "input": "images:1x3x8x64",
                     "model_args": {"lo": 0.4, "hi": 0.6}, "exporters": ["legacy"]},
           "data": {"eval": str(tmp_path / "test"), "calib": str(tmp_path / "calib"), "preprocess": "size=8x64",
                    "task": "ctc:alphabet=0123456789,blank=0,labels=prefix", "limit": 30},
           "targets": [{"profile": "onnxruntime", "precisions": ["fp32", "int8"]}],
           "bench": {"min_iters": 3, "min_seconds": 0.05}}
    rep = run_matrix(cfg, tmp_path / "run")
    rows = {r["precision"]: r for r in rep["results"]}
    assert {r["status"] for r in rows.values()} == {"ok"}
    for r in rows.values():
        t = r["task"]
        assert (t["metric"], t["reference"], t["labelled"], t["samples"]) == ("exact_match", 100.0, True, 30)
        assert t["delta_ci95"][0] <= t["delta"] <= t["delta_ci95"][1]
    ver = rows["int8"]["verification"]["task"]  # plain INT8 loses every plate; the plan repaired it in budget
    assert ver["metric"] == "exact_match" and ver["delta"] >= -ver["budget"] and rows["int8"]["task"]["pass"]
