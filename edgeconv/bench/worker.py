"""Subprocess entry that measures one artifact: ``python -m edgeconv.bench.worker JOB.json``.

Why a fresh process per target: runtimes keep thread pools, arenas and JIT caches alive for the life of the process,
and peak RSS can only be attributed to one runtime if that runtime is the only one the process ever loaded.  A
crash or hang in native code also becomes this target's failure instead of the run's.

The worker loads nothing it does not need (no torch, no reference model): it times cold start, warm-up, the latency
loop and the optional throughput mode, records its peak RSS, then runs the evaluation inputs and writes the raw
outputs for the parent to compare (drift and task metrics are computed in the parent, outside the measurement).

Job (JSON): ``artifact``, ``threads`` (null: backend default), ``latency`` (LatencyConfig fields), ``feeds`` (npz
written by :func:`save_feeds`), ``outputs`` (npz to write), ``result`` (JSON to write), ``skip_latency``,
``latency_only`` (run the first feed and time it; the evaluation outputs come from another job).
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np


def _rss_mb() -> float | None:
    try:
        with open(f"/proc/{os.getpid()}/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError):
        return None


def _peak_rss_mb() -> float:
    """Peak RSS of this process alone.  Linux: VmHWM of our own address space — not ``ru_maxrss``, which keeps the
    high-water mark of the pre-exec image, i.e. of the (torch-laden) parent that forked us."""
    try:
        with open(f"/proc/{os.getpid()}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB on Linux


def save_feeds(path: Path, feeds: list[dict[str, np.ndarray]]) -> None:
    """Write evaluation inputs as ``s<i>__<j>`` arrays plus the input names (names may hold any character)."""
    names = list(feeds[0]) if feeds else []
    arrays = {f"s{i}__{j}": f[n] for i, f in enumerate(feeds) for j, n in enumerate(names)}
    np.savez(path, __names__=np.array(json.dumps(names)), **arrays)


def load_feeds(path: Path, limit: int | None = None) -> list[dict[str, np.ndarray]]:
    """The inputs ``save_feeds`` wrote (the first ``limit`` of them: a latency-only job times one input, and
    reading all 200 detector inputs cost it ~0.5 s)."""
    with np.load(path, allow_pickle=False) as z:
        names = json.loads(str(z["__names__"]))
        n = sum(1 for k in z.files if k.endswith("__0"))
        n = n if limit is None else min(n, limit)
        return [{name: z[f"s{i}__{j}"] for j, name in enumerate(names)} for i in range(n)]


save_outputs = save_feeds
load_outputs = load_feeds


def run_job(job: dict[str, Any]) -> dict[str, Any]:
    """Measure one artifact as the job says; returns the result record (also written to ``job['result']``)."""
    from edgeconv.bench.latency import LatencyConfig, run_latency, run_throughput, summarize
    from edgeconv.core.artifact import Artifact
    from edgeconv.targets.base import Runner
    from edgeconv.targets.registry import get_target

    cfg = LatencyConfig.from_dict(job.get("latency", {}))
    feeds = load_feeds(Path(job["feeds"]), 1 if job.get("latency_only") else None)
    art = Artifact.load(job["artifact"])
    rss_before = _rss_mb()
    t0 = time.perf_counter()
    target = get_target(art.target)
    runner = target.runner(art, threads=job.get("threads") or None)
    t_load = time.perf_counter()
    first = runner.infer(feeds[0])
    t_first = time.perf_counter()
    res: dict[str, Any] = {
        "ok": True, "runner": type(runner).__name__, "proxy": bool(getattr(runner, "proxy", False)),
        "threads": job.get("threads") or None, "pid": os.getpid(),
        "cold_start_ms": {"load": (t_load - t0) * 1e3, "first_inference": (t_first - t_load) * 1e3,
                          "total": (t_first - t0) * 1e3},
        "rss_before_mb": rss_before,
    }
    # The kernels that ran are described by the worker that times them: a stand-in runtime's are not the device's,
    # and an accuracy-only pass (its row is timed by a latency worker later) would only compute it twice.
    if not res["proxy"] and not job.get("skip_latency"):
        try:
            res["compute"] = runner.compute(str(art.manifest.get("precision", "fp32")))
        except Exception as e:  # noqa: BLE001 - a description must never fail a measurement
            res["compute"] = {"error": f"{type(e).__name__}: {e}"[:200]}
    with runner:
        if not job.get("skip_latency") and not res["proxy"]:
            feed = feeds[0]
            res["latency_ms"] = run_latency(lambda: runner.infer(feed), cfg)
            if cfg.streams and cfg.streams > 1:
                native = type(runner).infer_async is not Runner.infer_async
                tp = run_throughput(lambda k: len(runner.infer_async([feed] * k, cfg.streams)), cfg)
                tp["native_async"] = native
                res["throughput"] = tp
        res["peak_rss_mb"] = _peak_rss_mb()
        res["rss_after_mb"] = _rss_mb()
        outs: list[dict[str, np.ndarray]] = [first]
        infer_ms = []
        for f in [] if job.get("latency_only") else feeds[1:]:
            ts = time.perf_counter_ns()
            outs.append(runner.infer(f))
            infer_ms.append((time.perf_counter_ns() - ts) / 1e6)
        if infer_ms:
            s = summarize(infer_ms)
            res["eval_inference_ms"] = {k: s[k] for k in ("p50", "mean", "n")}
    save_outputs(Path(job["outputs"]), outs)
    return res


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m edgeconv.bench.worker JOB.json", file=sys.stderr)
        return 2
    job = json.loads(Path(argv[0]).read_text())
    try:
        res = run_job(job)
        code = 0
    except BaseException as e:  # noqa: BLE001 - every failure must reach the parent as one line
        msg = " ".join(str(getattr(e, "message", e)).split())[:500]
        res = {"ok": False, "error": f"{type(e).__name__}: {msg}", "kind": type(e).__name__,
               "hint": getattr(e, "hint", None), "traceback": traceback.format_exc()}
        code = 1
    tmp = Path(job["result"]).with_suffix(".tmp")
    tmp.write_text(json.dumps(res, default=float))
    os.replace(tmp, job["result"])
    return code


if __name__ == "__main__":
    sys.exit(main())
