"""Is edgeconv's OpenVINO IR as fast as the same model through plain ``ovc`` (defaults)?  And INT8 vs FP32.

Converts the reference ONNX twice — ``ovc reference.onnx`` with every default (fp16-compressed weights) and
edgeconv's ``openvino`` fp32 target — plus optionally edgeconv's int8 IR, then times all of them in the same process
with the same method: one ``ov.Core``, identical compile config (LATENCY hint, same ``INFERENCE_NUM_THREADS``, f32
inference precision), synchronous ``infer`` on the same real input.  Rounds are interleaved (A, B, C, A, B, C, ...)
so drift in machine load (this box is shared) hits every variant alike; p50 is over all iterations of a variant.

Pass criteria (issue #6): edgeconv fp32 p50 / ovc p50 <= 1.02; int8 p50 <= 0.75 x fp32 p50.
Writes ``benchmarks/results/openvino_ovc_<date>.json`` naming the machine (edgeconv.core.env.environment()).

    python benchmarks/openvino_ovc_compare.py                      # zoo:yolo (random init if no weights yet)
    python benchmarks/openvino_ovc_compare.py --threads 1 --rounds 10 --iters 20
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _prepare(model: str) -> tuple[Any, str]:
    """The bundled detector with trained weights when present, else the same architecture randomly initialised
    (speed does not depend on the weights; accuracy claims then are not made)."""
    from edgeconv import zoo
    from edgeconv.pipeline import prepare

    if model == "zoo:yolo" and not zoo.BUNDLED["yolo"].weights.is_file():
        from edgeconv.calibration.preprocess import Preprocess

        b = zoo.BUNDLED["yolo"]
        prep = prepare(b.factory, inputs=[f"{b.input_name}:{'x'.join(map(str, b.input_shape))}"],
                       output_names=list(b.output_names), preprocess=Preprocess.from_dict(b.preprocess))
        prep.calib_dir = Path(b.calibration_dir)
        return prep, "edgeconv.zoo.yolo:build (random init: trained weights not present yet)"
    return prepare(model), model


def _ovc(onnx: Path, out_dir: Path) -> tuple[Path, float]:
    """``ovc`` with its defaults (notably compress_to_fp16=True), as a user would run it."""
    exe = shutil.which("ovc") or str(Path(sys.executable).with_name("ovc"))
    t0 = time.perf_counter()
    subprocess.run([exe, str(onnx), "--output_model", str(out_dir / "model.xml")], check=True,
                   capture_output=True, text=True)
    return out_dir / "model.xml", time.perf_counter() - t0


def _time_interleaved(core: Any, models: dict[str, Path], feeds: dict[str, np.ndarray], config: dict[str, Any],
                      rounds: int, iters: int, warmup: int) -> dict[str, dict[str, Any]]:
    reqs = {}
    graphs: dict[str, dict[str, int]] = {}
    for name, xml in models.items():
        compiled = core.compile_model(str(xml), "CPU", config)
        graphs[name] = _runtime_graph(compiled)
        req = compiled.create_infer_request()
        inputs = {p.get_any_name(): feeds[p.get_any_name()] for p in compiled.inputs}
        for _ in range(warmup):
            req.infer(inputs)
        reqs[name] = (req, inputs)
    samples: dict[str, list[float]] = {n: [] for n in models}
    round_p50: dict[str, list[float]] = {n: [] for n in models}
    for r in range(rounds):
        order = list(models) if r % 2 == 0 else list(reversed(models))  # alternate order: no position bias
        for name in order:
            req, inputs = reqs[name]
            ts = []
            for _ in range(iters):
                t0 = time.perf_counter()
                req.infer(inputs)
                ts.append((time.perf_counter() - t0) * 1e3)
            samples[name] += ts
            round_p50[name].append(float(np.median(ts)))
    out: dict[str, dict[str, Any]] = {}
    first = next(iter(models))
    for name, ts in samples.items():
        a = np.asarray(ts)
        out[name] = {"p50_ms": round(float(np.median(a)), 4), "p90_ms": round(float(np.percentile(a, 90)), 4),
                     "mean_ms": round(float(a.mean()), 4), "min_ms": round(float(a.min()), 4), "n": int(a.size),
                     "round_p50_ms": [round(x, 4) for x in round_p50[name]],
                     # paired: each round's p50 over the first variant's in the same round (load drift cancels)
                     "paired_ratio_vs_" + first: round(float(np.median(np.asarray(round_p50[name]) /
                                                                       np.asarray(round_p50[first]))), 4),
                     "runtime_graph": graphs[name]}
    return out


def _runtime_graph(compiled: Any) -> dict[str, int]:
    """Layer types of the CPU plugin's executable graph: identical counts mean identical kernels run, which is the
    load-independent evidence that two IRs cost the same."""
    counts: dict[str, int] = {}
    for op in compiled.get_runtime_model().get_ordered_ops():
        t = op.get_rt_info()["layerType"].astype(str)
        counts[t] = counts.get(t, 0) + 1
    return dict(sorted(counts.items()))


def _accuracy(prep: Any, models: dict[str, Path], n: int) -> dict[str, Any]:
    """mAP50-95 of each model (OpenVINO CPU, f32 inference precision) with the same decoder and eval images."""
    import openvino as ov

    from edgeconv.profiles import load_profile
    from edgeconv.targets.base import ConvertContext
    from edgeconv.targets.openvino.validation import detection_validation

    ctx = ConvertContext(prep.reference, load_profile("openvino"), "fp32", Path(tempfile.gettempdir()),
                         preprocess=prep.preprocess)
    fn, items, meta = detection_validation(ctx, {"task": "detection", **prep.info}, n)
    core = ov.Core()
    out: dict[str, Any] = {"metric": meta["metric"], "images": len(items)}
    for name, path in models.items():
        out[name] = round(fn(core.compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"}), items), 5)
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="zoo:yolo")
    ap.add_argument("--threads", type=int, default=1, help="INFERENCE_NUM_THREADS for every variant")
    ap.add_argument("--rounds", type=int, default=40)
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--no-int8", action="store_true")
    ap.add_argument("--calib-size", type=int, default=128)
    ap.add_argument("--accuracy", type=int, default=0, metavar="N",
                    help="also score fp32/fp16/int8 IRs (mAP50-95 on N eval images); needs trained weights")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = ap.parse_args(argv)

    import openvino as ov

    from edgeconv.core.env import environment
    from edgeconv.pipeline import convert_reference, make_calibration

    prep, label = _prepare(args.model)
    work = Path(tempfile.mkdtemp(prefix="edgeconv-ovc-"))
    try:
        (work / "ovc").mkdir()
        ovc_xml, ovc_s = _ovc(prep.reference.onnx_path, work / "ovc")
        models = {"ovc_default": ovc_xml}
        t0 = time.perf_counter()
        fp32 = convert_reference(prep, "openvino", out=work / "fp32", precision="fp32", use_cache=False)
        models["edgeconv_fp32"] = fp32.file("model")
        conv_s = {"ovc_default": round(ovc_s, 2), "edgeconv_fp32": round(time.perf_counter() - t0, 2)}
        calib = make_calibration(prep, None, size=args.calib_size)
        if not args.no_int8:
            t0 = time.perf_counter()
            int8 = convert_reference(prep, "openvino", out=work / "int8", precision="int8", calibration=calib,
                                     use_cache=False)
            models["edgeconv_int8"] = int8.file("model")
            conv_s["edgeconv_int8"] = round(time.perf_counter() - t0, 2)
        feeds = next(iter(calib.feeds()))
        config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": args.threads,
                  "INFERENCE_PRECISION_HINT": "f32"}
        timing = _time_interleaved(ov.Core(), models, feeds, config, args.rounds, args.iters, args.warmup)
        ratio = timing["edgeconv_fp32"]["p50_ms"] / timing["ovc_default"]["p50_ms"]
        result: dict[str, Any] = {
            "benchmark": "openvino_ovc_compare", "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "machine": environment(), "model": label, "reference_sha256": prep.reference.sha256,
            "method": {"timer": "time.perf_counter around sync InferRequest.infer", "device": "CPU",
                       "compile_config": config, "rounds": args.rounds, "iters_per_round": args.iters,
                       "warmup": args.warmup, "interleaved": True, "input": "first calibration image"},
            "convert_seconds": conv_s, "timing": timing,
            "ratios": {"edgeconv_fp32_over_ovc": round(ratio, 4),
                       "edgeconv_fp32_over_ovc_paired": timing["edgeconv_fp32"]["paired_ratio_vs_ovc_default"],
                       "same_runtime_graph": timing["edgeconv_fp32"]["runtime_graph"] ==
                       timing["ovc_default"]["runtime_graph"]},
            "verification": {"edgeconv_fp32": fp32.manifest["verification"]["drift"]},
        }
        result["pass"] = {"fp32_vs_ovc_le_1.02": ratio <= 1.02}
        result["load_average"] = [round(x, 2) for x in os.getloadavg()]
        if "edgeconv_int8" in timing:
            r8 = timing["edgeconv_int8"]["p50_ms"] / timing["edgeconv_fp32"]["p50_ms"]
            result["ratios"]["int8_over_fp32"] = round(r8, 4)
            result["pass"]["int8_le_0.75_fp32"] = r8 <= 0.75
            result["verification"]["edgeconv_int8"] = int8.manifest["verification"]["drift"]
        if args.accuracy and "random init" not in label and "edgeconv_int8" in models:
            fp16 = convert_reference(prep, "openvino", out=work / "fp16", precision="fp16", use_cache=False)
            result["verification"]["edgeconv_fp16"] = fp16.manifest["verification"]["drift"]
            arts = {"reference_onnx": prep.reference.onnx_path, "fp32": models["edgeconv_fp32"],
                    "fp16": fp16.file("model"), "int8": models["edgeconv_int8"]}
            result["accuracy"] = _accuracy(prep, arts, args.accuracy)
            acc = result["accuracy"]
            result["pass"]["fp16_map_within_0.1pt"] = abs(acc["fp16"] - acc["fp32"]) <= 0.001
            result["pass"]["int8_map_drop_le_1pt"] = acc["fp32"] - acc["int8"] <= 0.01
        elif args.accuracy:
            result["accuracy"] = "skipped: trained weights not present (random-init mAP is meaningless)"
        args.out.mkdir(parents=True, exist_ok=True)
        path = args.out / f"openvino_ovc_{dt.date.today().isoformat()}.json"
        path.write_text(json.dumps(result, indent=2, default=str))
        print(json.dumps({"written": str(path), "ratios": result["ratios"], "pass": result["pass"],
                          **{k: v["p50_ms"] for k, v in timing.items()}}, indent=2))
        return result
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
