"""edgeconv's OpenCV DNN artifact vs OpenCV reading the same reference ONNX unchanged with its defaults.

Native default = ``cv2.dnn.readNetFromONNX(reference.onnx)`` with no backend/target/engine set (what an app writes).
edgeconv's artifact comes from ``convert_reference`` (verified) and runs through its runner with the profile's
engine/backend/target.  Same process, same ``cv2.setNumThreads``, interleaved, median of N.
Writes ``benchmarks/results/native_opencv_<date>.json``.

    EDGECONV_CACHE=/tmp/me-cache python benchmarks/native_opencv.py --threads 2 --runs 100
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
from side_by_side import compare, today, write


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
    cmp = compare(fns, want, args.runs)
    conv = art.manifest["conversion"]
    record = {"date": today(), "machine": environment(), "model": args.model,
              "threads": args.threads, "runs": args.runs, "opencv": cv2.__version__,
              "edgeconv": {"runtime": conv["runtime"], "rewrites": conv["rewrites"],
                           "verification": art.manifest["verification"]["drift"]},
              "native": {"route": "cv2.dnn.readNetFromONNX(reference.onnx), defaults"},
              **cmp}
    write("native_opencv", record)


if __name__ == "__main__":
    main()
