"""edgeconv's ExecuTorch artifact vs ExecuTorch's documented XNNPACK export, side by side: FP32 latency and drift.

Native = the ExecuTorch docs' recipe on the bundled module as it is: ``to_edge_transform_and_lower(
torch.export.export(model, sample), partitioner=[XnnpackPartitioner()]).to_executorch()``.  edgeconv's artifact
comes from ``convert_reference`` (verified).  Both ``.pte`` run through ``executorch.runtime`` in one process with the
same XNNPACK thread pool, interleaved, median of N.  Writes ``benchmarks/results/native_executorch_<date>.json``.

    EDGECONV_CACHE=/tmp/me-cache python benchmarks/native_executorch.py --threads 2 --runs 100
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
    import torch
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower
    from executorch.runtime import Runtime

    from edgeconv.core.env import environment
    from edgeconv.core.lazy import version
    from edgeconv.pipeline import convert_reference, prepare
    from edgeconv.targets.executorch.convert import delegation
    from edgeconv.targets.executorch.runner import ExecuTorchRunner, set_threads
    from edgeconv.targets.onnxruntime.runner import OrtRunner

    prep = prepare(args.model)
    ref = prep.reference
    work = Path(tempfile.mkdtemp(prefix="executorch-bench-"))
    art = convert_reference(prep, "executorch", out=work / "edgeconv", precision="fp32")
    x = np.random.default_rng(0).random(tuple(ref.inputs[0].static_shape), dtype=np.float32)
    name, out_names = ref.inputs[0].name, [o.name for o in ref.outputs]
    with OrtRunner(ref.onnx_path) as r:
        want = r.infer({name: x})
    sample = (torch.from_numpy(x),)
    edge = to_edge_transform_and_lower(torch.export.export(ref.module.eval(), sample),
                                       partitioner=[XnnpackPartitioner()])
    native_pte = bytes(edge.to_executorch().buffer)
    set_threads(args.threads)
    ours = ExecuTorchRunner.from_artifact(art, threads=args.threads)
    method = Runtime.get().load_program(native_pte).load_method("forward")
    xt = torch.from_numpy(x.copy())

    def native_once() -> dict[str, np.ndarray]:
        return {n: o.numpy().copy() for n, o in zip(out_names, method.execute([xt]), strict=True)}

    fns = {"edgeconv": lambda: ours.infer({name: x}), "executorch_docs_xnnpack": native_once}
    cmp = compare(fns, want, args.runs)
    record = {"date": today(), "machine": environment(), "model": args.model,
              "threads": args.threads, "runs": args.runs, "executorch": version("executorch"),
              "torch": version("torch"),
              "edgeconv": {"delegation": art.manifest["conversion"]["delegation"],
                           "bytes": art.file("model").stat().st_size,
                           "verification": art.manifest["verification"]["drift"]},
              "native": {"route": "torch.export → to_edge_transform_and_lower(XnnpackPartitioner) (docs recipe)",
                         "delegation": delegation(edge), "bytes": len(native_pte)},
              **cmp}
    write("native_executorch", record)


if __name__ == "__main__":
    main()
