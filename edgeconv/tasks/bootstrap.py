"""Paired bootstrap confidence interval of a task delta (artifact minus reference on the same images).

Why paired: the artifact and the reference are scored on the same images, so most of the image-to-image variance
cancels; resampling images and recomputing both metrics on each resample gives the interval of the *difference*,
which is what a budget of "0.5 points" is about. A 100-image evaluation cannot tell a 0.3-point drop from zero,
and the interval says so.

Fixed seed and resample count, so a report is reproducible. Percentile interval (2.5th and 97.5th of the resampled
deltas): the metrics are bounded and often skewed near 100 %, where a normal interval would run past the bound.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

RESAMPLES = 200
SEED = 0


def bootstrap_ci(n: int, delta: Callable[[np.ndarray], float], *, resamples: int = RESAMPLES, seed: int = SEED,
                 level: float = 0.95) -> list[float] | None:
    """``[lo, hi]`` of ``delta(indices)`` over ``resamples`` resamples (with replacement) of ``n`` items; None
    with fewer than 2 items. ``delta`` gets an index array (repeats included) and returns artifact - reference."""
    if n < 2 or resamples < 1:
        return None
    return interval([delta(idx) for idx in resample_indices(n, resamples, seed)], level)


def resample_indices(n: int, resamples: int = RESAMPLES, seed: int = SEED) -> list[np.ndarray]:
    """The resamples every interval uses: ``resamples`` draws of ``n`` indices with replacement, seeded."""
    rng = np.random.default_rng(seed)
    return [rng.integers(0, n, n) for _ in range(resamples)]


def interval(values: list[float] | np.ndarray, level: float = 0.95) -> list[float] | None:
    """The percentile interval of resampled deltas (non-finite values, e.g. an empty class set, are dropped)."""
    vals = np.asarray(values, np.float64)
    vals = vals[np.isfinite(vals)]
    if not len(vals):
        return None
    a = (1.0 - level) / 2.0
    lo, hi = np.quantile(vals, [a, 1.0 - a])
    return [float(lo), float(hi)]


def paired_ci(got_stats: np.ndarray, ref_stats: np.ndarray | None, summarize: Callable[[np.ndarray], float], *,
              resamples: int = RESAMPLES, seed: int = SEED) -> list[float] | None:
    """The interval for additive per-sample statistics: ``summarize(rows)`` is the metric of a set of samples.
    ``ref_stats`` None: the reference scores 100 on every resample (label-free agreement)."""
    got = np.asarray(got_stats)
    ref = None if ref_stats is None else np.asarray(ref_stats)

    def delta(idx: np.ndarray) -> float:
        return summarize(got[idx]) - (100.0 if ref is None else summarize(ref[idx]))

    return bootstrap_ci(len(got), delta, resamples=resamples, seed=seed)
