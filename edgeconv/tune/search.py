"""Run the search: convert each candidate through the plan, measure it with the harness, select, write.

The model is prepared once, the evaluation inputs and reference outputs are made once (as ``edgeconv run`` does),
then each candidate's artifact is made by ``Planner.convert`` — verified by the pipeline, INT8 repaired or refused
against the profile's task budget — and measured by ``bench_artifact`` in its own worker process. A candidate that
fails is a row with its reason; the search goes on. The search is bounded by a candidate count and a wall-clock
budget checked before each candidate (a started candidate finishes).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeconv.core.console import log, track
from edgeconv.core.errors import ConfigError, EdgeconvError, MissingDependencyError
from edgeconv.tune.pareto import Point, cost_axis, margin, pareto_front, recommend, within_budget
from edgeconv.tune.space import Candidate, candidates, device_profiles

SCHEMA = "edgeconv.tune/1"


@dataclass
class TuneOptions:
    """How much to search and how to measure each candidate."""

    precisions: list[str] | None = None
    threads: list[int] | None = None
    streams: list[int] | None = None
    max_candidates: int = 24
    time_budget_s: float | None = None
    max_drop: float | None = None  # points; replaces the profiles' task budgets
    min_iters: int = 30
    min_seconds: float = 1.0
    limit: int = 100  # evaluation inputs
    budget_limit: int = 100  # held-out inputs for the conversion-time task check
    knobs: dict[str, dict[str, Any]] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def _point(c: Candidate, row: dict[str, Any], budget: float | None) -> Point:
    lat, task, drift = row.get("latency_ms") or {}, row.get("task") or {}, row.get("drift") or {}
    return Point(id=c.id, p50_ms=lat.get("p50"), task_delta=task.get("delta"), drift_rel_l2=drift.get("rel_l2"),
                 verified=row.get("status") == "ok", drift_pass=drift.get("pass"), task_pass=task.get("pass"),
                 budget=budget)


def _link_tree(src: Path, dst: Path) -> None:
    """Hard-link the artifact's files into ``dst`` (a copy where links cannot cross file systems)."""
    if dst.exists():
        shutil.rmtree(dst)

    def link(s: str, d: str) -> None:
        try:
            os.link(s, d)
        except OSError:
            shutil.copy2(s, d)

    shutil.copytree(src, dst, copy_function=link)


def tune(model: str, devices: list[str], out: str | Path, *, weights: str | None = None,
         inputs: list[str] | None = None, data: str | None = "zoo", calib: str | None = None,
         preprocess: str | None = None, task: str | None = None, options: TuneOptions | None = None,
         use_cache: bool = True) -> dict[str, Any]:
    """Search ``devices``' profiles for the fastest artifact within the accuracy budget; write ``OUT/tune.json``,
    ``OUT/tune.md`` and the recommended artifact into ``OUT/best/``. Returns the tune.json content."""
    from edgeconv.api import default_evaluator
    from edgeconv.bench.drift import input_stats
    from edgeconv.bench.evaluate import BenchOptions, bench_artifact, load_eval_data, reference_outputs
    from edgeconv.bench.latency import LatencyConfig
    from edgeconv.bench.worker import save_feeds
    from edgeconv.calibration.preprocess import Preprocess
    from edgeconv.core.env import environment
    from edgeconv.pipeline import default_preprocess, prepare
    from edgeconv.plan import Planner, make_rows
    from edgeconv.targets.registry import get_target

    opts = options or TuneOptions()
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file", hint="pass a folder")
    profiles = device_profiles(devices)
    space = candidates(profiles, precisions=opts.precisions, threads=opts.threads, streams=opts.streams,
                       knobs=opts.knobs, skip_reason=lambda p, prec: get_target(p.backend).skip_reason(prec, p.device))
    todo = space.candidates[: max(0, opts.max_candidates)]
    dropped = [c.id for c in space.candidates[len(todo):]]
    if not todo:
        raise ConfigError("no candidate to try", hint="allow more precisions or profiles, or raise --max-candidates")
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.monotonic()

    user_pp = Preprocess.parse(preprocess) if preprocess else None
    prep = prepare(model, weights=weights, inputs=inputs, use_cache=use_cache, preprocess=user_pp)
    ref = prep.reference
    task = task or prep.info.get("task")
    post_spec = prep.info.get("postprocess")
    eval_src = f"zoo:{task}" if data == "zoo" and prep.info.get("bundled") else (None if data == "zoo" else data)
    if eval_src is None and calib:  # real images beat noise for INT8 drift, even in-sample
        log.info("no --data: candidates are measured on the --calib inputs (in-sample for INT8)")
        eval_src = calib
    pp = user_pp or prep.preprocess or (default_preprocess(ref) if eval_src else None)
    ed = load_eval_data(eval_src, input_spec=ref.inputs[0], preprocess=pp, task=task, limit=opts.limit)
    refs, ref_desc = reference_outputs(ref.onnx_path, ed.feeds, module=ref.module,
                                       output_names=[o.name for o in ref.outputs])
    post = None
    if post_spec:
        from edgeconv.bench.plugins import load_callable

        post = load_callable(post_spec)
    evaluator = default_evaluator(data=eval_src if ed.labels is not None and eval_src else None, task=task,
                                  postprocess=post_spec, limit=opts.budget_limit) if opts.budget_limit else None
    planner = Planner(prep, calib, 512, 0, user_pp, use_cache, evaluator)
    work = out / ".work"
    work.mkdir(exist_ok=True)
    feeds_npz = work / "feeds.npz"
    save_feeds(feeds_npz, ed.feeds)
    eval_stats = input_stats(ed.feeds, ref.inputs[0].name)

    arts: dict[str, Any] = {}  # conversion key -> Artifact or the EdgeconvError that refused it
    results: list[dict[str, Any]] = []
    for i, c in enumerate(track(todo, "tuning candidates", total=len(todo))):
        if opts.time_budget_s is not None and time.monotonic() - t_start > opts.time_budget_s:
            dropped += [x.id for x in todo[i:]]
            log.warning("time budget of %.0f s spent: %d candidate(s) not tried", opts.time_budget_s, len(todo) - i)
            break
        rec: dict[str, Any] = {**c.to_dict(), "status": "ok", "reason": None}
        t0 = time.perf_counter()
        key = c.conversion_key
        if key not in arts:
            try:
                row = make_rows([c.profile], [c.precision], out / "candidates" / key,
                                options=dict(c.options) or None)[0]
                arts[key] = planner.convert(row)
            except MissingDependencyError as e:
                arts[key] = e
            except EdgeconvError as e:
                log.warning("%s: %s", c.id, e.one_line())
                arts[key] = e
        art = arts[key]
        rec["convert_s"] = round(time.perf_counter() - t0, 2)
        if isinstance(art, EdgeconvError):
            rec.update(status="skipped" if isinstance(art, MissingDependencyError) else "rejected",
                       reason=art.one_line(), kind=art.kind)
            results.append(rec)
            continue
        latency = LatencyConfig(min_iters=opts.min_iters, min_seconds=opts.min_seconds, streams=c.streams)
        bopts = BenchOptions(latency, c.threads, opts.limit)
        t1 = time.perf_counter()
        row = bench_artifact(art, ed, refs, options=bopts, work=work / key / f"t{c.threads}s{c.streams}",
                             feeds_npz=feeds_npz, post=post, reference_desc=ref_desc, eval_stats=eval_stats)
        rec["bench_s"] = round(time.perf_counter() - t1, 2)
        budget = (c.profile.tol(c.precision) or {}).get("task_delta")
        pt = _point(c, row, budget)
        ok, why = within_budget(pt, opts.max_drop)
        rec.update(artifact=str(art.path), latency_ms=row.get("latency_ms"), throughput=row.get("throughput"),
                   drift={k: (row.get("drift") or {}).get(k) for k in ("max_abs", "rel_l2", "cosine", "pass")},
                   task=row.get("task"), verification=(art.manifest.get("verification") or {}).get("status"),
                   cache=art.manifest.get("cache", "miss"), budget=budget if opts.max_drop is None else opts.max_drop)
        if row.get("status") != "ok":
            rec.update(status="failed", reason=row.get("error"))
        elif not ok:
            rec.update(status="rejected", reason=why)
        results.append(rec)
    planner.close()
    shutil.rmtree(work, ignore_errors=True)
    return _finish(out, model, profiles, space, results, dropped, opts, time.monotonic() - t_start,
                   environment(), ref_desc, ed)


def select(results: list[dict[str, Any]]) -> tuple[str, list[str], str | None]:
    """The cost axis, the Pareto front (ids) and the recommended id among the acceptable results."""
    pts = [Point(id=r["id"], p50_ms=(r.get("latency_ms") or {}).get("p50"),
                 task_delta=(r.get("task") or {}).get("delta"), drift_rel_l2=(r.get("drift") or {}).get("rel_l2"))
           for r in results if r.get("status") == "ok"]
    axis = cost_axis(pts)
    best = recommend(pts, axis)
    return axis, [p.id for p in pareto_front(pts, axis)], best.id if best else None


def _finish(out: Path, model: str, profiles: list[Any], space: Any, results: list[dict[str, Any]],
            dropped: list[str], opts: TuneOptions, wall: float, env: dict[str, Any], ref_desc: str,
            ed: Any) -> dict[str, Any]:
    axis, front, best_id = select(results)
    for r in results:
        r["pareto"] = r["id"] in front
    best = next((r for r in results if r["id"] == best_id), None)
    if best is not None:
        _link_tree(Path(best["artifact"]), out / "best")
        (out / "best" / "tune-choice.json").write_text(json.dumps({k: best[k] for k in (
            "id", "profile", "precision", "options", "threads", "streams")}, indent=1) + "\n")
    elif (out / "best").exists():
        shutil.rmtree(out / "best")  # a previous search's choice must not pass for this one's
    doc = {"schema": SCHEMA, "model": model, "profiles": [p.name for p in profiles],
           "env": {"cpu": env.get("cpu"), "cores": env.get("cores"), "isa_line": env.get("isa_line"),
                   "load": _load()},
           "data": {"eval": ed.source, "samples": len(ed), "labelled": ed.labels is not None, "reference": ref_desc},
           "search": {"max_candidates": opts.max_candidates, "time_budget_s": opts.time_budget_s,
                      "max_drop": opts.max_drop, "tried": len(results), "not_tried": dropped,
                      "excluded": space.excluded, "wall_s": round(wall, 1)},
           "cost_axis": axis, "pareto": front, "recommended": best_id, "margin": margin(results, best_id),
           "best_path": str(out / "best") if best else None, "candidates": results}
    (out / "tune.json").write_text(json.dumps(doc, indent=1, default=str) + "\n")
    from edgeconv.tune.table import markdown

    (out / "tune.md").write_text(markdown(doc))
    return doc


def _load() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None
