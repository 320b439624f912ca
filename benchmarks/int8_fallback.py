"""INT8 task delta per backend on the bundled models, without and with the automatic float fallback.

For each model: the lint findings, the sensitivity ranking (isolated vs drift, with their cost), and per backend
the default INT8 delta on held-out data (disjoint from calibration), then ``edgeconv.quant.repair`` at the budget:
ORT / TensorRT Q/DQ proxy / OpenVINO through ``pipeline_builder`` (``--keep-fp32`` with ONNX node names); ncnn
through a build here that turns node names into ncnn layer names (``diagnose.native.ncnn_layer_map``) and runs
the ncnn target's own quantizer, because the ncnn target matches ``--keep-fp32`` against its own layer names; TFLite
by its routes only (its PT2E route ignores ``--keep-fp32``). OpenVINO and TFLite also get their route alternatives
(``edgeconv.quant.routes``). A second, tighter budget on ORT compares the two rankings by attempts and layers kept.

    python benchmarks/int8_fallback.py --model zoo:yolo --model zoo:classifier \
        --out benchmarks/results/int8_fallback.json
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from edgeconv.bench.budget import task_evaluator
from edgeconv.calibration.stats import compute_stats
from edgeconv.core.artifact import Artifact, write_manifest
from edgeconv.lint import lint
from edgeconv.pipeline import convert_reference, make_calibration, prepare
from edgeconv.quant import alternatives, pipeline_builder, rank_layers, repair


def _machine() -> dict[str, Any]:
    import os

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(),
            "note": "shared 2-core machine: latencies are indicative only"}


def _ncnn_build(prep: Any, cal: Any, ev: Any, work: Path, ref_score: float) -> Any:
    """build(keep_nodes) for ncnn: the fp32 artifact once, then ncnn.int8.quantize with the mapped layers kept."""
    from edgeconv.diagnose.native import ncnn_layer_map
    from edgeconv.targets.ncnn.int8 import quantize
    from edgeconv.targets.registry import get_target

    fp32 = convert_reference(prep, "ncnn", out=work / "ncnn-fp32", precision="fp32")
    feed = next(iter(cal.feeds()))
    layers = ncnn_layer_map(fp32, feed)
    counter = [0]

    def build(keep: tuple[str, ...]) -> tuple[Any, float, dict[str, Any]]:
        counter[0] += 1
        out = work / f"ncnn-attempt-{counter[0]:02d}"
        if out.exists():
            shutil.rmtree(out)
        out.mkdir(parents=True)
        kept = tuple(sorted({layers[n] for n in keep if n in layers}))
        meta = quantize(fp32.file("model"), fp32.file("weights"), out / "model.param", out / "model.bin", cal,
                        fp32.manifest["conversion"]["blobs"]["inputs"], method="minmax", keep_fp32=kept,
                        table=out / "model.table", winograd=True)
        shutil.copyfile(fp32.path / "reference.onnx", out / "reference.onnx")
        m = json.loads((fp32.path / "manifest.json").read_text())
        m["precision"] = "int8"
        m["conversion"]["runtime"].update(int8=True, winograd=True)
        m["conversion"]["int8"] = meta
        m["roles"] = {"model": "model.param", "weights": "model.bin", "table": "model.table"}
        write_manifest(out, m)
        art = Artifact.load(out)
        with get_target("ncnn").runner(art) as r:
            score = ev.evaluate(r.infer)
        return art, score - ref_score, {"ncnn_layers_kept": list(kept), "layers_int8": meta["layers_int8"]}

    return build


def _reference_score(prep: Any, ev: Any) -> float:
    from edgeconv.targets.base import OrtRunner

    with OrtRunner(prep.reference.onnx_path) as r:
        return ev.evaluate(r.infer)


def _attempts(res: Any) -> list[dict[str, Any]]:
    return [{"stage": a.stage, "kept": len(a.keep), "delta": None if a.delta is None else round(a.delta, 3),
             "passed": a.passed, "latency_ms": a.extras.get("latency_ms"), "error": a.error,
             "seconds": a.seconds} for a in res.attempts]


def _summary(res: Any, backend: str) -> dict[str, Any]:
    return {"backend": backend, "ok": res.ok, "baseline_delta": res.baseline_delta, "delta": res.delta,
            "kept_nodes": list(res.keep), "kept_modules": res.modules, "reason": res.reason,
            "n_attempts": len(res.attempts), "attempts": _attempts(res)}


def run_model(model: str, backends: list[str], budget: float, eval_n: int, calib_size: int, max_attempts: int,
              work: Path, tight: float | None) -> dict[str, Any]:
    prep = prepare(model)
    pp = prep.preprocess
    cal = make_calibration(prep, None, size=calib_size, preprocess=pp)
    ev = task_evaluator(prep.info, prep.reference, pp, limit=eval_n, exclude=cal.content_hashes())
    ref = prep.reference
    stats = compute_stats(ref.onnx_path, ref.sha256, cal, "minmax")
    out: dict[str, Any] = {"model": model, "metric": ev.metric, "eval_samples": len(ev.items),
                           "calib_samples": len(cal), "budget_points": budget}
    ref_score = _reference_score(prep, ev)
    out["reference_score"] = ref_score
    t0 = time.perf_counter()
    out["lint"] = [f.to_dict() for f in lint(ref.onnx_path, stats, len(cal), feeds=cal.feeds())]
    out["lint_seconds"] = round(time.perf_counter() - t0, 2)
    from edgeconv.diagnose.modules import reference_module_map

    modules = reference_module_map(ref)
    rankings = {}
    for method in ("isolated", "drift"):
        t0 = time.perf_counter()
        rankings[method] = rank_layers(ref.onnx_path, cal.feeds(), stats, method=method, modules=modules)
        out[f"rank_{method}_seconds"] = round(time.perf_counter() - t0, 2)
        out[f"rank_{method}_top"] = [r.to_dict() for r in rankings[method][:8]]
    ranked = rankings["isolated"]
    rows = []
    for entry in backends:
        backend, _, optstr = entry.partition(":")
        opts = {k: _value(v) for k, _, v in (kv.partition("=") for kv in optstr.split(",") if kv)}
        t0 = time.perf_counter()
        try:
            if backend == "ncnn":
                build = _ncnn_build(prep, cal, ev, work / model.replace(":", "_"), ref_score)
            elif backend == "tflite":
                build = None
            else:
                build = pipeline_builder(prep, backend, calibration=cal, evaluator=ev, options=opts,
                                         out_root=work / model.replace(":", "_") / entry.replace(":", "_"))
            if build is not None:
                res = repair(build, ranked, budget, max_attempts)
                row = _summary(res, backend)
            else:
                row = {"backend": backend, "note": "PT2E route ignores --keep-fp32: routes only"}
            row["routes"] = [] if opts else _routes(prep, backend, cal, ev, budget, work / model.replace(":", "_"))
            if build is None and row["routes"]:
                row["baseline_delta"] = row["routes"][0]["delta"]
        except Exception as e:  # noqa: BLE001 - one backend's failure is that row's result
            row = {"backend": backend, "error": f"{type(e).__name__}: {e}"[:400]}
        row["seconds"] = round(time.perf_counter() - t0, 1)
        row["options"] = opts
        rows.append(row)
        print(json.dumps({k: v for k, v in row.items() if k != "attempts"}, default=str)[:600], flush=True)
    out["backends"] = rows
    if tight is not None:
        cmp = {}
        for method, r in rankings.items():
            b = pipeline_builder(prep, "onnxruntime", calibration=cal, evaluator=ev,
                                 out_root=work / model.replace(":", "_") / f"tight-{method}", latency_runs=0)
            res = repair(b, r, tight, max_attempts)
            cmp[method] = {k: v for k, v in _summary(res, "onnxruntime").items() if k != "attempts"}
        out["ranking_comparison"] = {"budget_points": tight, **cmp}
    return out


def _value(v: str) -> Any:
    return {"true": True, "false": False}.get(v.lower(), v)


def _routes(prep: Any, backend: str, cal: Any, ev: Any, budget: float, work: Path) -> list[dict[str, Any]]:
    """Deltas of the backend's route/preset alternatives (OpenVINO and TFLite; the others are covered by keeps)."""
    if backend not in ("openvino", "tflite"):
        return []
    res = []
    for alt in alternatives(backend, {}, budget):
        build = pipeline_builder(prep, backend, calibration=cal, evaluator=ev, out_root=work / f"{backend}-{alt.name}",
                                 options=alt.options, accuracy_control=alt.needs_budget, latency_runs=5)
        t0 = time.perf_counter()
        try:
            art, delta, extras = build(())
            kept = (art.manifest.get("conversion") or {}).get("reverted_by_accuracy_control")
            res.append({"route": alt.name, "options": alt.options, "delta": round(delta, 3), **extras,
                        **({"reverted_layers": kept} if kept else {})})
        except Exception as e:  # noqa: BLE001 - a failing route is a recorded result
            res.append({"route": alt.name, "options": alt.options, "error": f"{type(e).__name__}: {e}"[:300]})
        res[-1]["seconds"] = round(time.perf_counter() - t0, 1)
        print(json.dumps(res[-1], default=str)[:400], flush=True)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", action="append", default=None)
    ap.add_argument("--backends", default="onnxruntime+tensorrt+openvino+ncnn+tflite",
                    help="+-separated list; BACKEND:k=v,k=v sets options (onnxruntime:keep_outputs_fp32=false)")
    ap.add_argument("--budget", type=float, default=0.5)
    ap.add_argument("--tight", type=float, default=0.1, help="second budget for the ranking comparison (ORT)")
    ap.add_argument("--eval", type=int, default=200)
    ap.add_argument("--calib-size", type=int, default=256)
    ap.add_argument("--max-attempts", type=int, default=10)
    ap.add_argument("--out", default="benchmarks/results/int8_fallback.json")
    a = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="edgeconv-int8-bench-"))
    results = {"schema": "edgeconv.bench.int8_fallback/1", "machine": _machine(), "budget_points": a.budget,
               "date": time.strftime("%Y-%m-%d"), "models": []}
    try:
        for m in a.model or ["zoo:yolo", "zoo:classifier"]:
            results["models"].append(run_model(m, a.backends.split("+"), a.budget, a.eval, a.calib_size,
                                               a.max_attempts, work, a.tight if a.tight > 0 else None))
            Path(a.out).write_text(json.dumps(results, indent=1, default=str))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
