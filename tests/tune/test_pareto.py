"""The selection rules of ``edgeconv tune`` on synthetic numbers: budget, Pareto front, recommendation."""

from __future__ import annotations

import math

from edgeconv.tune.pareto import Point, cost_axis, pareto_front, recommend, within_budget
from edgeconv.tune.search import select


def _pts() -> list[Point]:
    return [Point("fp32", 10.0, task_delta=0.0), Point("fp16", 8.0, task_delta=-0.1),
            Point("int8", 4.0, task_delta=-0.6), Point("int8-slow", 6.0, task_delta=-0.6),
            Point("gain", 9.0, task_delta=+0.3), Point("nolat", None, task_delta=0.0)]


def test_front_keeps_only_undominated_points_fastest_first() -> None:
    front = [p.id for p in pareto_front(_pts())]
    # int8-slow is beaten by int8 (same cost, faster); gain costs 0 like fp32 but is faster, so fp32 is dominated
    assert front == ["int8", "fp16", "gain"]


def test_a_measured_gain_counts_as_no_cost() -> None:
    assert Point("g", 1.0, task_delta=2.5).cost("task") == 0.0
    assert Point("d", 1.0, task_delta=-2.5).cost("task") == 2.5


def test_equal_points_are_both_on_the_front() -> None:
    front = pareto_front([Point("a", 5.0, task_delta=-0.2), Point("b", 5.0, task_delta=-0.2)])
    assert {p.id for p in front} == {"a", "b"}


def test_cost_axis_falls_back_to_drift_when_a_point_has_no_task_metric() -> None:
    pts = [Point("a", 2.0, task_delta=-0.1, drift_rel_l2=0.01), Point("b", 1.0, drift_rel_l2=0.05)]
    assert cost_axis(pts) == "drift"
    assert [p.id for p in pareto_front(pts)] == ["b", "a"]
    assert cost_axis(pts[:1]) == "task"


def test_budget_rules() -> None:
    assert within_budget(Point("ok", 1.0, task_delta=-0.4, budget=0.5)) == (True, None)
    ok, why = within_budget(Point("over", 1.0, task_delta=-0.6, budget=0.5))
    assert not ok and "-0.60" in why and "0.5" in why
    assert within_budget(Point("over", 1.0, task_delta=-0.6, budget=0.5), max_drop=1.0)[0]  # --max-drop wins
    assert not within_budget(Point("v", 1.0, verified=False))[0]
    assert not within_budget(Point("d", 1.0, drift_pass=False))[0]
    assert not within_budget(Point("n", None))[0]
    assert not within_budget(Point("nan", math.nan))[0]
    assert not within_budget(Point("t", 1.0, task_pass=False))[0]  # the harness judged it over the budget


def test_recommend_is_the_fastest_acceptable_and_breaks_ties_by_cost() -> None:
    assert recommend(_pts()).id == "int8"
    tie = [Point("worse", 3.0, task_delta=-0.5), Point("better", 3.0, task_delta=-0.1)]
    assert recommend(tie).id == "better"
    assert recommend([Point("x", None)]) is None


def test_select_considers_only_accepted_results() -> None:
    results = [{"id": "fast-but-rejected", "status": "rejected", "latency_ms": {"p50": 1.0}, "task": {"delta": -5}},
               {"id": "a", "status": "ok", "latency_ms": {"p50": 3.0}, "task": {"delta": -0.2}},
               {"id": "b", "status": "ok", "latency_ms": {"p50": 2.0}, "task": {"delta": -0.4}}]
    axis, front, best = select(results)
    assert (axis, front, best) == ("task", ["b", "a"], "b")


def test_table_shows_the_delta_interval_and_no_number_where_there_is_none() -> None:
    from edgeconv.tune.table import markdown, rows

    doc = {"model": "m", "recommended": "a", "candidates": [
        {"id": "a", "status": "ok", "pareto": True, "latency_ms": {"p50": 2.0},
         "task": {"delta": -0.05, "delta_ci95": [-0.76, 0.76]}, "drift": {"rel_l2": 0.07}},
        {"id": "b", "status": "rejected", "reason": "verification error: x", "latency_ms": None, "task": None}]}
    (a, b) = rows(doc)
    assert a == ("a", "ok", "2", "-0.05 [-0.76, +0.76]", "0.07", "best", "")
    assert b[2:5] == ("-", "-", "-") and b[6] == "verification error: x"
    assert "| b | rejected | - | - | - |" in markdown(doc)


def _res(cid: str, art: str, p50: float, lo: float, hi: float, status: str = "ok") -> dict:
    return {"id": cid, "artifact": art, "status": status, "latency_ms": {"p50": p50, "p50_ci": [lo, hi]}}


def test_the_recommendation_says_whether_its_lead_is_beyond_noise() -> None:
    from edgeconv.tune.pareto import margin, margin_text

    res = [_res("ov/int8/t2", "a", 2.13, 2.10, 2.16), _res("ov/int8/t1", "a", 2.0, 1.9, 2.1),
           _res("ov/bf16/t2", "b", 3.13, 3.05, 3.20), _res("ov/fp32/t2", "c", 1.0, 0.9, 1.1, status="rejected")]
    m = margin(res, "ov/int8/t2")  # the same artifact at another thread count and a rejected row do not count
    assert m == {"runner_up": "ov/bf16/t2", "best_p50_ms": 2.13, "runner_up_p50_ms": 3.13, "separated": True}
    assert "ahead beyond the 95 % intervals" in margin_text(m)
    res[2] = _res("ov/bf16/t2", "b", 2.20, 2.12, 2.30)
    m = margin(res, "ov/int8/t2")
    assert not m["separated"] and "a tie within the 95 % intervals" in margin_text(m)
    assert margin(res[:2], "ov/int8/t2") is None and margin_text(None) == ""
