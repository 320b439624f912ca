"""ONNX Runtime INT8 (the reference INT8 path) vs FP32 on the bundled models' evaluation splits.

Targets (issue #4): the YOLO detector loses <= 1.0 point mAP50-95, the classifier <= 0.5 point top-1.  Several
quantization configurations can be compared (``--configs all``) so the defaults in ``ort_int8.DEFAULTS`` are chosen
by measurement.  Calibration uses the bundled calibration folder (disjoint from the eval split, checked by content
hash); results go to ``benchmarks/results/ort_int8_accuracy.json`` with the machine named.

    python benchmarks/ort_int8_accuracy.py [--models yolo,classifier] [--configs default|all|NAME,...] [--limit N]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
CONFIGS: dict[str, dict[str, Any]] = {
    "default": {},
    "no-reduce-range": {"reduce_range": False},
    "s8-activations": {"activation_type": "int8", "symmetric_activations": True},
    "entropy": {"calib_method": "entropy"},
    "percentile": {"calib_method": "percentile", "percentile": 99.999},
    "head-fp32": {"keep_outputs_fp32": True},
    "conv-only": {"op_types": ["Conv", "MatMul", "Gemm"]},
    "conv-only-head-fp32": {"op_types": ["Conv", "MatMul", "Gemm"], "keep_outputs_fp32": True},
    "conv-only-no-reduce-range": {"op_types": ["Conv", "MatMul", "Gemm"], "reduce_range": False},
}


def calibration_dir(name: str) -> Path:
    from edgeconv.zoo import BUNDLED, data

    d = Path(BUNDLED[name].calibration_dir)
    if d.is_dir() and any(d.rglob("*.jpg")):
        return d
    alt = Path(tempfile.gettempdir()) / f"edgeconv-calib-{name}"  # not committed yet: same generator and seed
    if not (alt / "manifest.json").is_file():
        if BUNDLED[name].task == "detection":
            data.write_yolo_split(alt, data.CALIB_SEED, 0, data.CALIB_COUNT, data.DET_SIZE, quality=85)
        else:
            data.write_imagefolder_split(alt, data.CALIB_SEED, 0, data.CALIB_COUNT, data.CLS_SIZE, quality=90)
    return alt


def evaluate(model_path: Path, name: str, pp: Any, samples: list, threads: int | None) -> dict[str, float]:
    from edgeconv.bench.metrics import coco_map, topk_accuracy
    from edgeconv.bench.plugins import load_callable
    from edgeconv.core.console import track
    from edgeconv.targets.base import OrtRunner
    from edgeconv.zoo import BUNDLED

    spec = BUNDLED[name]
    post = load_callable(spec.postprocess)
    with OrtRunner(model_path, threads=threads) as r:
        outs = [r.infer({spec.input_name: pp.apply(pp.load(s[0]))}) for s in track(samples, f"eval {model_path.name}")]
    if spec.task == "detection":
        preds = [post(o)[0] for o in outs]
        return {k: round(100 * v, 2) for k, v in coco_map(preds, [(s[1], s[2]) for s in samples]).items()}
    logits = np.concatenate([o[spec.output_names[0]] for o in outs])
    return {"top1": round(100 * topk_accuracy(logits, np.array([s[1] for s in samples]), k=(1,))["top1"], 2)}


def run_model(name: str, configs: list[str], limit: int | None, threads: int | None) -> dict[str, Any]:
    from edgeconv.bench.datasets import load_detection_labels, load_imagefolder
    from edgeconv.calibration.dataset import check_disjoint
    from edgeconv.calibration.stats import input_stats_warning
    from edgeconv.pipeline import build_context, make_calibration, prepare
    from edgeconv.profiles import load_profile
    from edgeconv.targets.onnxruntime.int8 import quantize_qdq
    from edgeconv.zoo import BUNDLED
    from edgeconv.zoo.data import eval_split

    spec = BUNDLED[name]
    if not Path(spec.weights).is_file():
        return {"status": "skipped", "why": f"weights {spec.weights} not trained yet"}
    prep = prepare(f"zoo:{name}")
    cal = make_calibration(prep, calibration_dir(name), size=512, seed=0)
    split = eval_split(spec.task)
    if spec.task == "detection":
        samples = load_detection_labels(split)
    else:
        samples = load_imagefolder(split)[0]
    samples = samples[:: max(1, len(samples) // limit)][:limit] if limit else samples
    check_disjoint(cal, [s[0] for s in samples])
    metric = "map50_95" if spec.task == "detection" else "top1"
    budget = 1.0 if spec.task == "detection" else 0.5
    fp32 = evaluate(prep.reference.onnx_path, name, cal.preprocess, samples, threads)
    rec: dict[str, Any] = {"status": "ok", "eval_images": len(samples), "calib_images": len(cal), "metric": metric,
                           "budget_points": budget, "fp32": fp32, "int8": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for c in configs:
            out = Path(tmp) / f"{name}-{c}.onnx"
            t0 = time.perf_counter()
            _, ctx = build_context(prep, load_profile("onnxruntime"), "int8", calibration=cal, options=CONFIGS[c])
            meta = quantize_qdq(ctx, out)
            q_s = time.perf_counter() - t0
            m = evaluate(out, name, cal.preprocess, samples, threads)
            drop = round(fp32[metric] - m[metric], 2)
            rec["int8"][c] = {**m, "drop": drop, "within_budget": drop <= budget, "options": CONFIGS[c],
                              "kept_fp32": meta["kept_fp32"], "quantize_seconds": round(q_s, 1)}
            print(json.dumps({"model": name, "config": c, **rec["int8"][c]}), flush=True)
    rec["input_stats_warning"] = input_stats_warning(cal.input_stats, (
        {spec.input_name: cal.preprocess.apply(cal.preprocess.load(s[0]))} for s in samples[:64]))
    return rec


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="yolo,classifier")
    ap.add_argument("--configs", default="default", help="default | all | comma list of " + ",".join(CONFIGS))
    ap.add_argument("--limit", type=int, help="evaluate on an evenly spaced subset (quick look; not the record)")
    ap.add_argument("--threads", type=int)
    ap.add_argument("--out", type=Path, default=RESULTS / "ort_int8_accuracy.json")
    args = ap.parse_args()
    os.environ.setdefault("EDGECONV_CACHE", str(Path(tempfile.gettempdir()) / "edgeconv-bench-cache"))
    from edgeconv.core.console import setup_logging
    from edgeconv.core.env import environment

    setup_logging()
    configs = list(CONFIGS) if args.configs == "all" else args.configs.split(",")
    env = environment()
    record = {"benchmark": "ort_int8_accuracy", "machine": f"{env['cpu']} ({env['cores']} cores)",
              "environment": env, "date": time.strftime("%Y-%m-%d %H:%M:%S"), "limit": args.limit,
              "models": {m: run_model(m, configs, args.limit, args.threads) for m in args.models.split(",")}}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
