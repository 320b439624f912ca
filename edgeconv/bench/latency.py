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

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from edgeconv.devices import latency_core as core


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


# The measuring itself is the device worker's own self-contained module (it runs on boards with only numpy), so the
# host and every device time artifacts with one implementation.


def warmup(fn: Callable[[], Any], cfg: LatencyConfig) -> dict[str, Any]:
    """Call ``fn`` until the medians of the last three windows agree within ``steady_tolerance`` (or time runs out)."""
    return core.warmup(fn, core.config(cfg.to_dict()))


def measure(fn: Callable[[], Any], cfg: LatencyConfig) -> np.ndarray:
    """Per-call latencies in ms: at least ``min_iters`` calls and ``min_seconds`` (capped by ``max_seconds``)."""
    return core.measure(fn, core.config(cfg.to_dict()))


median_ci_ranks = core.median_ci_ranks
summarize = core.summarize


def run_latency(fn: Callable[[], Any], cfg: LatencyConfig) -> dict[str, Any]:
    """Warm-up record plus the latency summary of ``fn``."""
    return core.run_latency(fn, core.config(cfg.to_dict()))


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
