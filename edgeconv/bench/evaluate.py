"""Benchmark one artifact: latency in its own process, drift and the task metric against the reference.

The evaluation inputs are made once per model with the preprocessing contract (the one the artifact was calibrated
with, so INT8 is judged on the inputs it was built for) and shared by every target; the reference outputs are
computed once too.  Each target then runs in a worker subprocess (``edgeconv.bench.worker``), which returns its
latency record and its raw outputs; drift and the task metric are computed here, outside the measurement.

One result row = one target × precision, with the field names of the report contract (/work/shared/DESIGN.md).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgeconv.bench import metrics
from edgeconv.bench.datasets import EvalData, load_eval_data, stage_summary
from edgeconv.bench.drift import compute_drift, input_stats, stats_shift
from edgeconv.bench.latency import LatencyConfig, summarize
from edgeconv.bench.worker import load_outputs, save_feeds
from edgeconv.calibration.preprocess import Preprocess
from edgeconv.core.artifact import Artifact
from edgeconv.core.console import log
from edgeconv.core.errors import ConfigError, EdgeconvError
from edgeconv.core.hashing import sha256_json
from edgeconv.core.tensors import TensorSpec
from edgeconv.profiles import Profile


@dataclass
class BenchOptions:
    """How to benchmark: latency settings, thread override, evaluation size, worker time limit, reference kind."""

    latency: LatencyConfig = field(default_factory=LatencyConfig)
    threads: int | None = None  # None: the profile's threads (0 there: the backend's default)
    limit: int = 100  # evaluation inputs per model
    timeout: float = 900.0  # seconds per worker
    reference: str = "auto"  # auto (torch when the module is at hand, else reference.onnx) | onnx | torch

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> BenchOptions:
        d = dict(d)
        lat = LatencyConfig.from_dict(d)
        return cls(latency=lat, threads=d.get("threads"), limit=int(d.get("limit", 100)),
                   timeout=float(d.get("timeout", 900.0)), reference=str(d.get("reference", "auto")))


# --- reference ---------------------------------------------------------------------------------------------------


def reference_outputs(onnx_path: Path, feeds: list[dict[str, np.ndarray]], *, module: Any = None,
                      output_names: list[str] | None = None, kind: str = "auto") -> tuple[list[dict], str]:
    """FP32 reference outputs: the PyTorch module when given (and ``kind`` allows), else the reference ONNX on
    ONNX Runtime.  Returns the outputs and what produced them."""
    if kind in ("auto", "torch") and module is not None and output_names:
        try:
            return _torch_outputs(module, feeds, output_names), "torch fp32"
        except Exception as e:  # noqa: BLE001 - fall back to the ONNX reference, and say so
            if kind == "torch":
                raise ConfigError(f"torch reference failed: {type(e).__name__}: {e}") from e
            log.warning("torch reference failed (%s); using the reference ONNX", e)
    from edgeconv.targets.base import OrtRunner

    with OrtRunner(onnx_path) as r:
        return [r.infer(f) for f in feeds], "reference.onnx on onnxruntime fp32"


#: Evaluation inputs run through the torch reference at once: eager torch on one image leaves most of a CPU idle
#: (the bundled YOLO: 0.16 s per image in batches of 8 against 0.3-3 s one by one on this 2-core machine).
TORCH_BATCH = 16


def _torch_outputs(module: Any, feeds: list[dict[str, np.ndarray]], names: list[str]) -> list[dict]:
    """The module's outputs on every feed, in batches where the module really computes per sample.

    Batching is used only after a check on the first batch: every output must have the batch on axis 0 and its
    first sample must match the module's output on that sample alone (to 1e-4 relative). A module that fixes its
    batch size, folds the batch into another axis or mixes samples is run one input at a time.
    """
    import torch

    def run(f: dict[str, np.ndarray]) -> list[np.ndarray]:
        y = module(*[torch.from_numpy(np.ascontiguousarray(v)) for v in f.values()])
        flat = list(y.values()) if isinstance(y, dict) else list(y) if isinstance(y, (list, tuple)) else [y]
        if len(flat) != len(names):
            raise ValueError(f"module returns {len(flat)} outputs, the reference ONNX {len(names)}")
        return [t.detach().float().numpy() for t in flat]

    def batchable(chunk: list[dict[str, np.ndarray]]) -> bool:
        first = chunk[0]
        return len(chunk) > 1 and all(
            v.ndim >= 1 and v.shape[0] == 1 and all(c[k].shape == v.shape for c in chunk) for k, v in first.items())

    outs: list[dict] = []
    batching = True
    with torch.no_grad():
        i = 0
        while i < len(feeds):
            chunk = feeds[i:i + TORCH_BATCH]
            if batching and batchable(chunk):
                got = run({k: np.concatenate([c[k] for c in chunk]) for k in chunk[0]})
                ok = all(g.ndim >= 1 and g.shape[0] == len(chunk) for g in got)
                if ok and not outs:  # the first batch: the batched outputs must be the per-sample ones
                    alone = run(chunk[0])
                    ok = all(a.shape == g[:1].shape and
                             float(np.abs(a - g[:1]).max()) <= 1e-4 * max(1.0, float(np.abs(a).max()))
                             for a, g in zip(alone, got, strict=True))
                if ok:
                    outs.extend({n: g[j:j + 1] for n, g in zip(names, got, strict=True)} for j in range(len(chunk)))
                    i += len(chunk)
                    continue
                batching = False
            outs.append(dict(zip(names, run(feeds[i]), strict=True)))
            i += 1
    return outs


# --- task metric -------------------------------------------------------------------------------------------------


def _post_all(post: Callable[..., Any], outs: list[dict[str, np.ndarray]], task: str,
              metas: list[dict[str, float]]) -> tuple[list[Any], list[float]]:
    results, ms = [], []
    for o, meta in zip(outs, metas):
        t0 = time.perf_counter_ns()
        r = post(o)
        ms.append((time.perf_counter_ns() - t0) / 1e6)
        if task == "detection":
            results.append(metrics.to_image_coords(r[0], meta))
        else:
            results.append(np.asarray(r).reshape(-1))
    return results, ms


_REF_LOCK = threading.Lock()
_REF_MEMO: dict[tuple[int, int, int], tuple[Any, list[Any], dict[str, Any]]] = {}


def task_metric(task: str | None, post: Callable[..., Any] | None, refs: list[dict], gots: list[dict],
                data: EvalData, tol: dict[str, float]) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """The ``task`` block (metric, reference, value, delta, delta_ci95, pass; in percent) and the post-processing
    timing. ``task`` is a spec string (docs/tasks.md).

    With labels: the task metric of the artifact and of the reference on the same inputs (mAP50-95, top-1, exact
    match, mIoU). Without: agreement with the reference (label-free mAP50 of its detections, top-1 agreement, exact
    string agreement, label-free mIoU) — 100 = same. ``delta_ci95``: the paired bootstrap interval of the delta.
    """
    from edgeconv import tasks

    tk = tasks.parse(task) if task else None
    if tk is None or not gots:
        return None, None
    if tk.scored:
        block, post_ms = _scored_block(tk, post, refs, gots, data)
    elif post is None:
        return None, None
    else:
        block, post_ms = _bench_block(tk.name, post, refs, gots, data)
    nodata = block["value"] is None or block["reference"] is None
    block["delta"] = None if nodata else block["value"] - block["reference"]
    block["unit"] = "%"
    block["labelled"] = data.labels is not None
    block["samples"] = len(gots)
    limit = tol.get("task_delta")
    block["tolerance"] = limit
    # a drop beyond the budget fails; a metric without data is no check at all, never a pass or a fail
    block["pass"] = None if limit is None or nodata else bool(-block["delta"] <= limit)
    return block, stage_summary(summarize(post_ms))


def _scored_block(tk: Any, post: Callable[..., Any] | None, refs: list[dict], gots: list[dict],
                  data: EvalData) -> tuple[dict[str, Any], list[float]]:
    """CTC / segmentation: scored by ``edgeconv.tasks`` on the raw outputs (or what ``post`` returns from them)."""
    from edgeconv import tasks

    ms = []
    for o in gots:  # the decode is this task's post-processing: time it as the other tasks' post is timed
        t0 = time.perf_counter_ns()
        tk.predict(post(o) if post is not None else o)
        ms.append((time.perf_counter_ns() - t0) / 1e6)
    if post is not None:
        refs, gots = [post(o) for o in refs], [post(o) for o in gots]
    return tasks.score(tk, refs, gots, labels=data.labels, metas=data.metas), ms


def _bench_block(task: str, post: Callable[..., Any], refs: list[dict], gots: list[dict],
                 data: EvalData) -> tuple[dict[str, Any], list[float]]:
    """Detection / classification through the user's (or bundled) post-processor."""
    from edgeconv.tasks import paired_ci

    # The reference side is the same for every row of a matrix: decode and score it once.
    memo_key = (id(refs), id(post), id(data))
    with _REF_LOCK:  # rows scored on threads wait for the one reference decode instead of repeating it
        memo = _REF_MEMO.get(memo_key)
        if memo is None or memo[0] is not refs:
            memo = (refs, _post_all(post, refs, task, data.metas)[0], {})
            _REF_MEMO.clear()
            _REF_MEMO[memo_key] = memo
        ref_res, ref_scores = memo[1], memo[2]
        if task == "detection" and data.labels is not None and "map" not in ref_scores:
            ref_scores["map"] = metrics.coco_map(ref_res, data.labels)
            # the rows' mAPs come from the fast path their intervals use: trusted where it gives pycocotools'
            # numbers on these very images (the reference's detections), else every row is scored by pycocotools
            fast = metrics.coco_map(ref_res, data.labels, use_pycocotools=False)
            ref_scores["fast_agrees"] = all(abs(fast[k] - ref_scores["map"][k]) <= 1e-9 for k in fast)
            if not ref_scores["fast_agrees"]:
                log.warning("the numpy mAP differs from pycocotools' on the reference (%s vs %s): scoring every "
                            "row by pycocotools", fast, ref_scores["map"])
    got_res, post_ms = _post_all(post, gots, task, data.metas)
    block: dict[str, Any]
    if task == "detection":
        if data.labels is not None and ref_scores["map"]["map50_95"] < 0:  # pycocotools' -1: no box in the labels
            block = {"metric": "map50_95", "reference": None, "value": None, "delta_ci95": None,
                     "extra": {"no_data": "the labels hold no box on these images: no mAP to compute"}}
        elif data.labels is not None:
            m_ref = ref_scores["map"]  # scored once under the lock above
            m_got, ci = metrics.map_and_delta_ci(got_res, ref_res, data.labels, memo=ref_scores)
            if m_got is None or not ref_scores["fast_agrees"]:
                m_got = metrics.coco_map(got_res, data.labels)
            block = {"metric": "map50_95", "reference": 100 * m_ref["map50_95"], "value": 100 * m_got["map50_95"],
                     "extra": {"map50": 100 * m_got["map50"], "reference_map50": 100 * m_ref["map50"]},
                     "delta_ci95": ci}
        else:
            ref_gts = [(r.boxes, r.classes) for r in (metrics._as_det(x).filter(0.25) for x in ref_res)]
            if not any(len(b) for b, _ in ref_gts):  # nothing to agree with: no number, and the reason
                block = {"metric": "label_free_map50", "reference": None, "value": None, "delta_ci95": None,
                         "extra": {"no_data": "the reference detects nothing scoring >= 0.25 on these inputs "
                                              "(tiny class scores?): label-free agreement has no ground truth; "
                                              "give labelled data (--data DIR with labels)"}}
            else:
                m = metrics.label_free_map(got_res, ref_res)
                block = {"metric": "label_free_map50", "reference": 100.0, "value": 100 * m["map50"],
                         "extra": {"label_free_map50_95": 100 * m["map50_95"]},
                         "delta_ci95": metrics.map_delta_ci(got_res, None, ref_gts, key="map50")}
    else:
        got_l, ref_l = np.stack(got_res), np.stack(ref_res)
        n = len(ref_l)
        got_top = got_l.reshape(n, -1).argmax(1)
        ref_top = ref_l.reshape(n, -1).argmax(1)
        agree = 100 * metrics.top1_agreement(got_l, ref_l)

        def pct(rows: np.ndarray) -> float:
            return 100.0 * float(rows.mean())

        if data.labels is not None:
            lab = np.asarray(data.labels)
            block = {"metric": "top1", "reference": 100 * metrics.topk_accuracy(ref_l, lab, (1,))["top1"],
                     "value": 100 * metrics.topk_accuracy(got_l, lab, (1,))["top1"], "extra": {"top1_agreement": agree},
                     "delta_ci95": paired_ci((got_top == lab.reshape(-1)).astype(float),
                                             (ref_top == lab.reshape(-1)).astype(float), pct)}
        else:
            block = {"metric": "top1_agreement", "reference": 100.0, "value": agree, "extra": {},
                     "delta_ci95": paired_ci((got_top == ref_top).astype(float), None, pct)}
    return block, post_ms


# --- one artifact ------------------------------------------------------------------------------------------------


def profile_from_manifest(manifest: dict[str, Any]) -> Profile:
    """The profile an artifact was made with, as recorded (tolerances included)."""
    d = manifest.get("profile") or {}
    return Profile(name=d.get("name", manifest.get("profile_name", manifest.get("target", "?"))),
                   backend=d.get("backend", manifest.get("target", "?")), precision=d.get("precision", "fp32"),
                   precisions=tuple(d.get("precisions", ("fp32", "fp16", "int8"))), threads=int(d.get("threads", 0)),
                   tolerance=d.get("tolerance", {}), options=d.get("options", {}))


def artifact_block(art: Artifact) -> dict[str, Any]:
    files = art.manifest.get("files", {})
    model_file = (art.manifest.get("roles") or {}).get("model")
    sha = files[model_file]["sha256"] if model_file in files else sha256_json(files)
    return {"path": str(art.path), "bytes": art.deploy_bytes(), "sha256": sha, "files": sorted(files)}


def failed_row(profile: str, precision: str, target: str | None, error: str, *, status: str = "failed",
               stage: str | None = None) -> dict[str, Any]:
    """A result row for a target × precision that did not produce numbers; the error is one line."""
    return {"target": target or profile, "profile": profile, "precision": precision, "status": status,
            "error": " ".join(error.split())[:500], "stage": stage, "artifact": None, "latency_ms": None,
            "drift": None, "task": None}


_QUIET_LOCK = threading.Lock()


def calibration_stats(manifest: dict[str, Any], input_spec: TensorSpec, n: int = 32) -> dict[str, Any] | None:
    """Input statistics of (a sample of) the calibration data the artifact records, with its preprocessing."""
    cal = manifest.get("calibration")
    if not cal or not cal.get("root") or not Path(cal["root"]).exists():
        return None
    from edgeconv.calibration.dataset import CalibrationSet

    with _QUIET_LOCK:  # rows are scored on threads: one level save/restore at a time
        level = log.level
        log.setLevel(logging.ERROR)  # the sample's own "small calibration set" warnings were shown at conversion
        try:
            cs = CalibrationSet(Path(cal["root"]), Preprocess.from_dict(cal["preprocess"]), input_spec.name,
                                input_spec.static_shape, size=n, seed=cal.get("seed", 0))
            return input_stats(cs.feeds(), input_spec.name)
        except EdgeconvError as e:
            log.debug("calibration statistics unavailable: %s", e)
            return None
        finally:
            log.setLevel(level)


def input_warnings(manifest: dict[str, Any], data: EvalData, input_spec: TensorSpec,
                   eval_stats: dict[str, Any] | None = None) -> list[str]:
    """Warn when evaluation inputs clearly differ from calibration (other preprocessing, other value range)."""
    warnings: list[str] = []
    cal = manifest.get("calibration")
    if not cal:
        return warnings
    if data.preprocess is not None and cal.get("preprocess_sha256") and \
            data.preprocess.sha256 != cal["preprocess_sha256"]:
        warnings.append("evaluation preprocessing differs from the calibration preprocessing "
                        f"({data.preprocess.to_dict()} vs {cal.get('preprocess')})")
    cstats = calibration_stats(manifest, input_spec)
    if cstats:
        reasons = stats_shift(cstats, eval_stats or input_stats(data.feeds, input_spec.name))
        if reasons:
            warnings.append("evaluation inputs differ from what calibration saw: " + "; ".join(reasons))
    return warnings


def run_worker(art: Artifact, feeds_npz: Path, work: Path, *, threads: int | None, latency: LatencyConfig,
               timeout: float, skip_latency: bool = False, latency_only: bool = False
               ) -> tuple[dict[str, Any], list[dict] | None]:
    """Run the measurement subprocess; returns its record (``ok`` False with a one-line ``error`` on failure)."""
    work.mkdir(parents=True, exist_ok=True)
    job = {"artifact": str(art.path), "threads": threads, "latency": latency.to_dict(), "feeds": str(feeds_npz),
           "outputs": str(work / "outputs.npz"), "result": str(work / "result.json"), "skip_latency": skip_latency,
           "latency_only": latency_only}
    job_path = work / "job.json"
    job_path.write_text(json.dumps(job))
    env = dict(os.environ)
    env.setdefault("PYTHONUNBUFFERED", "1")
    try:
        # -P: the working folder is not put first on sys.path, so a folder named edgeconv/ there cannot shadow us.
        proc = subprocess.run([sys.executable, "-P", "-m", "edgeconv.bench.worker", str(job_path)], env=env,
                              capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return {"ok": False, "error": f"benchmark worker did not finish within {timeout:.0f} s and was stopped"}, None
    result_path = work / "result.json"
    if not result_path.is_file():
        tail = " ".join(proc.stderr.strip().splitlines()[-1:]) if proc.stderr else ""
        return {"ok": False, "error": f"benchmark worker crashed (exit code {proc.returncode}) {tail}".strip()}, None
    res = json.loads(result_path.read_text())
    if not res.get("ok"):
        log.debug("worker traceback:\n%s", res.get("traceback", ""))
        return res, None
    return res, load_outputs(work / "outputs.npz")


def _threads(art: Artifact, options: BenchOptions) -> int | None:
    profile = profile_from_manifest(art.manifest)
    return options.threads if options.threads is not None else (profile.threads or None)


def _failed(row: dict[str, Any], res: dict[str, Any]) -> dict[str, Any]:
    row.update(status="failed", error=" ".join(str(res.get("error")).split())[:500], stage="bench",
               latency_ms=None, drift=None, task=None)
    return row


def _timing_fields(row: dict[str, Any], res: dict[str, Any], manifest: dict[str, Any]) -> None:
    """What a worker run says about speed and memory (latency, cold start, RSS, throughput), into ``row``."""
    proxy = res.get("proxy", False)
    lat = res.get("latency_ms")
    for k in ("latency_emulated", "latency_note"):
        if res.get(k) is not None:
            row[k] = res[k]
    row["latency_ms"] = None if proxy else lat
    if proxy:
        conv = manifest.get("conversion") or {}
        row["latency_note"] = conv.get("latency_note") or (manifest.get("verification") or {}).get("note") or \
            "proxy runner (stand-in runtime): latency is not representative of the device"
    row["proxy"] = proxy
    row["runner"] = res.get("runner")
    if res.get("compute") is not None:
        row["compute"] = res["compute"]
    row["cold_start_ms"] = res.get("cold_start_ms")
    row["peak_rss_mb"] = res.get("peak_rss_mb")
    row["rss_before_mb"] = res.get("rss_before_mb")
    if res.get("throughput"):
        row["throughput"] = res["throughput"]
    stages = row.setdefault("stages_ms", {})
    if lat and not proxy:
        stages["inference"] = {k: lat[k] for k in ("p50", "p90", "mean", "n")}


def add_latency(row: dict[str, Any], art: Artifact, feeds_npz: Path, work: Path, *,
                options: BenchOptions) -> dict[str, Any]:
    """Time a row scored by ``bench_artifact(..., accuracy_only=True)``: a worker of its own that loads the
    artifact, runs the first feed and the latency protocol, nothing else, so it can run alone on a quiet machine
    while the accuracy passes of other rows ran side by side."""
    if row.get("status") != "ok" or row.get("proxy"):  # a stand-in runtime has no latency to measure
        return row
    res, _ = run_worker(art, feeds_npz, work / "latency", threads=_threads(art, options), latency=options.latency,
                        timeout=options.timeout, latency_only=True)
    if not res.get("ok"):
        return _failed(row, res)
    _timing_fields(row, res, art.manifest)
    return row


def bench_artifact(art: Artifact, data: EvalData, refs: list[dict[str, np.ndarray]], *, options: BenchOptions,
                   work: Path, feeds_npz: Path | None = None, post: Callable[..., Any] | None = None,
                   reference_desc: str = "reference", eval_stats: dict[str, Any] | None = None,
                   device: str | None = None, accuracy_only: bool = False) -> dict[str, Any]:
    """Measure one artifact (worker subprocess, or the device worker on ``device``) and score it against ``refs``:
    one report row, the same shape wherever it ran (drift and the task metric are computed here, on the host).
    ``accuracy_only``: outputs and scores without the latency protocol (``add_latency`` times the row later)."""
    mf = art.manifest
    profile = profile_from_manifest(mf)
    precision = mf.get("precision", "fp32")
    threads = _threads(art, options)
    row: dict[str, Any] = {"target": mf.get("target"), "profile": mf.get("profile_name", profile.name),
                           "precision": precision, "status": "ok", "error": None, "artifact": artifact_block(art),
                           "threads": threads or None}
    if feeds_npz is None:
        feeds_npz = work / "feeds.npz"
        save_feeds(feeds_npz, data.feeds)
    if device:
        from edgeconv.devices import run_device_worker

        res, gots = run_device_worker(art, feeds_npz, work, device=device, threads=threads, latency=options.latency,
                                      timeout=options.timeout)
        row["device"] = (res.get("env") or {}).get("device", device)
    else:
        # accuracy passes run side by side, one core each: runtimes that spin a thread per core would otherwise
        # fight over the cores (the outputs do not depend on the thread count beyond summation order)
        res, gots = run_worker(art, feeds_npz, work, threads=1 if accuracy_only else threads,
                               latency=options.latency, timeout=options.timeout, skip_latency=accuracy_only)
    if not res.get("ok"):
        return _failed(row, res)
    row["stages_ms"] = {}
    if data.preprocess_ms:
        row["stages_ms"]["preprocess"] = data.preprocess_ms
    _timing_fields(row, res, mf)
    tol = profile.tol(precision)
    tensor_tol = {k: v for k, v in tol.items() if k in ("max_abs", "rel_l2", "cosine", "snr_db")}
    row["drift"] = compute_drift(refs, gots or [], tensor_tol)
    row["drift"]["inputs"] = data.source
    task, post_ms = task_metric(data.task, post, refs, gots or [], data, tol)
    row["task"] = task
    row["reference"] = reference_desc
    if post_ms:
        row["stages_ms"]["postprocess"] = post_ms
    warns = input_warnings(mf, data, art.inputs[0], eval_stats) if precision == "int8" else []
    if data.source == "random" and precision == "int8":
        warns.append("drift measured on random inputs: meaningless for INT8; pass evaluation data")
    if task is not None and (task.get("extra") or {}).get("no_data"):
        warns.append(f"{task['metric']}: no data: {task['extra']['no_data']}")
    for w in warns:
        log.warning("%s %s: %s", row["profile"], precision, w)
    row["warnings"] = warns
    row["checks"] = {"drift": row["drift"]["pass"], "task": None if task is None else task["pass"]}
    return row


def evaluate_artifact(artifact: str | Path | Artifact, data: str | Path | None = None, *,
                      options: BenchOptions | None = None, task: str | None = None, postprocess: str | None = None,
                      preprocess: Preprocess | None = None, work: Path | None = None) -> dict[str, Any]:
    """Benchmark a single artifact folder (``edgeconv bench``): reference = its bundled ``reference.onnx``.

    ``task``/``postprocess`` default to what the artifact's manifest records (bundled models record both).
    """
    from edgeconv.bench.plugins import load_callable

    options = options or BenchOptions()
    art = artifact if isinstance(artifact, Artifact) else Artifact.load(artifact)
    info = art.manifest.get("task") or {}
    task = task or info.get("task")
    post_spec = postprocess or info.get("postprocess")
    pp = preprocess or (Preprocess.from_dict(art.manifest["preprocess"]) if art.manifest.get("preprocess") else None)
    if data == "zoo" and info.get("bundled"):
        data = f"zoo:{task}"
    spec = art.inputs[0]
    ed = load_eval_data(data, input_spec=spec, preprocess=pp, task=task, limit=options.limit)
    refs, desc = reference_outputs(art.reference_onnx, ed.feeds, kind="onnx")
    post = load_callable(post_spec) if post_spec else None
    with tempfile.TemporaryDirectory(prefix="edgeconv-bench-") as tmp:
        return bench_artifact(art, ed, refs, options=options, work=Path(work or tmp), post=post,
                              reference_desc=desc)
