"""edgeconv side by side with Ultralytics' own export on the same YOLO11n DetectionModel (issue 20's table).

Same model object, same weights, 320×320, one thread, in one run: each side exports/converts to ONNX, OpenVINO, ncnn
and TFLite (export CPU seconds of this process and its children, measured around each call), then every artifact
both sides have is timed with the same runtime call — ONNX Runtime for .onnx, OpenVINO (``INFERENCE_PRECISION_HINT``
pinned to f32, so a bf16 CPU does not change one side's numerics) for IRs, ncnn and LiteRT for theirs — in
interleaved blocks (A, B, A, B, ...) so load drift on a shared machine hits both alike. Ratios are
edgeconv / Ultralytics.

Nothing is installed at run time and nothing is downloaded: the model is built from Ultralytics' packaged
``yolo11n.yaml`` (random init; latency does not depend on the weights). When ``ultralytics`` (which needs
torchvision) is not importable, the script writes a "skipped" result with the reason and exits 0.

    python benchmarks/peer_ultralytics.py [--threads 1] [--blocks 10] [--iters 20]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

FORMATS = ("onnx", "openvino", "ncnn", "tflite")
EDGECONV_PROFILE = {"onnx": "onnxruntime", "openvino": "openvino", "ncnn": "ncnn", "tflite": "tflite"}
IMGSZ = 320
SKIP_NOTE = ("ultralytics needs torchvision, and no torchvision wheel imports beside the pinned torch 2.13.0 CPU; a "
             "separate venv would need its own CPU torch, which only PyTorch's own index serves (PyPI's Linux torch "
             "pulls the multi-GB CUDA build), so it is not made here")


def ultralytics_missing() -> str | None:
    """Why the comparison cannot run here (None when it can)."""
    for mod in ("torchvision", "ultralytics"):
        try:
            __import__(mod)
        except Exception as e:  # noqa: BLE001 - any import failure is the reason (torchvision/torch mismatch too)
            return f"{mod} is not importable here ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
    return None


def _cpu() -> float:
    s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime


def _timed(fn: Any) -> tuple[Any, float]:
    t0 = _cpu()
    out = fn()
    return out, _cpu() - t0


def ultralytics_exports(model: Any, work: Path) -> dict[str, dict[str, Any]]:
    """Ultralytics' exports of ``model`` (a YOLO object) in every format, with their CPU seconds."""
    out: dict[str, dict[str, Any]] = {}
    for fmt in FORMATS:
        try:
            path, cpu = _timed(lambda fmt=fmt: model.export(format=fmt, imgsz=IMGSZ, device="cpu", verbose=False))
            out[fmt] = {"path": str(path), "export_cpu_s": round(cpu, 2)}
        except Exception as e:  # noqa: BLE001 - a failing format is that row's result, the run goes on
            out[fmt] = {"error": f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"}
    return out


def edgeconv_exports(module: Any, work: Path, threads: int) -> dict[str, dict[str, Any]]:
    from edgeconv.pipeline import convert_reference, prepare

    prep, cpu0 = _timed(lambda: prepare(module, inputs=[f"images:1x3x{IMGSZ}x{IMGSZ}"], use_cache=False))
    out: dict[str, dict[str, Any]] = {}
    for fmt in FORMATS:
        try:
            art, cpu = _timed(lambda fmt=fmt: convert_reference(prep, EDGECONV_PROFILE[fmt], out=work / fmt,
                                                                precision="fp32", use_cache=False))
            out[fmt] = {"path": str(art.path), "export_cpu_s": round(cpu + (cpu0 if fmt == "onnx" else 0), 2),
                        "artifact": art}
        except Exception as e:  # noqa: BLE001
            out[fmt] = {"error": f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"}
    out["_reference_cpu_s"] = {"export_cpu_s": round(cpu0, 2)}
    return out


def _ultra_infer(fmt: str, path: str, threads: int) -> Any:
    """A callable running one of Ultralytics' files with the runtime's own API (one thread)."""
    x = np.random.default_rng(0).random((1, 3, IMGSZ, IMGSZ), dtype=np.float32)
    if fmt == "onnx":
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
        s = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
        name = s.get_inputs()[0].name
        return lambda: s.run(None, {name: x})
    if fmt == "openvino":
        import openvino as ov

        xml = next(Path(path).glob("*.xml"))
        c = ov.Core().compile_model(str(xml), "CPU", {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY",
                                                      "INFERENCE_NUM_THREADS": threads})
        req = c.create_infer_request()
        return lambda: req.infer({0: x})
    if fmt == "ncnn":
        import ncnn

        net = ncnn.Net()
        net.opt.num_threads = threads
        net.opt.use_fp16_storage = net.opt.use_fp16_packed = net.opt.use_fp16_arithmetic = False
        net.load_param(str(next(Path(path).glob("*.param"))))
        net.load_model(str(next(Path(path).glob("*.bin"))))
        mat = ncnn.Mat(np.ascontiguousarray(x[0]))

        def run() -> Any:
            ex = net.create_extractor()
            ex.input("in0", mat)
            return ex.extract("out0")
        return run
    from ai_edge_litert.interpreter import Interpreter

    tfl = next(Path(path).glob("*float32.tflite"), None) or next(Path(path).glob("*.tflite"))
    it = Interpreter(model_path=str(tfl), num_threads=threads)
    it.allocate_tensors()
    inp = it.get_input_details()[0]
    xin = np.ascontiguousarray(x.transpose(0, 2, 3, 1)) if list(inp["shape"])[-1] == 3 else x

    def run_tfl() -> Any:
        it.set_tensor(inp["index"], xin)
        it.invoke()
    return run_tfl


def interleaved(a: Any, b: Any, blocks: int, iters: int) -> tuple[float, float]:
    """p50 (ms) of ``a`` and ``b`` timed in alternating blocks."""
    ta: list[float] = []
    tb: list[float] = []
    for fn in (a, b):
        for _ in range(5):
            fn()
    for _ in range(blocks):
        for fn, acc in ((a, ta), (b, tb)):
            for _ in range(iters):
                t0 = time.perf_counter()
                fn()
                acc.append((time.perf_counter() - t0) * 1e3)
    return float(np.median(ta)), float(np.median(tb))


def compare(args: argparse.Namespace) -> dict[str, Any]:
    from ultralytics import YOLO

    from edgeconv.targets.registry import get_target

    work = Path(tempfile.mkdtemp(prefix="edgeconv-peer-"))
    yolo = YOLO("yolo11n.yaml")  # packaged config, random init: no download
    module = yolo.model.eval()
    ours = edgeconv_exports(module, work / "edgeconv", args.threads)
    theirs = ultralytics_exports(yolo, work / "ultralytics")
    rows = []
    x = np.random.default_rng(0).random((1, 3, IMGSZ, IMGSZ), dtype=np.float32)
    for fmt in FORMATS:
        row: dict[str, Any] = {"format": fmt, "edgeconv": {k: v for k, v in ours[fmt].items() if k != "artifact"},
                               "ultralytics": theirs[fmt]}
        if "artifact" in ours[fmt] and "path" in theirs[fmt]:
            art = ours[fmt]["artifact"]
            runner = get_target(art.manifest["target"]).runner(art, threads=args.threads)
            feeds = {art.inputs[0].name: x}
            peer = _ultra_infer(fmt, theirs[fmt]["path"], args.threads)
            p_ours, p_theirs = interleaved(lambda r=runner, f=feeds: r.infer(f), peer, args.blocks, args.iters)
            runner.close()
            row.update(p50_ms={"edgeconv": round(p_ours, 3), "ultralytics": round(p_theirs, 3)},
                       p50_ratio=round(p_ours / p_theirs, 3),
                       export_cpu_ratio=round(ours[fmt]["export_cpu_s"] / max(theirs[fmt]["export_cpu_s"], 1e-6), 2))
        rows.append(row)
    return {"status": "ok", "rows": rows, "reference_cpu_s": ours["_reference_cpu_s"]["export_cpu_s"]}


def main() -> None:
    from edgeconv.core.env import environment

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--blocks", type=int, default=10)
    ap.add_argument("--iters", type=int, default=20)
    args = ap.parse_args()
    why = ultralytics_missing()
    now = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    res: dict[str, Any] = {"benchmark": "peer_ultralytics", "date": now, "machine": environment(),
                           "threads": args.threads, "imgsz": IMGSZ}
    res.update({"status": "skipped", "reason": why, "note": SKIP_NOTE} if why else compare(args))
    name = "".join(c if c.isalnum() else "-" for c in res["machine"]["cpu"].lower()).strip("-")
    out = ROOT / "benchmarks" / "results" / f"peer_ultralytics-{name}-{res['date'][:10]}.json"
    out.write_text(json.dumps(res, indent=1, default=str) + "\n")
    print(json.dumps({k: res[k] for k in ("status", "reason") if k in res} if why else res["rows"], indent=1,
                     default=str))


if __name__ == "__main__":
    main()
