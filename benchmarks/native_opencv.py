"""edgeconv's OpenCV DNN artifact vs OpenCV reading the same reference ONNX unchanged with its defaults.

Native default = ``cv2.dnn.readNetFromONNX(reference.onnx)`` with no backend/target/engine set (what an app writes).
edgeconv's artifact comes from ``convert_reference`` (verified) and runs through its runner with the profile's
engine/backend/target.  Same process, same ``cv2.setNumThreads``, interleaved, median of N.
Writes ``benchmarks/results/native_opencv_<date>.json``.

    EDGECONV_CACHE=/tmp/me-cache python benchmarks/native_opencv.py --threads 2 --runs 100
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).parent / "results"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="zoo:yolo")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=100)
    args = ap.parse_args()
    import cv2

    from edgeconv.core.env import environment
    from edgeconv.pipeline import convert_reference, prepare
    from edgeconv.targets.onnxruntime.runner import OrtRunner
    from edgeconv.targets.opencv.runner import OpenCvRunner

    prep = prepare(args.model)
    ref = prep.reference
    work = Path(tempfile.mkdtemp(prefix="opencv-bench-"))
    art = convert_reference(prep, "opencv", out=work / "edgeconv", precision="fp32")
    x = np.random.default_rng(0).random(tuple(ref.inputs[0].static_shape), dtype=np.float32)
    name, outs_names = ref.inputs[0].name, [o.name for o in ref.outputs]
    with OrtRunner(ref.onnx_path) as r:
        want = r.infer({name: x})
    ours = OpenCvRunner.from_artifact(art, threads=args.threads)
    cv2.setNumThreads(args.threads)
    net = cv2.dnn.readNetFromONNX(str(ref.onnx_path))

    def native_once() -> dict[str, np.ndarray]:
        net.setInput(x, name)
        return dict(zip(outs_names, net.forward(outs_names), strict=True))

    fns = {"edgeconv": lambda: ours.infer({name: x}), "opencv_default": native_once}
    outs = {k: f() for k, f in fns.items()}
    for _ in range(10):
        for f in fns.values():
            f()
    times: dict[str, list[float]] = {k: [] for k in fns}
    order = list(fns)
    for i in range(args.runs):
        for k in order if i % 2 == 0 else order[::-1]:  # ABBA: neither side always runs first
            t0 = time.perf_counter()
            fns[k]()
            times[k].append((time.perf_counter() - t0) * 1000)
    pairs = sorted(a / b for a, b in zip(times["edgeconv"], times[order[1]], strict=True))
    res = {k: {"median_ms": statistics.median(v), "p90_ms": float(np.percentile(v, 90)), "runs": len(v),
               "max_abs_vs_reference": max(float(np.abs(outs[k][o] - want[o]).max()) for o in outs_names)}
           for k, v in times.items()}
    ratio = res["edgeconv"]["median_ms"] / res["opencv_default"]["median_ms"]
    paired = {"median": statistics.median(pairs), "p25": pairs[len(pairs) // 4], "p75": pairs[3 * len(pairs) // 4]}
    conv = art.manifest["conversion"]
    record = {"date": dt.date.today().isoformat(), "machine": environment(), "model": args.model,
              "threads": args.threads, "runs": args.runs, "opencv": cv2.__version__,
              "edgeconv": {"runtime": conv["runtime"], "rewrites": conv["rewrites"],
                           "verification": art.manifest["verification"]["drift"]},
              "native": {"route": "cv2.dnn.readNetFromONNX(reference.onnx), defaults"},
              "latency": res, "ratio_edgeconv_over_native": ratio, "paired_ratio": paired, "target_ratio": 1.0,
              "pass": ratio <= 1.0,
              "note": "interleaved in one process; a shared 2-core VM moves single medians by ±10 %"}
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"native_opencv_{record['date']}.json"
    out.write_text(json.dumps(record, indent=2, default=str))
    print(json.dumps({k: record[k] for k in ("latency", "ratio_edgeconv_over_native", "paired_ratio", "pass")},
                     indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
