"""Latency statistics and the warm-up/measure loops."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest

from edgeconv.bench.latency import LatencyConfig, measure, median_ci_ranks, run_latency, summarize, warmup


def test_median_ci_ranks_match_exact_binomial() -> None:
    stats = pytest.importorskip("scipy.stats", reason="scipy gives the exact binomial to check against")
    for n in (6, 10, 50, 101, 1000):
        lo, hi = median_ci_ranks(n, 0.95)
        assert hi == n - 1 - lo  # symmetric ranks
        # coverage P(lo+1 <= B <= hi) >= 95 %, and one rank narrower would not reach it
        cover = stats.binom.cdf(hi, n, 0.5) - stats.binom.cdf(lo, n, 0.5)
        assert cover >= 0.95
        if lo + 1 < hi - 1:
            narrower = stats.binom.cdf(hi - 1, n, 0.5) - stats.binom.cdf(lo + 1, n, 0.5)
            assert narrower < 0.95


def test_median_ci_small_n_is_full_range() -> None:
    assert median_ci_ranks(5) == (0, 4)
    with pytest.raises(ValueError):
        median_ci_ranks(0)


def test_median_ci_coverage_on_skewed_distribution() -> None:
    """Distribution-free: the interval covers the true median of a skewed (log-normal) law ~95 % of the time."""
    rng = np.random.default_rng(0)
    true_median = math.exp(0.0)
    hits = 0
    trials = 1000
    for _ in range(trials):
        s = summarize(rng.lognormal(0.0, 0.7, size=60))
        hits += s["p50_ci"][0] <= true_median <= s["p50_ci"][1]
    assert 0.93 <= hits / trials <= 0.995


def test_summarize_fields_are_ordered_and_consistent() -> None:
    x = np.arange(1, 1001, dtype=float)
    s = summarize(x)
    assert s["n"] == 1000
    assert s["min"] == 1 and s["max"] == 1000
    assert s["min"] <= s["p50_ci"][0] <= s["p50"] <= s["p50_ci"][1] <= s["p90"] <= s["p99"] <= s["max"]
    assert s["mean"] == pytest.approx(500.5)
    assert s["throughput_fps"] == pytest.approx(1000 / 500.5)
    assert len(s["quantiles"]) == 21 and s["quantiles"][10] == pytest.approx(s["p50"])


def test_measure_honours_both_min_iters_and_min_seconds() -> None:
    calls = []
    cfg = LatencyConfig(min_iters=5, min_seconds=0.05)
    samples = measure(lambda: (calls.append(1), time.sleep(0.001)), cfg)
    assert len(samples) == len(calls) >= 5
    assert samples.sum() >= 45  # ms: the loop ran for at least ~min_seconds
    cfg = LatencyConfig(min_iters=200, min_seconds=0.0)
    assert len(measure(lambda: None, cfg)) == 200


def test_warmup_runs_until_steady() -> None:
    """A function that is slow for its first 15 calls is not measured before it settles."""
    n = {"calls": 0}

    def fn() -> None:
        n["calls"] += 1
        time.sleep(0.004 if n["calls"] <= 15 else 0.0005)

    wu = warmup(fn, LatencyConfig(warmup_window=5, warmup_max_seconds=5.0, steady_tolerance=0.5))
    assert wu["steady"]
    assert wu["iters"] > 15
    assert wu["window_medians_ms"][-1] < 2.0


def test_warmup_gives_up_after_its_time_limit() -> None:
    n = {"calls": 0}

    def drifting() -> None:  # keeps getting slower: never steady
        n["calls"] += 1
        time.sleep(0.0002 * n["calls"] ** 1.5 / 10)

    wu = warmup(drifting, LatencyConfig(warmup_window=3, warmup_max_seconds=0.3, steady_tolerance=0.001))
    assert not wu["steady"]
    assert wu["seconds"] >= 0.3


def test_run_latency_reports_warmup_and_samples() -> None:
    out = run_latency(lambda: sum(range(1000)), LatencyConfig(min_iters=30, min_seconds=0.01))
    assert out["n"] >= 30 and out["warmup"]["iters"] >= 5
    assert out["p50"] > 0
