"""The steady-state latency method in pure Python + numpy, importable on a device that has no edgeconv.

This is the same method as ``edgeconv.bench.latency`` (warm up in windows until the last three window medians agree,
then measure at least N calls *and* T seconds with the GC paused; exact binomial order-statistic CI of p50), kept
free of every edgeconv import so the device worker can ship it beside itself.  ``tests/devices`` checks that both
give identical numbers on identical samples; ``edgeconv.bench.latency`` should import these functions rather than
keep a second copy.
"""

from __future__ import annotations

import gc
import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np

#: LatencyConfig's fields and defaults (edgeconv.bench.latency.LatencyConfig), as plain data.
DEFAULTS: dict[str, Any] = {
    "min_iters": 50, "min_seconds": 2.0, "max_seconds": 60.0, "warmup_min_iters": 5, "warmup_max_seconds": 10.0,
    "warmup_window": 5, "steady_tolerance": 0.05, "confidence": 0.95, "streams": 0, "throughput_seconds": 2.0,
}


def config(d: dict[str, Any] | None) -> dict[str, Any]:
    """The known latency settings of ``d`` over the defaults (unknown keys are ignored, as LatencyConfig does)."""
    return {**DEFAULTS, **{k: v for k, v in (d or {}).items() if k in DEFAULTS}}


def warmup(fn: Callable[[], Any], cfg: dict[str, Any]) -> dict[str, Any]:
    """Call ``fn`` until the medians of the last three windows agree within ``steady_tolerance`` (or time runs out)."""
    t_start = time.perf_counter()
    medians: list[float] = []
    n = 0
    window = max(1, int(cfg["warmup_window"]))
    steady = False
    while True:
        times = []
        for _ in range(window):
            t0 = time.perf_counter_ns()
            fn()
            times.append(time.perf_counter_ns() - t0)
            if time.perf_counter() - t_start >= cfg["warmup_max_seconds"]:
                break
        n += len(times)
        med = float(np.median(times))
        medians.append(med)
        if med * window < 50e6 and window < 200:  # a window should last >= 50 ms
            window = min(200, max(window + 1, math.ceil(50e6 / max(med, 1.0))))
        elapsed = time.perf_counter() - t_start
        if n >= cfg["warmup_min_iters"] and len(medians) >= 3:
            last = medians[-3:]
            if (max(last) - min(last)) / max(np.median(last), 1.0) <= cfg["steady_tolerance"]:
                steady = True
                break
        if elapsed >= cfg["warmup_max_seconds"]:
            break
    return {"iters": n, "seconds": round(time.perf_counter() - t_start, 4), "steady": steady,
            "window_medians_ms": [round(m / 1e6, 4) for m in medians[-5:]]}


def measure(fn: Callable[[], Any], cfg: dict[str, Any]) -> np.ndarray:
    """Per-call latencies in ms: at least ``min_iters`` calls and ``min_seconds``; the GC is paused meanwhile."""
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
            if len(samples) >= cfg["min_iters"] and elapsed >= cfg["min_seconds"]:
                break
            if elapsed >= cfg["max_seconds"] and len(samples) >= 3:
                break
    finally:
        if gc_was:
            gc.enable()
    return np.asarray(samples, dtype=np.float64) / 1e6


def _log_binom_pmf(n: int, k: int) -> float:
    return math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1) - n * math.log(2.0)


def median_ci_ranks(n: int, confidence: float = 0.95) -> tuple[int, int]:
    """0-based order-statistic indices (lo, hi) with P(x_(lo) <= median <= x_(hi)) >= confidence (exact ranks)."""
    if n <= 0:
        raise ValueError("no samples")
    alpha = 1.0 - confidence
    cdf = 0.0
    j = 0
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
    """The latency fields of a report row (ms): min, p50, p90, p99, max, mean, std, n, p50's CI, 21 quantiles."""
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


def run_latency(fn: Callable[[], Any], cfg: dict[str, Any]) -> dict[str, Any]:
    """Warm up until steady, then measure; the summary plus the warm-up record (bench.latency.run_latency)."""
    wu = warmup(fn, cfg)
    samples = measure(fn, cfg)
    out = summarize(samples, cfg["confidence"])
    out["warmup"] = wu
    out["seconds"] = round(float(samples.sum()) / 1000.0, 3)
    return out
