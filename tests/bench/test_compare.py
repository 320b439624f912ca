"""Baseline gates: CI-based regressions, drift and error conditions, and the CLI's exit codes."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from edgeconv.bench.compare import compare_latency, compare_reports, noise_interval, parse_fail_on
from edgeconv.bench.latency import summarize
from edgeconv.bench.report import make_report
from edgeconv.core.errors import ConfigError


def _lat(p50: float, spread: float = 0.02, seed: int = 0) -> dict:
    return summarize(np.random.default_rng(seed).normal(p50, p50 * spread, 300))


def _report(p50s: dict[str, float], failed: tuple[str, ...] = ()) -> dict:
    rows = []
    for name, p50 in p50s.items():
        rows.append({"target": name, "profile": name, "precision": "fp32", "status": "ok", "error": None,
                     "latency_ms": _lat(p50), "drift": {"checks": [], "pass": True},
                     "task": {"metric": "top1", "reference": 90.0, "value": 89.8, "delta": -0.2, "tolerance": 1.0,
                              "pass": True}})
    for name in failed:
        rows.append({"target": name, "profile": name, "precision": "int8", "status": "failed",
                     "error": "conversion error: boom", "latency_ms": None, "drift": None, "task": None})
    return make_report(rows, model={"name": "m"}, env={"cpu": "x"})


def test_parse_fail_on() -> None:
    assert parse_fail_on("regression, drift") == ("regression", "drift")
    assert parse_fail_on("all") == ("regression", "drift", "error")
    assert parse_fail_on("") == ()
    with pytest.raises(ConfigError):
        parse_fail_on("regresion")


def test_self_comparison_has_no_conditions() -> None:
    rep = _report({"a": 10.0, "b": 3.0}, failed=("c",))
    c = compare_reports(rep, copy.deepcopy(rep))
    assert c.holds(("regression", "drift", "error")) == []
    assert {v["verdict"] for v in c.rows.values()} == {"same", "still failing"}


def test_halved_baseline_is_a_regression_with_the_rows_named() -> None:
    rep = _report({"a": 10.0, "b": 3.0})
    base = copy.deepcopy(rep)
    for r in base["results"]:
        r["latency_ms"]["p50"] /= 2  # p50 edited without its CI: the CI's relative width is kept
    c = compare_reports(rep, base)
    msgs = c.holds(("regression",))
    assert len(msgs) == 2 and msgs[0].startswith("a fp32") and msgs[1].startswith("b fp32")
    assert all(v["change"] == pytest.approx(1.0) for v in c.rows.values())


def test_noise_decides_not_a_bare_percentage() -> None:
    noisy_new, noisy_base = _lat(10.6, spread=0.6, seed=1), _lat(10.0, spread=0.6, seed=2)
    assert compare_latency(noisy_new, noisy_base, min_effect=0.0)["verdict"] == "same"  # +6 % inside the noise
    tight_new, tight_base = _lat(10.6, spread=0.005, seed=1), _lat(10.0, spread=0.005, seed=2)
    assert compare_latency(tight_new, tight_base, min_effect=0.05)["verdict"] == "regression"
    assert compare_latency(tight_base, tight_new, min_effect=0.05)["verdict"] == "improvement"


def test_noise_interval_keeps_relative_width_for_edited_p50() -> None:
    lat = {"p50": 5.0, "p50_ci": [9.0, 11.0]}
    lo, hi = noise_interval(lat)
    assert lo == pytest.approx(4.5) and hi == pytest.approx(5.5)
    assert noise_interval({"p50": 10.0, "p50_ci": [9.0, 11.0]}) == (9.0, 11.0)


def test_new_failure_and_task_drop_are_conditions() -> None:
    base = _report({"a": 10.0, "c": 1.0})
    new = _report({"a": 10.0}, failed=("c",))
    new["results"][0]["task"].update(value=85.0, delta=-5.0, **{"pass": False})
    new["results"][0]["drift"] = {"checks": [{"name": "cosine", "value": 0.9, "limit": 0.98, "pass": False}],
                                  "pass": False}
    c = compare_reports(new, base)
    assert any("c int8: failed" in m for m in c.conditions["error"])
    assert any("c fp32" in m and "missing" in m for m in c.conditions["error"])
    drift = " ".join(c.conditions["drift"])
    assert "cosine" in drift and "below the baseline" in drift
    assert c.holds(("regression",)) == []


def test_cli_compare_exit_codes(tmp_path: Path) -> None:
    from edgeconv.cli import main

    rep = _report({"a": 10.0})
    base = copy.deepcopy(rep)
    base["results"][0]["latency_ms"]["p50"] /= 2
    (tmp_path / "new.json").write_text(json.dumps(rep))
    (tmp_path / "base.json").write_text(json.dumps(base))
    runner = CliRunner()
    same = runner.invoke(main, ["compare", str(tmp_path / "new.json"), str(tmp_path / "new.json"),
                                "--fail-on", "regression,drift,error"])
    assert same.exit_code == 0, same.output
    worse = runner.invoke(main, ["compare", str(tmp_path / "new.json"), str(tmp_path / "base.json"),
                                 "--fail-on", "regression", "--out", str(tmp_path / "cmp")])
    assert worse.exit_code == 1
    assert "regression" in worse.output and "a/fp32" in worse.output
    assert (tmp_path / "cmp" / "junit.xml").is_file()
    bad = runner.invoke(main, ["compare", str(tmp_path / "new.json"), str(tmp_path / "base.json"),
                               "--fail-on", "speed"])
    assert bad.exit_code == 2


def test_self_comparison_with_repeated_rows_is_never_a_regression() -> None:
    """Two rows of one profile × precision (two thread counts): each is matched with its own counterpart."""
    rep = _report({"a": 10.0})
    slow = copy.deepcopy(rep["results"][0])
    slow["latency_ms"] = _lat(40.0)
    rep["results"].append(slow)
    c = compare_reports(rep, copy.deepcopy(rep))
    assert c.holds(("regression", "drift", "error")) == []
    assert [v["verdict"] for v in c.rows.values()] == ["same", "same"]


def test_cli_compare_refuses_future_schema_and_wrong_shape_with_config_errors(tmp_path: Path) -> None:
    from edgeconv.cli import main

    rep = _report({"a": 10.0})
    good = tmp_path / "good.json"
    good.write_text(json.dumps(rep))
    cases = {"future": {**rep, "schema": "edgeconv.report/7"}, "list": [rep],
             "shape": {**rep, "results": [{"status": "ok"}]}, "notjson": None}
    runner = CliRunner()
    for name, doc in cases.items():
        p = tmp_path / f"{name}.json"
        p.write_text("{not json" if doc is None else json.dumps(doc))
        for args in ([str(p), str(good)], [str(good), str(p)]):
            res = runner.invoke(main, ["compare", *args, "--fail-on", "all"])
            assert res.exit_code == 2, (name, res.output)
            assert "Traceback" not in res.output and "internal error" not in res.output
    res = runner.invoke(main, ["compare", str(tmp_path / "future.json"), str(good)])
    assert "newer than this edgeconv" in res.output


def test_cli_compare_json(tmp_path: Path) -> None:
    from edgeconv.cli import main

    rep = _report({"a": 10.0})
    (tmp_path / "r.json").write_text(json.dumps(rep))
    res = CliRunner().invoke(main, ["compare", str(tmp_path / "r.json"), str(tmp_path / "r.json"), "--json",
                                    "--fail-on", "all"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["failures"] == [] and doc["rows"][0]["verdict"] == "same"
