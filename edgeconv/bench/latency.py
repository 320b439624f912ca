"""Latency measurement and its statistics: warm up until steady, measure at least N iterations *and* T seconds.

Why not a fixed handful of warm-up runs: runtimes differ wildly in how long they take to settle (OpenVINO compiles
lazily, ORT's arena grows, CPU frequency ramps); a fixed count is either wasteful or too short.  We run short
windows until the window medians stop moving, then measure.

Why a confidence interval for p50: a benchmark that reports "12.3 ms" without saying how sure it is cannot be
compared with another run.  The interval used is the distribution-free order-statistic interval for the median
(exact binomial ranks), which assumes nothing about the shape of the latency distribution (it is skewed and often
multi-modal).  It assumes independent samples; on a busy machine samples are autocorrelated, so the interval is a
lower bound on the true run-to-run noise — ``compare`` therefore also applies a small practical-effect floor.
"""

from __future__ import annotations

import gc
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class LatencyConfig:
    """How long to warm up and measure. Measuring stops once both ``min_iters`` and ``min_seconds`` are reached
    (or ``max_seconds`` is spent: a very slow model still finishes)."""

    min_iters: int = 50
    min_seconds: float = 2.0
    max_seconds: float = 60.0
    warmup_min_iters: int = 5
    warmup_max_seconds: float = 10.0
    warmup_window: int = 5  # iterations per warm-up window (raised so a window lasts >= ~50 ms)
    steady_tolerance: float = 0.05  # the last 3 window medians agree within this relative spread
    confidence: float = 0.95
    streams: int = 0  # throughput mode: requests in flight (0/1: off)
    throughput_seconds: float = 2.0

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LatencyConfig:
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        return cls(**known)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def warmup(fn: Callable[[], Any], cfg: LatencyConfig) -> dict[str, Any]:
    """Call ``fn`` until the medians of the last three windows agree within ``steady_tolerance``.

    Returns how many iterations it took, how long, and whether it became steady before the time limit (an
    unsteady warm-up is reported, not hidden: the numbers that follow are then less trustworthy).
    """
    t_start = time.perf_counter()
    medians: list[float] = []
    n = 0
    window = max(1, cfg.warmup_window)
    steady = False
    while True:
        times = []
        for _ in range(window):
            t0 = time.perf_counter_ns()
            fn()
            times.append(time.perf_counter_ns() - t0)
            if time.perf_counter() - t_start >= cfg.warmup_max_seconds:
                break  # the limit is a limit, even mid-window
        n += len(times)
        med = float(np.median(times))
        medians.append(med)
        # A window should last >= 50 ms, so the medians are not dominated by a single scheduler hiccup.
        if med * window < 50e6 and window < 200:
            window = min(200, max(window + 1, math.ceil(50e6 / max(med, 1.0))))
        elapsed = time.perf_counter() - t_start
        if n >= cfg.warmup_min_iters and len(medians) >= 3:
            last = medians[-3:]
            if (max(last) - min(last)) / max(np.median(last), 1.0) <= cfg.steady_tolerance:
                steady = True
                break
        if elapsed >= cfg.warmup_max_seconds:
            break
    return {"iters": n, "seconds": round(time.perf_counter() - t_start, 4), "steady": steady,
            "window_medians_ms": [round(m / 1e6, 4) for m in medians[-5:]]}


def measure(fn: Callable[[], Any], cfg: LatencyConfig) -> np.ndarray:
    """Per-call latencies in milliseconds: at least ``min_iters`` calls and ``min_seconds`` of wall time.

    The garbage collector is paused while measuring (as timeit does): a collection is a property of the Python
    harness, not of the runtime under test.
    """
    samples: list[int] = []
    gc_was = gc.isenabled()
    gc.disable()
    try:
        t_start = time.perf_counter()
        while True:
            t0 = time.perf_counter_ns()
            fn()
            samples.append(time.perf_counter_ns() - t0)
            elapsed = time.perf_counter() - t_start
            if len(samples) >= cfg.min_iters and elapsed >= cfg.min_seconds:
                break
            if elapsed >= cfg.max_seconds and len(samples) >= 3:
                break
    finally:
        if gc_was:
            gc.enable()
    return np.asarray(samples, dtype=np.float64) / 1e6


def _log_binom_pmf(n: int, k: int) -> float:
    return math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1) - n * math.log(2.0)


def median_ci_ranks(n: int, confidence: float = 0.95) -> tuple[int, int]:
    """0-based order-statistic indices (lo, hi) with P(x_(lo) <= median <= x_(hi)) >= confidence.

    Exact binomial(n, 1/2) ranks: the count of samples below the true median is Binomial(n, 1/2), whatever the
    distribution.  For n < 6 no interval reaches 95 %; the full range is returned.
    """
    if n <= 0:
        raise ValueError("no samples")
    alpha = 1.0 - confidence
    cdf = 0.0
    j = 0  # largest j with P(B <= j - 1) <= alpha/2  → lower bound is x_(j) (1-based), index j-1
    for k in range(n + 1):
        p = math.exp(_log_binom_pmf(n, k))
        if cdf + p > alpha / 2:
            j = k
            break
        cdf += p
    lo = max(j - 1, 0)
    hi = min(n - 1 - lo, n - 1)
    if j == 0:
        return 0, n - 1
    return lo, hi


def summarize(samples_ms: np.ndarray | list[float], confidence: float = 0.95) -> dict[str, Any]:
    """The latency fields of a report row (all in ms): min, p50, p90, p99, mean, std, n, p50's CI, throughput,
    and 21 quantiles (0, 5, …, 100 %) for distribution plots without storing every sample."""
    x = np.sort(np.asarray(samples_ms, dtype=np.float64))
    n = int(x.size)
    if n == 0:
        raise ValueError("no latency samples")
    lo, hi = median_ci_ranks(n, confidence)
    mean = float(x.mean())
    return {
        "min": float(x[0]), "p50": float(np.percentile(x, 50)), "p90": float(np.percentile(x, 90)),
        "p99": float(np.percentile(x, 99)), "max": float(x[-1]), "mean": mean,
        "std": float(x.std(ddof=1)) if n > 1 else 0.0, "n": n,
        "p50_ci": [float(x[lo]), float(x[hi])], "ci_level": confidence,
        "throughput_fps": 1000.0 / mean if mean > 0 else None,
        "quantiles": [float(v) for v in np.percentile(x, np.linspace(0, 100, 21))],
    }


def run_latency(fn: Callable[[], Any], cfg: LatencyConfig) -> dict[str, Any]:
    """Warm up until steady, then measure; the summary plus the warm-up record."""
    wu = warmup(fn, cfg)
    samples = measure(fn, cfg)
    out = summarize(samples, cfg.confidence)
    out["warmup"] = wu
    out["seconds"] = round(float(samples.sum()) / 1000.0, 3)
    return out


def run_throughput(call_batch: Callable[[int], int], cfg: LatencyConfig) -> dict[str, Any]:
    """Throughput mode: ``call_batch(k)`` runs k requests with ``cfg.streams`` in flight and returns how many
    completed; repeated for ``throughput_seconds``.  Reports requests per second."""
    streams = max(cfg.streams, 1)
    batch = streams * 4
    call_batch(batch)  # warm the streams/infer requests
    done = 0
    t0 = time.perf_counter()
    while True:
        done += call_batch(batch)
        elapsed = time.perf_counter() - t0
        if elapsed >= cfg.throughput_seconds:
            break
    return {"streams": streams, "requests": done, "seconds": round(elapsed, 4), "fps": done / elapsed}
