"""The benchmarks' shared side-by-side measurement: fresh sessions per instance, pooled times, the ratio's interval."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from side_by_side import compare_instances, ratio_ci  # noqa: E402


def test_compare_instances_makes_and_closes_a_session_pair_per_instance() -> None:
    made: list[str] = []
    closed: list[str] = []
    want = {"y": np.ones(3, np.float32)}

    def maker(name: str, value: float):
        def make():
            made.append(name)
            return (lambda: {"y": np.full(3, value, np.float32)}), (lambda: closed.append(name))
        return make

    res = compare_instances({"edgeconv": maker("e", 1.0), "native": maker("n", 1.5)}, want, runs=12, instances=3,
                            warmup=1)
    assert made == ["e", "n", "n", "e", "e", "n"]  # creation order alternates between instances
    assert sorted(closed) == sorted(made)
    assert res["instances"] == 3 and res["latency"]["edgeconv"]["runs"] == 12 == res["latency"]["native"]["runs"]
    assert res["latency"]["edgeconv"]["max_abs_vs_reference"] == 0.0
    assert res["latency"]["native"]["max_abs_vs_reference"] == 0.5
    lo, hi = res["ratio_ci95"]
    assert lo <= hi


def test_ratio_ci_brackets_the_ratio_and_separates_a_real_difference() -> None:
    rng = np.random.default_rng(0)
    a = list(10 + rng.normal(0, 0.2, 400))
    b = list(10 + rng.normal(0, 0.2, 400))
    lo, hi = ratio_ci(a, b)
    assert lo < float(np.median(a) / np.median(b)) < hi and lo < 1.0 < hi
    lo, hi = ratio_ci([x * 1.05 for x in a], b)
    assert lo > 1.0  # 5 % slower is told apart from parity
