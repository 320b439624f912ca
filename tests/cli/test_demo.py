"""``edgeconv demo``: targets from the registry, the summary names the failed check, and the exit code is the gate
``edgeconv compare --fail-on`` computes on the same report."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from edgeconv import demo as demo_mod
from edgeconv.bench import compare as cmp
from edgeconv.bench.latency import summarize
from edgeconv.bench.report import make_report
from edgeconv.cli import main


def _row(profile: str, precision: str, p50: float, *, max_abs: float = 1e-5, limit: float = 0.01) -> dict:
    lat = summarize(np.random.default_rng(0).normal(p50, p50 * 0.01, 300))
    ok = max_abs <= limit
    return {"target": profile, "profile": profile, "precision": precision, "status": "ok", "error": None,
            "latency_ms": lat, "artifact": {"path": "/x", "bytes": 1, "sha256": "a"},
            "drift": {"max_abs": max_abs, "rel_l2": 1e-4, "cosine": 0.9999,
                      "checks": [{"name": "max_abs", "value": max_abs, "limit": limit, "pass": ok}], "pass": ok},
            "task": {"metric": "map50_95", "reference": 78.96, "value": 78.98, "delta": 0.02, "tolerance": 0.3,
                     "pass": True},
            "checks": {"drift": ok, "task": True}}


def test_demo_targets_come_from_the_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    from edgeconv.profiles import list_profiles
    from edgeconv.targets import registry

    installed = {n: t for n, t in registry.all_targets().items() if t.available() and n in list_profiles()}
    got = demo_mod.demo_targets()
    assert got[0] == "onnxruntime" and set(got) == set(installed)
    absent = type("Absent", (), {"extra": "absent", "available": lambda self: False})()
    monkeypatch.setattr(registry, "all_targets", lambda: {**installed, "zzz": absent})
    assert "zzz" not in demo_mod.demo_targets()
    cfg = demo_mod.demo_config("yolo", targets=["onnxruntime"], precisions=("int8",))
    assert cfg["targets"] == [{"profile": "onnxruntime", "precisions": ["int8"]}]


def test_row_status_names_the_failed_check() -> None:
    assert demo_mod.row_status(_row("openvino", "fp16", 8.0, max_abs=0.025)) == \
        "ok, fp16 drift max_abs 0.025 > 0.01"
    assert demo_mod.row_status(_row("openvino", "fp32", 7.0)) == "ok"
    failed = {"status": "failed", "error": "conversion error: boom", "precision": "int8"}
    assert demo_mod.row_status(failed) == "failed: conversion error: boom"


@pytest.mark.parametrize("slower", [False, True])
def test_demo_exit_code_agrees_with_compare(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, slower: bool) -> None:
    """The matrix is replaced by its result (a report gated against the baseline by the same compare code); the demo
    must exit as `edgeconv compare NEW BASELINE --fail-on regression,drift,error` does on those two files."""
    import edgeconv.bench.matrix as matrix

    base = make_report([_row("onnxruntime", "fp32", 5.0), _row("openvino", "fp16", 8.0, max_abs=0.005)],
                       model={"name": "yolo"}, env={"cpu": "x"})
    new = copy.deepcopy(base)
    if slower:
        new["results"][0]["latency_ms"] = summarize(np.random.default_rng(1).normal(9.0, 0.05, 300))
    (tmp_path / "base.json").write_text(json.dumps(base))

    def fake_run_matrix(cfg, out, baseline=None, *, fail_on=None, use_cache=True, **kw):
        rep = copy.deepcopy(new)
        names = cmp.parse_fail_on(fail_on or "regression,drift,error")
        cmp.annotate(rep, cmp.compare_reports(rep, json.loads(Path(baseline).read_text())), names, str(baseline))
        Path(out).mkdir(parents=True, exist_ok=True)
        (Path(out) / "report.json").write_text(json.dumps(rep))
        return rep

    monkeypatch.setattr(matrix, "run_matrix", fake_run_matrix)
    r = CliRunner()
    d = r.invoke(main, ["demo", "--target", "onnxruntime", "--out", str(tmp_path / "d"), "--baseline",
                        str(tmp_path / "base.json")])
    c = r.invoke(main, ["compare", str(tmp_path / "d" / "report.json"), str(tmp_path / "base.json"), "--fail-on",
                        "regression,drift,error"])
    assert d.exit_code == c.exit_code == (1 if slower else 0), (d.output, c.output)
    assert ("latency regression" in d.stdout) == slower


@pytest.mark.slow
def test_real_demo_and_compare_agree(tmp_path: Path) -> None:
    r = CliRunner()
    args = ["demo", "--model", "classifier", "--target", "onnxruntime", "-p", "fp32", "--limit", "16",
            "--min-seconds", "0.1", "--min-iters", "5"]
    first = r.invoke(main, [*args, "--out", str(tmp_path / "a")])
    assert first.exit_code == 0, first.output
    again = r.invoke(main, [*args, "--out", str(tmp_path / "b"), "--baseline", str(tmp_path / "a" / "report.json"),
                            "--json"])
    c = r.invoke(main, ["compare", str(tmp_path / "b" / "report.json"), str(tmp_path / "a" / "report.json"),
                        "--fail-on", "regression,drift,error"])
    assert again.exit_code == c.exit_code, (again.output, c.output)
    assert json.loads(again.stdout)["results"][0]["status"] == "ok"


def test_unjudged_drift_checks_are_not_failures() -> None:
    """end2end rows carry drift checks with pass None (NMS output order is not judged): no status text, no gate."""
    from edgeconv.bench import compare as cmp

    row = _row("onnxruntime+end2end", "fp32", 5.0, max_abs=0.0)
    for c in row["drift"]["checks"]:
        c["pass"] = None
    row["drift"]["pass"] = None
    assert demo_mod.row_status(row) == "ok"
    c = cmp.compare_reports({"results": [row]}, {"results": []})
    assert not c.conditions["drift"]
