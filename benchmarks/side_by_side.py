"""The measurement the native-route comparisons share: edgeconv's runner and a route's native default, timed
interleaved in one process (ABBA order, so neither side always runs first), scored against the reference, and the
result written with the machine named. ``native_{mnn,opencv,executorch}.py`` supply only the two callables."""

from __future__ import annotations

import datetime as dt
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

RESULTS = Path(__file__).parent / "results"
NOTE = "interleaved in one process; a shared 2-core VM moves single medians by ±10 %"


def _interleaved(fns: dict[str, Callable[[], dict[str, np.ndarray]]], runs: int, warmup: int,
                 times: dict[str, list[float]]) -> dict[str, dict[str, np.ndarray]]:
    """Warm each side up, then time ``runs`` ABBA-ordered calls per side into ``times``; the first outputs."""
    outs = {k: f() for k, f in fns.items()}
    for _ in range(warmup):
        for f in fns.values():
            f()
    order = list(fns)
    for i in range(runs):
        for k in order if i % 2 == 0 else order[::-1]:
            t0 = time.perf_counter()
            fns[k]()
            times[k].append((time.perf_counter() - t0) * 1000)
    return outs


def _summary(times: dict[str, list[float]], outs: dict[str, dict[str, np.ndarray]], want: dict[str, np.ndarray],
             native: str, **extra: Any) -> dict[str, Any]:
    pairs = sorted(a / b for a, b in zip(times["edgeconv"], times[native], strict=True))
    res = {k: {"median_ms": statistics.median(v), "p90_ms": float(np.percentile(v, 90)), "runs": len(v),
               "max_abs_vs_reference": max(float(np.abs(outs[k][o] - want[o]).max()) for o in want)}
           for k, v in times.items()}
    ratio = res["edgeconv"]["median_ms"] / res[native]["median_ms"]
    paired = {"median": statistics.median(pairs), "p25": pairs[len(pairs) // 4], "p75": pairs[3 * len(pairs) // 4]}
    return {"latency": res, "ratio_edgeconv_over_native": ratio, "paired_ratio": paired, "target_ratio": 1.0,
            "ratio_ci95": ratio_ci(times["edgeconv"], times[native]), "pass": ratio <= 1.0, "note": NOTE, **extra}


def compare(fns: dict[str, Callable[[], dict[str, np.ndarray]]], want: dict[str, np.ndarray], runs: int,
            warmup: int = 10) -> dict[str, Any]:
    """``fns``: {"edgeconv": ..., "<native name>": ...}. Returns latency per side (median, p90, max abs vs
    ``want``), the ratio of medians edgeconv / native and the distribution of per-pair ratios."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    outs = _interleaved(fns, runs, warmup, times)
    return _summary(times, outs, want, list(fns)[1])


def compare_instances(makers: dict[str, Callable[[], tuple[Callable[[], dict[str, np.ndarray]], Callable[[], None]]]],
                      want: dict[str, np.ndarray], runs: int, instances: int = 3,
                      warmup: int = 10, keep_outputs: bool = False) -> dict[str, Any]:
    """``compare`` over several runtime instances per side: ``makers[k]()`` returns (infer, close) of a fresh
    session. One session pair's ratio carries where its arenas and packed weights happen to lie (two ONNX Runtime
    sessions of op-for-op identical graphs measured 1.004-1.010 apart in one pair, 1.000 over fresh pairs), so each
    of ``instances`` pairs (made in alternating order) is timed for ``runs / instances`` ABBA rounds and the
    per-call times are pooled. ``keep_outputs``: the result also holds each side's first outputs under "outputs"
    (arrays, for the caller's own accuracy measures; not JSON)."""
    names = list(makers)
    times: dict[str, list[float]] = {k: [] for k in names}
    outs: dict[str, dict[str, np.ndarray]] = {}
    per = max(1, runs // instances)
    for i in range(instances):
        made = {k: makers[k]() for k in (names if i % 2 == 0 else names[::-1])}
        try:
            got = _interleaved({k: made[k][0] for k in names}, per, warmup, times)
            outs = outs or got
        finally:
            for _, close in made.values():
                close()
    res = _summary(times, outs, want, names[1], instances=instances)
    return {**res, "outputs": outs} if keep_outputs else res


def ratio_ci(a: list[float], b: list[float], n: int = 2000, seed: int = 0) -> list[float]:
    """95 % bootstrap interval of median(a) / median(b), resampling the interleaved pairs together (so load drift
    that hit both sides stays paired): an interval holding 1.00 means the two are not told apart by this run."""
    x, y = np.asarray(a), np.asarray(b)
    idx = np.random.default_rng(seed).integers(0, len(x), (n, len(x)))
    r = np.median(x[idx], axis=1) / np.median(y[idx], axis=1)
    return [round(float(np.percentile(r, 2.5)), 4), round(float(np.percentile(r, 97.5)), 4)]


def write(name: str, record: dict[str, Any]) -> Path:
    """Write ``results/<name>_<date>.json`` and print its headline."""
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"{name}_{record['date']}.json"
    out.write_text(json.dumps(record, indent=2, default=str))
    print(json.dumps({k: record[k] for k in ("latency", "ratio_edgeconv_over_native", "paired_ratio", "pass")},
                     indent=2))
    print(f"wrote {out}")
    return out


def write_report(name: str, record: dict[str, Any], md: str, when: dt.datetime) -> Path:
    """Write ``results/<name>_<date>.json`` and its rendered ``.md``, and print the markdown."""
    RESULTS.mkdir(exist_ok=True)
    stem = RESULTS / f"{name}_{when.date().isoformat()}"
    stem.with_suffix(".json").write_text(json.dumps(record, indent=1, default=str) + "\n")
    stem.with_suffix(".md").write_text(md)
    print(md)
    return stem.with_suffix(".json")


def today() -> str:
    return dt.date.today().isoformat()
