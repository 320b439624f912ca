"""``edgeconv run CONFIG.toml``: a model × targets × precisions matrix from a config file, into one report.

The reference is built once, the evaluation inputs and the reference outputs are made once, then every
target × precision is converted (verified by the pipeline; up to ``jobs`` rows at once, in forked workers) and,
once all conversions are done, benchmarked one row at a time in its own worker process.  A target that
fails to convert, to verify or to run becomes a ``failed`` row with its one-line error and the rest go on; a backend
that is not installed becomes ``skipped``.  With ``farm`` (``--farm local|ray://HOST:PORT``) the rows that name a
``device`` are measured on a Ray farm after the conversions (``edgeconv.devices.farm``: on the nodes advertising
``device:NAME``, one row at a time per device) and scored here like any device row.

Config (TOML; relative paths are relative to the config file)::

    [model]                       # source = "zoo:yolo"  — or —  model = "net.py:build", weights = "w.pth",
    source = "zoo:yolo"           # input = ["images:1x3x224x224"], output_names = [...], model_args = {...},
                                  # exporters = ["legacy"], name = "..."
    [data]
    eval = "zoo"                  # zoo | zoo:detection | DIR | omitted (random inputs: drift only)
    calib = "calibration/shapes"  # int8 calibration (default: the bundled model's)
    preprocess = "size=256x256"   # or a table; default: the bundled model's / the artifact's
    task = "detection"            # a task spec: detection | classification | ctc:... | segmentation:... (docs/tasks.md)
    postprocess = "mod:fn"        # decoder plug-in (default: the bundled model's)
    limit = 100                   # evaluation inputs
    [[targets]]
    profile = "openvino"
    precisions = ["fp32", "int8"]
    threads = 2                   # optional: overrides [bench].threads and the profile
    [bench]
    min_iters = 50
    min_seconds = 2.0
    threads = 0                   # 0/omitted: the profile's threads
    streams = 0                   # throughput mode when > 1
    [compare]
    fail_on = "regression,drift,error"
    min_effect = 0.05
"""

from __future__ import annotations

import dataclasses
import functools
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edgeconv.bench import compare as cmp
from edgeconv.bench.evaluate import (
    BenchOptions,
    add_latency,
    bench_artifact,
    failed_row,
    load_eval_data,
    reference_outputs,
)
from edgeconv.bench.report import load_report, make_report, write_all
from edgeconv.bench.worker import save_feeds
from edgeconv.calibration.preprocess import Preprocess
from edgeconv.core.console import log, track
from edgeconv.core.errors import ConfigError, EdgeconvError, MissingDependencyError
from edgeconv.core.files import read_structured
from edgeconv.export.onnx_export import EXPORTERS

_SECTIONS = {"model", "data", "targets", "bench", "compare", "name"}
_MODEL_KEYS = {"source", "model", "weights", "input", "inputs", "output_names", "model_args", "name", "opset",
               "trust_checkpoint", "simplify", "exporters"}
_DATA_KEYS = {"eval", "calib", "calib_size", "calib_seed", "preprocess", "task", "postprocess", "limit",
              "allow_overlap", "budget_limit"}
_TARGET_KEYS = {"profile", "precisions", "threads", "options", "keep_fp32", "postprocess", "post_options", "device"}


def load_config(path: str | Path) -> dict[str, Any]:
    """Read and validate a run config; relative paths are resolved against the config's folder."""
    path = Path(path)
    cfg = read_structured(path, "config")
    cfg["_base_dir"] = str(path.resolve().parent)
    validate_config(cfg)
    return cfg


def validate_config(cfg: dict[str, Any]) -> None:
    if not isinstance(cfg, dict):
        raise ConfigError("config: a run config is a table of sections ([model], [data], [[targets]], ...)")
    for sec in ("model", "data", "bench", "compare"):
        if sec in cfg and not isinstance(cfg[sec], dict):
            raise ConfigError(f"config: [{sec}] must be a table, not {type(cfg[sec]).__name__}")
    if "targets" in cfg and (not isinstance(cfg["targets"], list) or
                             not all(isinstance(t, dict) for t in cfg["targets"])):
        raise ConfigError("config: targets must be a list of [[targets]] tables")
    for t in cfg.get("targets") or []:
        if "profile" in t and not isinstance(t["profile"], str):
            raise ConfigError("config: [[targets]] profile must be a string (a profile name or .toml path)")
        if "precisions" in t and not (isinstance(t["precisions"], list)
                                      and all(isinstance(x, str) for x in t["precisions"])):
            raise ConfigError("config: [[targets]] precisions must be a list of strings, e.g. [\"fp32\", \"int8\"]")
    unknown = set(cfg) - _SECTIONS - {"_base_dir"}
    if unknown:
        raise ConfigError(f"config: unknown section(s) {sorted(unknown)}", hint=f"known: {sorted(_SECTIONS)}")
    model = cfg.get("model") or {}
    if not (model.get("source") or model.get("model")):
        raise ConfigError("config: [model] needs source = \"zoo:NAME\" or model = \"FILE.py:FACTORY\" (or .onnx)")
    for sec, keys in (("model", _MODEL_KEYS), ("data", _DATA_KEYS)):
        bad = set(cfg.get(sec) or {}) - keys
        if bad:
            raise ConfigError(f"config: unknown key(s) {sorted(bad)} in [{sec}]", hint=f"known: {sorted(keys)}")
    targets = cfg.get("targets")
    if not targets or not isinstance(targets, list):
        raise ConfigError("config: at least one [[targets]] entry with profile = \"...\" is needed")
    for t in targets:
        if "profile" not in t:
            raise ConfigError("config: every [[targets]] needs profile = \"NAME\" (or a .toml path)")
        bad = set(t) - _TARGET_KEYS
        if bad:
            raise ConfigError(f"config: unknown key(s) {sorted(bad)} in [[targets]]",
                              hint=f"known: {sorted(_TARGET_KEYS)}")


def _path(base: Path, v: str | None) -> str | None:
    if v is None or v.startswith("zoo") or Path(v).is_absolute():
        return v
    cand = base / v
    return str(cand) if cand.exists() or not Path(v).exists() else v


def _model_path(base: Path, v: str) -> str:
    """FILE.py:FACTORY and FILE.onnx are paths; MODULE:FACTORY and zoo:NAME are not."""
    if v.startswith("zoo:"):
        return v
    target, sep, attr = v.rpartition(":") if ".py:" in v else (v, "", "")
    if target.endswith(".py") or target.endswith((".onnx", ".pt", ".pt2", ".ts")):
        resolved = _path(base, target) or target
        return f"{resolved}{sep}{attr}"
    return v


def _preprocess(v: Any) -> Preprocess | None:
    if v is None:
        return None
    if isinstance(v, dict):
        return Preprocess.from_dict(v)
    return Preprocess.parse(str(v))


def run_matrix(config: dict[str, Any], out: str | Path, baseline: str | Path | dict[str, Any] | None = None, *,
               fail_on: tuple[str, ...] | str | None = None, use_cache: bool = True,
               keep_artifacts: bool = True, dry_run: bool = False,
               tolerances: dict[str, dict[str, float]] | None = None, farm: str | None = None,
               jobs: int | None = None) -> dict[str, Any]:
    """Convert and benchmark every target × precision of ``config``; write the four report files into ``out``.

    With ``baseline`` (a report dict or a report.json path) the report is compared and annotated; the returned
    report's ``comparison.failures`` lists the ``fail_on`` conditions that hold (the CLI exits non-zero on them).
    With ``farm`` the rows with a ``device`` are benchmarked on that Ray farm (see the module's docstring).
    ``jobs``: rows converted at once before the benchmarks (default: one per core, bounded by memory).
    """
    if farm is not None:
        from edgeconv.devices.farm import check_farm

        farm = check_farm(farm)
    from edgeconv.core import cache
    from edgeconv.pipeline import default_preprocess, prepare
    from edgeconv.profiles import load_profile

    with cache.disabled(not use_cache):
        return _run_matrix(config, out, baseline, fail_on=fail_on, use_cache=use_cache, keep_artifacts=keep_artifacts,
                           dry_run=dry_run, tolerances=tolerances, prepare=prepare, load_profile=load_profile,
                           default_preprocess=default_preprocess, farm=farm, jobs=jobs)


def _verification_summary(art: Any) -> dict[str, Any] | None:
    """What conversion-time verification checked, for the report row (task budget included)."""
    v = art.manifest.get("verification") or {}
    if not v:
        return None
    return {"status": v.get("status"), "inputs": v.get("inputs"), "task": v.get("task"),
            "task_checked": v.get("task_checked", False), "drift": v.get("drift")}


def _finish_row(row_out: dict[str, Any], *, art: Any, convert_s: float, t_bench: float | None = None) -> dict[str, Any]:
    """The row fields that come from the artifact and the wall clock, once measured and scored."""
    if art.manifest.get("postprocess"):
        row_out["postprocess"] = art.manifest["postprocess"].get("placement")
        if row_out.get("drift") and art.manifest["postprocess"].get("stage") in ("detections", "candidates"):
            # Near-tied boxes swap places after NMS/top-K: tensor drift on the contract's rows measures their
            # order, not the model. Detections were matched by IoU at conversion; the task metric is here.
            row_out["drift"]["pass"] = None
            for c in row_out["drift"].get("checks") or []:
                c["pass"] = None
            row_out["drift"]["note"] = "not judged on NMS output order: detections matched by IoU at conversion"
            row_out.setdefault("checks", {})["drift"] = None
        row_out["profile"] = f"{row_out['profile']}+end2end"
    row_out["wall_seconds"] = {"convert": round(convert_s, 2), "cache": art.manifest.get("cache", "miss"),
                               "bench": None if t_bench is None else round(time.perf_counter() - t_bench, 2)}
    row_out["verification"] = _verification_summary(art)
    log.info("%s %s: %s%s", row_out.get("profile"), row_out.get("precision"), row_out["status"],
             f" p50 {row_out['latency_ms']['p50']:.3g} ms" if row_out.get("latency_ms") else "")
    return row_out


def _bench_local(local: list[tuple[int, Callable[..., dict[str, Any]], Callable[..., dict[str, Any]], Any, Path,
                                  BenchOptions]], jobs: int, feeds_npz: Path) -> list[tuple[int, dict[str, Any]]]:
    """Benchmark host rows in two passes: the accuracy passes (every evaluation input through the artifact, then
    drift and the task metric here) ``jobs`` rows at a time, since no clock is read there; then each row's latency
    alone, in a worker of its own, on a machine nobody else is using. The numbers are those of one row at a time:
    the protocol's timed runs never share the CPU with another row."""
    from concurrent.futures import ThreadPoolExecutor

    if not local:
        return []
    took: dict[int, float] = {}

    def accuracy(item: tuple[int, Any, Any, Any, Path, BenchOptions]) -> dict[str, Any]:
        t0 = time.perf_counter()
        try:
            return item[1](accuracy_only=True)
        finally:
            took[item[0]] = time.perf_counter() - t0

    scored: list[dict[str, Any]] = []
    with ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="edgeconv-bench") as pool:
        for row_out in track(pool.map(accuracy, local), f"benchmarking targets (accuracy, {jobs} at a time)",
                             total=len(local)):
            scored.append(row_out)
    out = []
    for (slot, _, done, art, row_work, opts), row_out in track(list(zip(local, scored)), "benchmarking targets "
                                                                "(latency, one at a time)", total=len(local)):
        t1 = time.perf_counter()
        row_out = add_latency(row_out, art, feeds_npz, row_work, options=opts)
        row_out = done(row_out, t_bench=t1)
        if row_out.get("wall_seconds", {}).get("bench") is not None:  # both passes' own time, not the waiting
            row_out["wall_seconds"]["bench"] = round(row_out["wall_seconds"]["bench"] + took[slot], 2)
        out.append((slot, row_out))
    return out


def _farm_row(art: Any, device: str, feeds_npz: Path, opts: BenchOptions, index: int) -> Any:
    """The farm's job for one row: the same threads and latency settings ``bench_artifact`` would use."""
    from edgeconv.bench.evaluate import profile_from_manifest
    from edgeconv.devices import load_device
    from edgeconv.devices.farm import FarmRow

    threads = opts.threads if opts.threads is not None else (profile_from_manifest(art.manifest).threads or None)
    return FarmRow(f"row{index}", load_device(device), art.path, feeds_npz, opts.latency.to_dict(), threads)


def _run_matrix(config: dict[str, Any], out: str | Path, baseline: Any, *, fail_on: Any, use_cache: bool,
                keep_artifacts: bool, dry_run: bool, tolerances: Any, prepare: Any, load_profile: Any,
                default_preprocess: Any, farm: str | None = None, jobs: int | None = None) -> dict[str, Any]:

    validate_config(config)
    base = Path(config.get("_base_dir", "."))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    mcfg, dcfg, bcfg = config.get("model") or {}, config.get("data") or {}, config.get("bench") or {}
    options = BenchOptions.from_dict(bcfg)
    if bcfg.get("threads") == 0:
        options.threads = None
    options.limit = int(dcfg.get("limit", options.limit))
    user_pp = _preprocess(dcfg.get("preprocess"))
    model_spec = _model_path(base, mcfg.get("source") or mcfg["model"])
    inputs = mcfg.get("input") or mcfg.get("inputs")
    prep = prepare(model_spec, weights=_path(base, mcfg.get("weights")), model_args=mcfg.get("model_args"),
                   inputs=[inputs] if isinstance(inputs, str) else inputs, output_names=mcfg.get("output_names"),
                   opset=int(mcfg.get("opset", 17)), exporters=tuple(mcfg.get("exporters") or EXPORTERS),
                   simplify=bool(mcfg.get("simplify", True)),
                   trust_checkpoint=bool(mcfg.get("trust_checkpoint", False)), use_cache=use_cache,
                   preprocess=user_pp)
    ref = prep.reference
    task = dcfg.get("task") or prep.info.get("task")
    post_spec = dcfg.get("postprocess") or prep.info.get("postprocess")
    pp = user_pp or prep.preprocess
    eval_src = dcfg.get("eval")
    if eval_src == "zoo" and prep.info.get("bundled"):
        eval_src = f"zoo:{task}"
    eval_src = _path(base, eval_src)
    if pp is None and eval_src is not None:
        pp = default_preprocess(ref)
    data = load_eval_data(eval_src, input_spec=ref.inputs[0], preprocess=pp, task=task, limit=options.limit)
    refs, ref_desc = reference_outputs(ref.onnx_path, data.feeds, module=ref.module,
                                       output_names=[o.name for o in ref.outputs], kind=options.reference)
    post = None
    if post_spec:
        from edgeconv.bench.plugins import load_callable

        post = load_callable(post_spec)
    from edgeconv.bench.drift import input_stats

    eval_stats = input_stats(data.feeds, ref.inputs[0].name)
    work = out / ".work"
    work.mkdir(exist_ok=True)
    feeds_npz = work / "feeds.npz"
    save_feeds(feeds_npz, data.feeds)
    from edgeconv.api import default_evaluator
    from edgeconv.plan import Planner, make_rows

    budget = dcfg.get("budget_limit", 100)
    planner = Planner(prep, _path(base, dcfg.get("calib")), int(dcfg.get("calib_size", 512)),
                      int(dcfg.get("calib_seed", 0)), user_pp, use_cache,
                      default_evaluator(data=eval_src if data.labels is not None and eval_src else None, task=task,
                                        postprocess=post_spec, limit=int(budget)) if budget else None)
    planners: dict[str, Planner] = {}

    def planner_for(t: dict[str, Any]) -> Planner:
        """One planner per detections placement (raw heads, or end2end with its contract options)."""
        mode = t.get("postprocess") or "raw"
        key = f"{mode}:{sorted((t.get('post_options') or {}).items())}"
        if mode == "raw":
            return planner
        if key not in planners:
            planners[key] = dataclasses.replace(planner, postprocess={"end2end": "auto"}.get(mode, mode),
                                                postprocess_options=dict(t.get("post_options") or {}),
                                                _calibrations=planner._calibrations, _evaluators=planner._evaluators,
                                                _end2end={})
        return planners[key]

    e2e_refs: dict[str, list[dict[str, Any]]] = {}
    rows: list[dict[str, Any]] = []
    on_farm: dict[int, tuple[Any, Callable[[], dict[str, Any]]]] = {}  # row index -> (FarmRow, measure + finish)
    planned: list[tuple[int, dict[str, Any], Any, Any]] = []  # (slot in rows, target config, profile, plan row)
    for t, precision in [(tc, p) for tc in config["targets"] for p in (tc.get("precisions") or [None])]:
        name = t["profile"]
        try:
            profile = load_profile(_path(base, name) if name.endswith(".toml") else name)
            name = profile.name
            # on a farm the device is reached from its node, not from here: its drift is the farm row's own
            row_opts = {**(t.get("options") or {}), **({"device": t["device"]} if t.get("device") and not farm else {})}
            row = make_rows([profile], [precision] if precision else None, out / "artifacts",
                            keep_fp32=tuple(t.get("keep_fp32", ())), options=row_opts or None,
                            tolerances=tolerances)[0]
        except EdgeconvError as e:
            rows.append(failed_row(name, precision or "?", None, e.one_line(), stage="config",
                                   status="skipped" if isinstance(e, MissingDependencyError) else "failed"))
            continue
        from edgeconv.targets.registry import get_target

        why = get_target(profile.backend).skip_reason(row.precision, profile.device)
        if why:
            rows.append(failed_row(profile.name, row.precision, profile.backend, why, status="skipped", stage="plan"))
            continue
        if (t.get("postprocess") or "raw") != "raw":  # its own folder and row name beside the raw-heads row
            row.dest = row.dest.with_name(f"{row.dest.name}-end2end")
        if dry_run:
            rows.append({"target": profile.backend, "profile": profile.name, "precision": row.precision,
                         "status": "planned", "error": None, "plan": planner.describe(row)})
            continue
        planned.append((len(rows), t, profile, row))
        rows.append({})
    from edgeconv.plan import convert_planned

    converted = {} if dry_run else convert_planned([(slot, planner_for(t), row) for slot, t, _, row in planned],
                                                   eval_files=data.files,
                                                   allow_overlap=bool(dcfg.get("allow_overlap")), jobs=jobs)
    from edgeconv.plan import default_jobs

    n_local = sum(1 for _, t, _, _ in planned if not t.get("device"))
    bench_jobs = min(jobs or default_jobs(n_local), n_local) if n_local > 1 else 1
    local: list[tuple[int, Callable[..., dict[str, Any]], Callable[..., dict[str, Any]], Any, Path, BenchOptions]] = []
    for slot, t, profile, row in track(planned, "benchmarking targets", total=len(planned)) if bench_jobs <= 1 \
            else planned:
        precision = row.precision
        art, convert_s = converted[slot]
        if isinstance(art, EdgeconvError):
            rows[slot] = failed_row(profile.name, precision, profile.backend, art.one_line(),
                                    status="skipped" if isinstance(art, MissingDependencyError) else "failed",
                                    stage=art.stage or "convert")
            continue
        vstatus = (art.manifest.get("verification") or {}).get("status")
        if vstatus == "not-executed":
            note = (art.manifest.get("verification") or {}).get("note") or "converted, not executed here"
            rows[slot] = failed_row(profile.name, precision, profile.backend, note, status="skipped", stage="bench")
            continue
        opts = options
        if t.get("threads") is not None:
            opts = BenchOptions(options.latency, t["threads"] or None, options.limit, options.timeout,
                                options.reference)
        t1 = time.perf_counter()
        row_refs, row_post, row_desc = refs, post, ref_desc
        if art.manifest.get("postprocess"):  # end2end: compare with the end2end reference, decode with its files
            from edgeconv import postprocess as detpost
            from edgeconv.bench.evaluate import reference_outputs as ref_outputs

            rsha = art.manifest["reference"]["sha256"]
            if rsha not in e2e_refs:
                e2e_refs[rsha] = ref_outputs(art.reference_onnx, data.feeds, kind="onnx")[0]
            row_refs, row_post = e2e_refs[rsha], detpost.harness_postprocess(art.path)
            row_desc = f"end2end reference.onnx ({art.manifest['postprocess']['placement']['stage']})"
        row_work = work / f"{profile.name}-{precision}"
        bench = functools.partial(bench_artifact, art, data, row_refs, options=opts, work=row_work,
                                  feeds_npz=feeds_npz, post=row_post, reference_desc=row_desc, eval_stats=eval_stats,
                                  device=t.get("device"))
        done = functools.partial(_finish_row, art=art, convert_s=convert_s)
        if farm and t.get("device"):  # measured on the farm after the conversions, scored the same way
            on_farm[slot] = (_farm_row(art, t["device"], feeds_npz, opts, slot),
                             lambda bench=bench, done=done: done(bench()))
            continue
        if not t.get("device") and bench_jobs > 1:
            local.append((slot, bench, done, art, row_work, opts))
            continue
        rows[slot] = done(bench(), t_bench=t1)
    for slot, row_out in _bench_local(local, bench_jobs, feeds_npz):
        rows[slot] = row_out
    if on_farm:
        from edgeconv.devices.farm import score_on_farm

        for i, row_out in zip(on_farm, score_on_farm(list(on_farm.values()), farm=farm, timeout=options.timeout)):
            rows[i] = row_out
            row_out["wall_seconds"]["bench"] = (row_out.get("farm") or {}).get("seconds")  # the node's own time
    if dry_run:
        shutil.rmtree(work, ignore_errors=True)
        return {"schema": "edgeconv.plan/1", "model": {"source": str(model_spec), "sha256": ref.sha256},
                "plan": [r.get("plan") or {"profile": r.get("profile"), "error": r.get("error")} for r in rows]}
    for pl in planners.values():
        pl.close()
    if not keep_artifacts:
        shutil.rmtree(out / "artifacts", ignore_errors=True)
    shutil.rmtree(work, ignore_errors=True)
    model_name = mcfg.get("name") or config.get("name") or prep.info.get("bundled") or \
        Path(str(model_spec).split(":")[0]).stem
    report = make_report(rows, model={"name": model_name, "sha256": ref.sha256, "source": str(model_spec),
                                      "task": task},
                         reference=ref_desc, bench={**options.latency.to_dict(), "threads": options.threads,
                                                    "limit": options.limit, "timeout": options.timeout},
                         data={"eval": data.source, "samples": len(data), "task": task, "postprocess": post_spec,
                               "labelled": data.labels is not None,
                               "preprocess": pp.to_dict() if pp else None, "input_stats": eval_stats})
    if baseline is not None:
        base_rep = baseline if isinstance(baseline, dict) else load_report(baseline)
        ccfg = config.get("compare") or {}
        names = cmp.parse_fail_on(fail_on if fail_on is not None else ccfg.get("fail_on", "regression,drift,error"))
        c = cmp.compare_reports(report, base_rep, min_effect=float(ccfg.get("min_effect", cmp.DEFAULT_MIN_EFFECT)))
        cmp.annotate(report, c, names, None if isinstance(baseline, dict) else str(baseline))
    elif fail_on:
        names = cmp.parse_fail_on(fail_on)
        c = cmp.compare_reports(report, {"results": []})
        cmp.annotate(report, c, names, None)
    write_all(report, out)
    return report
