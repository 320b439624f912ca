"""Latency of the same artifact measured by the host harness and by the device worker over SSH on 127.0.0.1.

    python benchmarks/device_ssh_vs_host.py ARTIFACT_DIR [ARTIFACT_DIR ...] [--rounds 3]

The claim under test: a device reached over SSH measures what the host harness measures (same method, same
runtime, same machine), within the benchmark's noise.  Rounds alternate host / local device / SSH device so a load
change on this shared machine hits all three alike; each round is the full steady-state method (warm-up until
steady, >= 50 iterations and >= 2 s).  Noise is judged two ways: each round's p50 95% CI, and the spread of p50
between rounds of the same harness.  Results go to ``benchmarks/results/device_ssh_vs_host_<date>.json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import tempfile
from pathlib import Path

from edgeconv.bench.evaluate import run_worker
from edgeconv.bench.latency import LatencyConfig
from edgeconv.bench.worker import save_feeds
from edgeconv.core.artifact import Artifact
from edgeconv.core.env import environment
from edgeconv.core.tensors import random_feeds
from edgeconv.devices import run_device_worker
from edgeconv.devices.config import device_from_dict
from edgeconv.devices.loopback import loopback_device, loopback_sshd


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("artifacts", nargs="+")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    cfg = LatencyConfig()
    load_before = os.getloadavg()
    results = []
    with tempfile.TemporaryDirectory(prefix="ec-bench-ssh-") as tmpd, loopback_sshd(Path(tmpd) / "sshd") as sshd:
        tmp = Path(tmpd)
        ssh = loopback_device(sshd, tmp / "ssh-device")
        local = device_from_dict({"name": "local", "transport": "local", "workdir": str(tmp / "local-device")})
        for a in args.artifacts:
            art = Artifact.load(a)
            feeds = tmp / "feeds.npz"
            save_feeds(feeds, [random_feeds(art.inputs, seed=0)])
            runs: dict[str, list[dict]] = {"host": [], "local-device": [], "ssh-device": []}
            for r in range(args.rounds):
                for where in runs:
                    work = tmp / f"w-{where}-{r}"
                    if where == "host":
                        res, _ = run_worker(art, feeds, work, threads=args.threads, latency=cfg, timeout=900)
                    else:
                        res, _ = run_device_worker(art, feeds, work, device=ssh if where == "ssh-device" else local,
                                                   threads=args.threads, latency=cfg, timeout=900)
                    if not res.get("ok"):
                        raise SystemExit(f"{where}: {res.get('error')}")
                    lat = res["latency_ms"]
                    runs[where].append({k: lat[k] for k in ("p50", "p50_ci", "p90", "p99", "mean", "n")}
                                       | {"cold_start_ms": res["cold_start_ms"]["total"],
                                          "peak_rss_mb": res.get("peak_rss_mb")})
                    print(f"{art.manifest['profile_name']} {art.precision} round {r} {where}: p50 {lat['p50']:.3f} ms "
                          f"CI {lat['p50_ci'][0]:.3f}-{lat['p50_ci'][1]:.3f} n={lat['n']}", flush=True)
            summary = {}
            for where, rs in runs.items():
                p50s = [x["p50"] for x in rs]
                summary[where] = {"median_p50": statistics.median(p50s), "min_p50": min(p50s), "max_p50": max(p50s),
                                  "round_spread_pct": 100 * (max(p50s) - min(p50s)) / statistics.median(p50s)}
            h = summary["host"]["median_p50"]
            for where in ("local-device", "ssh-device"):
                summary[where]["vs_host_pct"] = 100 * (summary[where]["median_p50"] - h) / h
            results.append({"artifact": a, "profile": art.manifest["profile_name"], "precision": art.precision,
                             "target": art.target, "runs": runs, "summary": summary})
    out = {"benchmark": "device_ssh_vs_host", "date": dt.date.today().isoformat(), "machine": environment(),
           "latency_config": cfg.to_dict(), "threads": args.threads,
           "load_average": {"before": load_before, "after": os.getloadavg()}, "rounds": args.rounds, "results": results}
    path = Path(args.out or Path(__file__).parent / "results" / f"device_ssh_vs_host_{out['date']}.json")
    path.write_text(json.dumps(out, indent=2, default=str))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
