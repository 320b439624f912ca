"""edgeconv's MNN artifact vs MNN's native default route on the bundled detector: FP32 latency and drift, side by side.

Native default = ``MNNConvert -f ONNX --modelFile reference.onnx --MNNModel x.mnn --bizCode biz`` (the CLI with no
other flag, called through the wheel's native ``_tools`` extension: the wheel's ``mnnconvert`` wrapper pip-installs a
logging SDK at import) run with MNN's session defaults (CPU, ``precision`` unset = normal), at the same thread count.
edgeconv's artifact comes from ``convert_reference`` (verified).  Both sessions live in one process and run
interleaved, median of N.  Writes ``benchmarks/results/native_mnn_<date>.json``.

    EDGECONV_CACHE=/tmp/me-cache python benchmarks/native_mnn.py --threads 2 --runs 100
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
    import MNN

    from edgeconv.core.env import environment
    from edgeconv.pipeline import convert_reference, prepare
    from edgeconv.targets.mnn.runner import MnnRunner
    from edgeconv.targets.mnn.tools import mnnconvert
    from edgeconv.targets.onnxruntime.runner import OrtRunner

    prep = prepare(args.model)
    ref = prep.reference
    work = Path(tempfile.mkdtemp(prefix="mnn-bench-"))
    art = convert_reference(prep, "mnn", out=work / "edgeconv", precision="fp32")
    native = work / "native.mnn"
    run = mnnconvert(ref.onnx_path, native, extra=[])
    if not run.ok:
        raise SystemExit(f"native MNNConvert failed: {run.tail()}")
    x = np.random.default_rng(0).random(tuple(ref.inputs[0].static_shape), dtype=np.float32)
    name = ref.inputs[0].name
    with OrtRunner(ref.onnx_path) as r:
        want = r.infer({name: x})

    ours = MnnRunner.from_artifact(art, threads=args.threads)
    interp = MNN.Interpreter(str(native))
    sess = interp.createSession({"numThread": args.threads})
    host = MNN.Tensor(x.shape, MNN.Halide_Type_Float, x, MNN.Tensor_DimensionType_Caffe)

    def native_once() -> dict[str, np.ndarray]:
        interp.getSessionInput(sess, name).copyFrom(host)
        interp.runSession(sess)
        out = {}
        for o in ref.outputs:
            t = interp.getSessionOutput(sess, o.name)
            h = MNN.Tensor(t.getShape(), MNN.Halide_Type_Float, np.zeros(t.getShape(), np.float32),
                           MNN.Tensor_DimensionType_Caffe)
            t.copyToHostTensor(h)
            out[o.name] = np.array(h.getNumpyData(), copy=True)
        return out

    fns = {"edgeconv": lambda: ours.infer({name: x}), "mnnconvert_default": native_once}
    cmp = compare(fns, want, args.runs)
    ours.close()
    record = {"date": today(), "machine": environment(), "model": args.model,
              "threads": args.threads, "runs": args.runs, "MNN": MNN.version(),
              "edgeconv": {"precision_mode": ours.config["precision"], "bytes": art.file("model").stat().st_size,
                           "verification": art.manifest["verification"]["drift"]},
              "native": {"route": "MNNConvert -f ONNX (no other flag), session defaults",
                         "bytes": native.stat().st_size},
              **cmp}
    write("native_mnn", record)


if __name__ == "__main__":
    main()
