"""Calibration speed: minmax statistics of the bundled YOLO detector on 512 calibration images (target <= 60 s).

Why a benchmark and not a test: the number depends on the machine (recorded via ``environment()``), and a full
512-image pass is too slow for the unit suite.  Uses the trained weights when present, else the untrained network
(same graph, same cost).  Calibration images: ``--calib DIR`` (default: 512 generated shapes images in a temp
folder, disjoint from the eval split by seed).

    python benchmarks/calibration_speed.py [--calib DIR] [--size 512] [--methods minmax,entropy,percentile]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def shapes_folder(n: int) -> Path:
    """n detection images from the calibration seed (the committed folder holds 256; the issue asks for 512)."""
    from edgeconv.zoo import data

    root = Path(tempfile.gettempdir()) / f"edgeconv-calib-shapes-{n}"
    if not (root / "manifest.json").is_file():
        data.write_yolo_split(root, data.CALIB_SEED, 0, n, data.DET_SIZE, quality=85)
    return root


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calib", type=Path)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--methods", default="minmax")
    ap.add_argument("--out", type=Path, default=RESULTS / "calibration_speed.json")
    args = ap.parse_args()
    os.environ.setdefault("EDGECONV_CACHE", str(Path(tempfile.gettempdir()) / "edgeconv-bench-cache"))

    from edgeconv.calibration.stats import compute_stats
    from edgeconv.core.console import setup_logging
    from edgeconv.core.env import environment
    from edgeconv.pipeline import make_calibration, prepare
    from edgeconv.zoo import BUNDLED

    setup_logging()
    b = BUNDLED["yolo"]
    trained = Path(b.weights).is_file()
    prep = prepare("zoo:yolo") if trained else prepare(
        b.factory, inputs=[f"{b.input_name}:{'x'.join(map(str, b.input_shape))}"], output_names=list(b.output_names))
    if prep.preprocess is None:
        from edgeconv.calibration.preprocess import Preprocess

        prep.preprocess = Preprocess.from_dict(b.preprocess)
    calib_dir = args.calib or shapes_folder(args.size)
    runs = []
    for method in args.methods.split(","):
        cal = make_calibration(prep, calib_dir, size=args.size, seed=0)
        load0, t0, c0 = os.getloadavg()[0], time.perf_counter(), time.process_time()
        st = compute_stats(prep.reference.onnx_path, prep.reference.sha256, cal, method, use_cache=False)
        dt, cpu = time.perf_counter() - t0, time.process_time() - c0
        runs.append({"method": method, "images": len(cal) - len(cal.skipped), "tensors": len(st.ranges),
                     "seconds": round(dt, 2), "per_image_ms": round(1000 * dt / max(len(cal), 1), 1),
                     # CPU seconds of this process (all its threads): on a machine shared with other jobs, wall
                     # time overstates the cost; cpu_seconds / 2 estimates the wall time on 2 idle cores.
                     "cpu_seconds": round(cpu, 1), "load_average_before": round(load0, 2),
                     # upper bound for 2 idle cores: all CPU time as if on one core (no parallelism assumed)
                     "estimated_idle_wall_s": round(cpu, 1),
                     "target_s": 60 if method == "minmax" else None,
                     "ok_wall": dt <= 60 if method == "minmax" else None,
                     "ok_estimated_idle": cpu <= 60 if method == "minmax" else None})
        print(json.dumps(runs[-1]))
    env = environment()
    record = {"benchmark": "calibration_speed", "model": "zoo:yolo (1x3x256x256)", "trained_weights": trained,
              "calib": str(calib_dir), "machine": f"{env['cpu']} ({env['cores']} cores)",
              "load_average": os.getloadavg(), "environment": env, "runs": runs,
              "date": time.strftime("%Y-%m-%d %H:%M:%S")}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
