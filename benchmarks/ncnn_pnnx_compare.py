"""edgeconv's ncnn route vs pnnx's default route on the bundled YOLO-style detector: FP32 latency and drift.

pnnx's default route is TorchScript → pnnx with its defaults.  On the detector as written it leaves the Focus stem's
step-2 slices as ``Tensor.slice`` layers ncnn cannot run, so (as a user would) the baseline patches Focus in PyTorch
to ``pixel_unshuffle`` with the conv weights permuted; that is recorded.  Both nets run in the same process with the
same ncnn options and thread count, interleaved, median of N.  Writes ``benchmarks/results/ncnn_pnnx_<date>.json``.

    EDGECONV_CACHE=/tmp/me-cache python benchmarks/ncnn_pnnx_compare.py --threads 2 --runs 50
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).parent / "results"


def patched_focus(model):  # noqa: ANN001, ANN201 - torch types imported lazily
    """The manual fix pnnx users apply: Focus → pixel_unshuffle + permuted first-conv weights (exact)."""
    import torch
    from torch import nn

    m = copy.deepcopy(model).eval()
    offsets = [(0, 0), (1, 0), (0, 1), (1, 1)]  # Focus concat order (dy, dx)
    conv = m.stem.conv.conv
    c = conv.in_channels // 4
    old_of_new = [offsets.index((p % 4 // 2, p % 2)) * c + p // 4 for p in range(4 * c)]
    with torch.no_grad():
        conv.weight.copy_(conv.weight[:, old_of_new].clone())
    inner = m.stem.conv

    class PixelUnshuffleStem(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = inner

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.conv(torch.nn.functional.pixel_unshuffle(x, 2))

    m.stem = PixelUnshuffleStem()
    return m


def bench(net_files: dict[str, tuple[Path, Path]], x: np.ndarray, threads: int, runs: int) -> dict[str, dict]:
    import ncnn

    from edgeconv.targets.ncnn.runner import make_option

    nets = {}
    for name, (param, bin_) in net_files.items():
        net = ncnn.Net()
        net.opt = make_option(ncnn, {"light_mode": True}, threads)
        net.load_param(str(param))
        net.load_model(str(bin_))
        nets[name] = net
    times: dict[str, list[float]] = {k: [] for k in nets}
    outs: dict[str, list[np.ndarray]] = {}

    def once(net) -> tuple[float, list[np.ndarray]]:  # noqa: ANN001
        t0 = time.perf_counter()
        ex = net.create_extractor()
        ex.input("in0", ncnn.Mat(x[0]))
        res = []
        for b in ("out0", "out1", "out2"):
            _, m = ex.extract(b)
            res.append(np.array(m, copy=True))
            del m
        del ex
        return time.perf_counter() - t0, res

    for name, net in nets.items():  # warm-up
        for _ in range(5):
            _, outs[name] = once(net)
    for _ in range(runs):
        for name, net in nets.items():
            t, _ = once(net)
            times[name].append(t * 1000)
    for net in nets.values():
        net.clear()
    return {k: {"median_ms": statistics.median(v), "p90_ms": float(np.percentile(v, 90)), "runs": len(v),
                "outputs": outs[k]} for k, v in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=50)
    args = ap.parse_args()
    import torch

    from edgeconv import zoo
    from edgeconv.core.env import environment
    from edgeconv.pipeline import convert_reference, prepare
    from edgeconv.targets.base import OrtRunner
    from edgeconv.targets.ncnn.pnnx_log import run_pnnx

    spec = zoo.BUNDLED["yolo"]
    trained = Path(spec.weights).is_file()
    prep = prepare("zoo:yolo") if trained else prepare("edgeconv/zoo/yolo.py:build", inputs=["images:1x3x256x256"],
                                                      output_names=list(spec.output_names))
    work = Path(tempfile.mkdtemp(prefix="ncnn-bench-"))
    art = convert_reference(prep, "ncnn", out=work / "edgeconv", precision="fp32")
    module = prep.reference.module.eval()
    x = np.random.default_rng(0).random((1, 3, 256, 256), dtype=np.float32)
    record: dict = {"date": dt.date.today().isoformat(), "machine": environment(), "threads": args.threads,
                    "runs": args.runs, "model": "zoo:yolo" + ("" if trained else " (untrained: random init)"),
                    "edgeconv": {"rewrites": art.manifest["conversion"]["rewrites"],
                                 "verification": art.manifest["verification"]["drift"]}}
    pt = work / "yolo.pt"
    torch.jit.trace(module, torch.from_numpy(x)).save(str(pt))
    raw = run_pnnx(pt, work / "pnnx-raw", [([1, 3, 256, 256], "float32")], fp16=True, timeout=300, route="torch")
    record["pnnx_default_unpatched"] = {"runnable": raw.ok, "unsupported": raw.unsupported}
    pt2 = work / "yolo_patched.pt"
    torch.jit.trace(patched_focus(module), torch.from_numpy(x)).save(str(pt2))
    base = run_pnnx(pt2, work / "pnnx-patched", [([1, 3, 256, 256], "float32")], fp16=True, timeout=300,
                    route="torch")
    if not base.ok:
        raise SystemExit(f"pnnx baseline failed: {base.unsupported} {base.messages[-3:]}")
    with OrtRunner(prep.reference.onnx_path) as r:
        ref = r.infer({prep.reference.inputs[0].name: x})
    res = bench({"edgeconv": (art.file("model"), art.file("weights")), "pnnx_default": (base.param, base.bin)},
                x, args.threads, args.runs)
    for r in res.values():
        outs = r.pop("outputs")
        r["max_abs_vs_reference"] = max(float(np.abs(o.reshape(ref[n].shape) - ref[n]).max())
                                        for o, n in zip(outs, spec.output_names, strict=True))
    record["latency"] = res
    record["pnnx_default"] = {"route": "torch → pnnx (fp16=1 default weights), Focus patched to pixel_unshuffle",
                              "layers": sum(1 for _ in base.param.read_text().splitlines()[2:])}
    record["edgeconv"]["layers"] = sum(1 for _ in art.file("model").read_text().splitlines()[2:])
    ratio = res["edgeconv"]["median_ms"] / res["pnnx_default"]["median_ms"]
    record["ratio_edgeconv_over_pnnx"] = ratio
    record["target_ratio"] = 1.05
    record["pass"] = ratio <= 1.05
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"ncnn_pnnx_{record['date']}.json"
    out.write_text(json.dumps(record, indent=2, default=str))
    print(json.dumps({k: record[k] for k in ("latency", "ratio_edgeconv_over_pnnx", "pass")}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
