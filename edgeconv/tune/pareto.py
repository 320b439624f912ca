"""Which measured candidates are acceptable, which are not beaten on both axes, and which one to recommend.

Pure functions on plain numbers, so the selection rules are tested without converting anything.

Axes: p50 latency (ms, lower is better) and the accuracy cost (lower is better): the task metric's drop in points
(``max(0, -delta)``) when every candidate has a task metric, else the output drift (``rel_l2`` against the
reference). A gain in the task metric counts as no cost: measured gains of reduced precisions are noise, and
preferring them would reward luck.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Point:
    """One measured candidate as the selection sees it."""

    id: str
    p50_ms: float | None
    task_delta: float | None = None  # points; negative = worse than the reference
    drift_rel_l2: float | None = None
    verified: bool = True  # conversion-time verification passed (the pipeline refuses an artifact otherwise)
    drift_pass: bool | None = None
    task_pass: bool | None = None  # the profile's task budget, judged by the harness
    budget: float | None = None  # the profile's task_delta budget in points (None: none declared)
    extra: dict[str, Any] = field(default_factory=dict)

    def cost(self, axis: str) -> float | None:
        if axis == "task":
            return None if self.task_delta is None else max(0.0, -float(self.task_delta))
        return None if self.drift_rel_l2 is None else float(self.drift_rel_l2)


def _finite(x: float | None) -> bool:
    return x is not None and math.isfinite(x)


def within_budget(p: Point, max_drop: float | None = None) -> tuple[bool, str | None]:
    """Whether ``p`` may be deployed, and why not. ``max_drop`` (points) replaces the profile's own budget."""
    if not p.verified:
        return False, "verification failed"
    if not _finite(p.p50_ms):
        return False, "no latency measured"
    if p.drift_pass is False:
        return False, "drift over the profile's tolerance"
    budget = p.budget if max_drop is None else max_drop
    if p.task_delta is not None and budget is not None:
        if -p.task_delta > budget:
            return False, f"task delta {p.task_delta:+.2f} over the budget of {budget:g} points"
        return True, None
    if max_drop is None and p.task_pass is False:
        return False, "task metric over the profile's budget"
    return True, None


def cost_axis(points: list[Point]) -> str:
    """``task`` when every point has a task delta (labelled or label-free metric), else ``drift``."""
    return "task" if points and all(_finite(p.task_delta) for p in points) else "drift"


def pareto_front(points: list[Point], axis: str | None = None) -> list[Point]:
    """The points no other point beats on both p50 and cost (lower is better on both), fastest first.

    Points without a finite p50 or cost are not on the front. Equal points are all kept (neither dominates).
    """
    axis = axis or cost_axis(points)
    usable = [p for p in points if _finite(p.p50_ms) and _finite(p.cost(axis))]
    front = []
    for p in usable:
        pc = p.cost(axis)
        dominated = any(q is not p and q.p50_ms <= p.p50_ms and q.cost(axis) <= pc  # type: ignore[operator]
                        and (q.p50_ms < p.p50_ms or q.cost(axis) < pc)  # type: ignore[operator]
                        for q in usable)
        if not dominated:
            front.append(p)
    return sorted(front, key=lambda p: (p.p50_ms, p.cost(axis)))


def recommend(points: list[Point], axis: str | None = None) -> Point | None:
    """The fastest acceptable point; on a tie in p50, the lower cost. ``points`` are the acceptable ones."""
    axis = axis or cost_axis(points)
    usable = [p for p in points if _finite(p.p50_ms)]
    if not usable:
        return None
    return min(usable, key=lambda p: (p.p50_ms, p.cost(axis) if _finite(p.cost(axis)) else math.inf, p.id))


def margin(results: list[dict[str, Any]], best_id: str | None) -> dict[str, Any] | None:
    """How far the recommended candidate is ahead of the next fastest acceptable one, on the 95 % intervals of
    their p50s: a lead inside the intervals is a tie this run cannot break (on a shared VM two runs of the same
    search have swapped bf16 and int8 at the top), and the report says so instead of implying a clear winner."""
    ok = [r for r in results if r.get("status") == "ok" and (r.get("latency_ms") or {}).get("p50") is not None]
    best = next((r for r in ok if r["id"] == best_id), None)
    rest = sorted((r for r in ok if r["id"] != best_id and r["artifact"] != (best or {}).get("artifact")),
                  key=lambda r: r["latency_ms"]["p50"])
    if best is None or not rest:
        return None
    nxt = rest[0]
    hi = (best["latency_ms"].get("p50_ci") or [None, None])[1]
    lo = (nxt["latency_ms"].get("p50_ci") or [None, None])[0]
    separated = hi is not None and lo is not None and hi < lo
    return {"runner_up": nxt["id"], "best_p50_ms": best["latency_ms"]["p50"], "runner_up_p50_ms":
            nxt["latency_ms"]["p50"], "separated": separated}


def margin_text(m: dict[str, Any] | None) -> str:
    if not m:
        return ""
    how = "ahead beyond the 95 % intervals" if m["separated"] else \
        "a tie within the 95 % intervals: rerun on a quiet machine, or with --min-seconds higher"
    return (f" ({m['best_p50_ms']:.3g} ms; next other artifact {m['runner_up']} {m['runner_up_p50_ms']:.3g} ms: "
            f"{how})")
