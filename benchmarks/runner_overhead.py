"""What edgeconv's runner costs over the runtime's bare API on the *same* artifact file, with the same settings.

The Ultralytics side by side (``peer_ultralytics.py``) compares two different files made by two tools, so a
1-3 % gap there mixes two things: the graph each tool wrote and what each runner does around the runtime call
(name mapping, owned input copies, output copies, batch handling). This script measures the second alone: for
each artifact folder, edgeconv's runner and a minimal loop over the runtime's own API (the code a user would write:
ONNX Runtime ``session.run``, OpenVINO ``request.infer``, ncnn ``Extractor``, LiteRT ``set_tensor/invoke``), both
on the artifact's files and runtime settings, timed ABBA-interleaved in one process (``side_by_side.compare``).

    python benchmarks/runner_overhead.py OUT/onnxruntime-fp32 OUT/openvino-fp32 OUT/ncnn-fp32 OUT/tflite-fp32

Writes ``benchmarks/results/runner_overhead_<date>.{json,md}`` naming the machine and its load.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

Fn = Callable[[], dict[str, np.ndarray]]


def bare(art: Any, runner: Any, feeds: dict[str, np.ndarray], threads: int) -> Fn:
    """The runtime's own API on the artifact's file, configured as ``runner`` is (so only the wrapping differs)."""
    target = art.manifest["target"]
    x = feeds[art.inputs[0].name]
    if target == "onnxruntime":
        s = runner.session
        names = [i.name for i in s.get_inputs()]
        outs = [o.name for o in s.get_outputs()]
        return lambda: dict(zip(outs, s.run(None, {names[0]: x}), strict=True))
    if target == "openvino":
        req = runner.compiled.create_infer_request()  # same compiled model, a request of its own
        ports = runner.output_ports
        return lambda: (lambda r: {n: r[i] for n, i in ports})(list(req.infer({0: x}).values()))
    if target == "ncnn":
        ncnn, net = runner.ncnn, runner.net
        ins = [(blob, n) for n, (blob, _) in runner.inputs.items()]
        outs = [(blob, n, shape) for n, (blob, shape) in runner.outputs.items()]
        sample = np.ascontiguousarray(x[0])

        def run_ncnn() -> dict[str, np.ndarray]:
            ex = net.create_extractor()
            ex.input(ins[0][0], ncnn.Mat(sample))
            return {n: np.array(ex.extract(blob)[1]).reshape(shape) for blob, n, shape in outs}
        return run_ncnn
    if target == "tflite":
        from edgeconv.targets.tflite.runner import open_interpreter

        # An interpreter of its own: LiteRT refuses invoke() on one a SignatureRunner (the runner's) references.
        it = open_interpreter(art.file("model"), threads=threads)
        sig = it.get_signature_runner(runner.signature)
        io = runner.inputs[0]
        index = sig.get_input_details()[io["tflite"]]["index"]
        xin = np.ascontiguousarray(x.transpose(0, 2, 3, 1)) if io["layout"] == "NHWC" else x
        sig_out = sig.get_output_details()
        outs = [(r["reference"], sig_out[r["tflite"]]["index"], r["layout"]) for r in runner.outputs]
        del sig

        def run_tfl() -> dict[str, np.ndarray]:
            it.set_tensor(index, xin)
            it.invoke()
            res = {}
            for n, i, layout in outs:
                y = it.get_tensor(i)
                res[n] = y.transpose(0, 3, 1, 2) if layout == "NHWC" else y
            return res
        return run_tfl
    raise SystemExit(f"no bare loop for target {target!r} (onnxruntime, openvino, ncnn, tflite)")


def measure(path: Path, threads: int, runs: int) -> dict[str, Any]:
    from side_by_side import compare

    from edgeconv.core.artifact import Artifact
    from edgeconv.targets.registry import get_target

    art = Artifact.load(path)
    runner = get_target(art.target).runner(art, threads=threads)
    spec = art.inputs[0]
    feeds = {spec.name: np.random.default_rng(0).random(spec.static_shape, dtype=np.float32)}
    want = runner.infer(feeds)
    res = compare({"edgeconv": lambda: runner.infer(feeds), "bare": bare(art, runner, feeds, threads)}, want, runs)
    runner.close()
    return {"artifact": str(path), "target": art.target, "precision": art.precision, **res}


def markdown(rec: dict[str, Any]) -> str:
    m = rec["machine"]
    lines = [f"# edgeconv runner vs the runtime's bare API, same file ({rec['threads']} thread)", "",
             f"{rec['date']} · {m['cpu']}, {m['cores']} cores, {m.get('isa_line')} · load before "
             f"{rec['load_before']}, after {rec['load_after']}", "",
             "| artifact | p50 ms edgeconv | p50 ms bare | ratio | paired ratio (p25–p75) | max abs |",
             "|---|---|---|---|---|---|"]
    for r in rec["rows"]:
        a, b, p = r["latency"]["edgeconv"], r["latency"]["bare"], r["paired_ratio"]
        lines.append(f"| {r['target']} {r['precision']} | {a['median_ms']:.3f} | {b['median_ms']:.3f} | "
                     f"{r['ratio_edgeconv_over_native']:.3f} | {p['median']:.3f} ({p['p25']:.3f}–{p['p75']:.3f}) | "
                     f"{b['max_abs_vs_reference']:.1e} |")
    lines += ["", f"{rec['runs']} interleaved (ABBA) runs per side after 10 warm-up runs; max abs: the bare loop's "
              "outputs against the runner's (0: the same numbers)."]
    return "\n".join(lines) + "\n"


def main() -> None:
    from edgeconv.core.env import environment

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("artifacts", nargs="+", type=Path)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--runs", type=int, default=200)
    args = ap.parse_args()
    now = dt.datetime.now(dt.UTC)
    rec: dict[str, Any] = {"benchmark": "runner_overhead", "date": now.isoformat(timespec="seconds"),
                           "machine": environment(), "threads": args.threads, "runs": args.runs,
                           "load_before": [round(x, 2) for x in os.getloadavg()]}
    rec["rows"] = [measure(p, args.threads, args.runs) for p in args.artifacts]
    rec["load_after"] = [round(x, 2) for x in os.getloadavg()]
    from side_by_side import write_report

    write_report("runner_overhead", rec, markdown(rec), now)


if __name__ == "__main__":
    main()
