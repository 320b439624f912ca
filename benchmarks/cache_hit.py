"""Cache hit vs cold conversion: a repeated ``edgeconv convert`` decided from file hashes alone (goal: <= 2 s wall
and <= 5 % of the cold time), measured as whole CLI processes in a fresh cache, the machine named in the result.

    python benchmarks/cache_hit.py [--model zoo:yolo] [--target onnxruntime --target openvino] [--repeat 3]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def _run(args: list[str], env: dict[str, str]) -> tuple[float, float]:
    """(wall s, CPU s of the child) of one CLI process."""
    t0 = time.perf_counter()
    r0 = os.times()
    subprocess.run([sys.executable, "-m", "edgeconv.cli", "-q", *args], env=env, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    r1 = os.times()
    return time.perf_counter() - t0, (r1.children_user - r0.children_user) + (r1.children_system - r0.children_system)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="zoo:yolo")
    ap.add_argument("--target", action="append", default=None)
    ap.add_argument("--precision", action="append", default=None)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    from edgeconv.core.env import environment

    targets = args.target or ["onnxruntime", "openvino"]
    precisions = args.precision or ["fp32", "int8"]
    work = Path(tempfile.mkdtemp(prefix="edgeconv-cache-bench-"))
    env = {**os.environ, "EDGECONV_CACHE": str(work / "cache")}
    cmd = ["convert", "--model", args.model, "--out", str(work / "out")]
    for t in targets:
        cmd += ["--target", t]
    for p in precisions:
        cmd += ["--precision", p]
    try:
        cold = _run(cmd, env)
        hits = [_run(cmd, env) for _ in range(args.repeat)]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    hit_wall = statistics.median(h[0] for h in hits)
    envd = environment()
    result = {"benchmark": "cache_hit", "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
              "machine": {"cpu": envd["cpu"], "cores": envd["cores"], "flags": envd["cpu_flags"]},
              "command": "edgeconv " + " ".join(cmd[:3]) + " ...", "targets": targets, "precisions": precisions,
              "cold_wall_s": round(cold[0], 2), "cold_cpu_s": round(cold[1], 2),
              "hit_wall_s": [round(h[0], 3) for h in hits], "hit_cpu_s": [round(h[1], 3) for h in hits],
              "hit_wall_median_s": round(hit_wall, 3), "hit_fraction_of_cold": round(hit_wall / cold[0], 4),
              "goals": {"hit_wall_s": 2.0, "hit_fraction_of_cold": 0.05},
              "met": hit_wall <= 2.0 and hit_wall / cold[0] <= 0.05}
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"cache_hit_{dt.date.today().isoformat()}.json"
    out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
