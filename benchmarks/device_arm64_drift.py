"""Drift and task metric of the bundled YOLO's ARM artifacts on the emulated arm64 board vs on this x86 host.

    python benchmarks/device_arm64_drift.py ARTIFACT_DIR [ARTIFACT_DIR ...] [--device arm64-emulated] [--limit 50]

Each artifact is benchmarked twice with the host harness's own scoring (``edgeconv.bench.evaluate.bench_artifact``:
drift vs the torch reference, mAP50-95 on the bundled eval split, the profile's tolerances): once with the host
worker, once with the device worker on the board (``run_worker`` swapped for ``run_device_worker``, which is the
one-line integration the pipeline needs).  Latency on the board is emulated and is not reported as a speed.
Results go to ``benchmarks/results/device_arm64_drift_<date>.json`` with the machine named.
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import json
import tempfile
import time
from pathlib import Path

from edgeconv.bench import evaluate
from edgeconv.bench.evaluate import BenchOptions, bench_artifact, load_eval_data, reference_outputs
from edgeconv.bench.latency import LatencyConfig
from edgeconv.bench.plugins import load_callable
from edgeconv.calibration.preprocess import Preprocess
from edgeconv.core.artifact import Artifact
from edgeconv.core.env import environment
from edgeconv.devices import load_device, run_device_worker

SHORT = LatencyConfig(min_iters=3, min_seconds=0.1, warmup_min_iters=1, warmup_max_seconds=1.0)


def _row_summary(row: dict) -> dict:
    d, t = row.get("drift") or {}, row.get("task") or {}
    return {"status": row["status"], "error": row.get("error"), "max_abs": d.get("max_abs"),
            "cosine": d.get("cosine"), "drift_pass": d.get("pass"), "failures": d.get("failures"),
            "task_metric": t.get("metric"), "task_value": t.get("value"), "task_delta": t.get("delta"),
            "task_pass": t.get("pass"), "checks": row.get("checks"), "runner": row.get("runner")}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("artifacts", nargs="+")
    ap.add_argument("--device", default="arm64-emulated")
    ap.add_argument("--limit", type=int, default=50)
    ap.add_argument("--threads", type=int, default=1,
                    help="worker threads (1: qemu-user emulates each thread on the host; idle OpenMP threads spin)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    device = load_device(args.device)
    results = []
    host_worker = evaluate.run_worker
    for a in args.artifacts:
        art = Artifact.load(a)
        info = art.manifest.get("task") or {}
        pp = Preprocess.from_dict(art.manifest["preprocess"])
        data = load_eval_data(f"zoo:{info['task']}", input_spec=art.inputs[0], preprocess=pp, task=info["task"],
                              limit=args.limit)
        refs, desc = reference_outputs(art.reference_onnx, data.feeds, kind="onnx")
        post = load_callable(info["postprocess"])
        opts = BenchOptions(latency=SHORT, threads=args.threads, limit=args.limit, timeout=3600)
        rows = {}
        for where in ("host", device.name):
            evaluate.run_worker = host_worker if where == "host" else functools.partial(run_device_worker,
                                                                                         device=device)
            t0 = time.perf_counter()
            with tempfile.TemporaryDirectory() as tmp:
                row = bench_artifact(art, data, refs, options=opts, work=Path(tmp), post=post, reference_desc=desc)
            rows[where] = {**_row_summary(row), "seconds": round(time.perf_counter() - t0, 1)}
            print(f"{art.manifest['profile_name']} {art.precision} on {where}: {json.dumps(rows[where])}", flush=True)
        evaluate.run_worker = host_worker
        results.append({"artifact": a, "profile": art.manifest["profile_name"], "precision": art.precision,
                        "runtime_options": (art.manifest.get("conversion") or {}).get("runtime"),
                        "tolerance": art.manifest["profile"].get("tolerance", {}).get(art.precision),
                        "samples": len(data), "reference": desc, "rows": rows})
    from edgeconv.devices.board import board_for

    board = board_for(device.board or "arm64").meta if device.transport == "qemu" else None
    out = {"benchmark": "device_arm64_drift", "date": dt.date.today().isoformat(), "machine": environment(),
           "device": device.to_dict(), "board": board and {k: board.get(k) for k in ("suite", "qemu", "wheels")},
           "threads": args.threads,
           "note": "latency on the emulated board is not comparable with hardware and is not reported",
           "results": results}
    path = Path(args.out or Path(__file__).parent / "results" / f"device_arm64_drift_{out['date']}.json")
    path.write_text(json.dumps(out, indent=2, default=str))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
