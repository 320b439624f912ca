"""One plan for ``convert``, ``run`` and ``demo``: model × targets × precisions, with calibration and preprocessing
resolved per profile, validated before anything slow runs, executed through one path.

Each ``PlanRow`` says what one artifact will be made from; ``Planner`` memoizes what rows share (calibration sets
per data × contract × size × seed), so two rows with the same inputs get the same calibration, whichever command
asked for them. ``--dry-run`` prints the rows and whether each would be a cache hit, converting nothing. Rows
convert up to ``jobs`` at once in forked workers; an INT8 row over its budget is repaired here (float fallback).
The fast path for unchanged inputs lives in ``edgeconv.fastpath``.

(Over 400 lines on purpose: the Planner's steps — calibration, evaluators, end2end references, lint, parallel
conversion, repair — share its memo state, which a split would have to pass around.)
"""

from __future__ import annotations

import dataclasses
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeconv.calibration.dataset import CalibrationSet
from edgeconv.calibration.preprocess import Preprocess
from edgeconv.core import cache
from edgeconv.core.artifact import Artifact, check_out_dir, safe_child
from edgeconv.core.console import log, plain_progress, track
from edgeconv.core.errors import ConfigError, ConversionError, EdgeconvError, VerificationError
from edgeconv.pipeline import (
    Prepared,
    artifact_key,
    build_context,
    contract_for,
    convert_reference,
    make_calibration,
)
from edgeconv.profiles import PRECISIONS, TOLERANCE_KEYS, Profile, load_profile
from edgeconv.targets.base import TaskEvaluator
from edgeconv.targets.registry import get_target

EvaluatorFactory = Callable[[Prepared, Preprocess | None, CalibrationSet | None], TaskEvaluator | None]


@dataclass
class PlanRow:
    """One artifact to make: a profile at a precision, into ``dest``, with its own options."""

    profile: Profile
    precision: str
    dest: Path
    keep_fp32: tuple[str, ...] = ()
    options: dict[str, Any] = field(default_factory=dict)
    threads: int | None = None  # benchmark override (run configs)

    @property
    def label(self) -> str:
        return f"{self.profile.name}-{self.precision}"


def with_tolerances(profile: Profile, tolerances: dict[str, dict[str, float]] | None) -> Profile:
    """The profile with command-line tolerance overrides merged in (``--tol int8.cosine=0.98``)."""
    if not tolerances:
        return profile
    merged = {p: dict(v) for p, v in profile.tolerance.items()}
    for prec, table in tolerances.items():
        if prec not in PRECISIONS or not isinstance(table, dict):
            raise ConfigError(f"--tol: unknown precision '{prec}'", hint=f"use one of {list(PRECISIONS)}")
        for k, v in table.items():
            if k not in TOLERANCE_KEYS:
                raise ConfigError(f"--tol: unknown tolerance '{k}'", hint=f"one of {', '.join(TOLERANCE_KEYS)}")
            merged.setdefault(prec, {})[k] = float(v)
    return dataclasses.replace(profile, tolerance=merged)


def make_rows(targets: list[str | Profile], precisions: list[str] | None, out: str | Path, *,
              keep_fp32: tuple[str, ...] = (), options: dict[str, Any] | None = None,
              tolerances: dict[str, dict[str, float]] | None = None) -> list[PlanRow]:
    """Validate every target, precision and option *before* the model is loaded; one row per artifact. A target
    × precision without a route is a config error (``plan_rows`` skips it instead)."""
    rows, skipped = plan_rows(targets, precisions, out, keep_fp32=keep_fp32, options=options, tolerances=tolerances)
    if skipped:
        raise skipped[0][1]
    return rows


def plan_rows(targets: list[str | Profile], precisions: list[str] | None, out: str | Path, *,
              keep_fp32: tuple[str, ...] = (), options: dict[str, Any] | None = None,
              tolerances: dict[str, dict[str, float]] | None = None
              ) -> tuple[list[PlanRow], list[tuple[tuple[str, str], ConfigError]]]:
    """``make_rows`` for a product of targets and precisions: a combination a target has no route for (``-t opencv
    -t ncnn -p fp32 -p int8``: OpenCV has no int8) is returned apart as ``((profile, precision), error)``, so the
    other rows are still converted; every other mistake still raises before anything is loaded."""
    skipped: list[tuple[tuple[str, str], ConfigError]] = []
    if not targets:
        raise ConfigError("no target given", hint="pass --target NAME (see `edgeconv targets`)")
    rows: list[PlanRow] = []
    out = Path(out)
    for t in targets:
        profile = with_tolerances(t if isinstance(t, Profile) else load_profile(str(t)), tolerances)
        backend = get_target(profile.backend)
        backend.check_options(dict(profile.options), f"profile {profile.path or profile.name} [options]")
        backend.check_options({k: v for k, v in (options or {}).items() if v is not None}, "--option")
        for precision in precisions or [profile.precision]:
            if precision not in PRECISIONS:
                raise ConfigError(f"unknown precision '{precision}'", hint=f"use one of {list(PRECISIONS)}")
            if precision not in backend.precisions or precision not in profile.precisions:
                allowed = [p for p in backend.precisions if p in profile.precisions]
                skipped.append(((profile.name, precision),
                                ConfigError(f"target '{profile.name}' has no {precision} route", target=profile.name,
                                            hint=f"precisions: {', '.join(allowed)}")))
                continue
            dest = safe_child(out, f"{profile.name}-{precision}")
            check_out_dir(out, replace=dest)
            rows.append(PlanRow(profile, precision, dest, tuple(keep_fp32), dict(options or {})))
    labels = [r.label for r in rows]
    dup = sorted({x for x in labels if labels.count(x) > 1})
    if dup:
        raise ConfigError(f"two rows would write the same folder: {', '.join(dup)}",
                          hint="give each target once (or give copies of a profile different names)")
    return rows, skipped


@dataclass
class Planner:
    """Executes rows against one prepared reference; calibration sets are shared between rows that agree."""

    prep: Prepared
    calib: str | Path | None = None
    calib_size: int = 512
    calib_seed: int = 0
    preprocess: Preprocess | None = None  # the user's contract (overrides profiles')
    use_cache: bool = True
    evaluator_factory: EvaluatorFactory | None = None
    #: Detections end to end: a placement mode ("auto", "graph", "decode", "beside"; None = raw heads) and the
    #: contract's options (max_det, score_threshold, iou_threshold, class_agnostic, head, strides, ...).
    postprocess: str | None = None
    postprocess_options: dict[str, Any] = field(default_factory=dict)
    _calibrations: dict[tuple[Any, ...], CalibrationSet] = field(default_factory=dict)
    _end2end: dict[str, Any] = field(default_factory=dict)
    _lints: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    _evaluators: dict[str, TaskEvaluator | None] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)  # row label -> wall time of its conversion

    def __post_init__(self) -> None:
        # The user's --calib images are real inputs for every row's verification, fp32 and fp16 included (they
        # were judged on generated and noise inputs only: a face detector's end2end fp32 row "passed" its
        # detection check on two synthetic images holding no detection at all).
        if self.calib is not None and self.prep.calib_dir is None and Path(self.calib).is_dir():
            self.prep = dataclasses.replace(self.prep, calib_dir=Path(self.calib))

    def contract(self, row: PlanRow) -> Preprocess | None:
        return contract_for(self.prep, row.profile, self.preprocess)

    def calibration(self, row: PlanRow) -> CalibrationSet | None:
        """The row's calibration set (None for precisions that need none); one per data × contract × size."""
        backend = get_target(row.profile.backend)
        if row.precision not in backend.calibrated:
            return None
        pp = self.contract(row)
        key = (str(self.calib), pp.sha256 if pp else None, self.calib_size, self.calib_seed)
        if key not in self._calibrations:
            self._calibrations[key] = make_calibration(self.prep, self.calib, size=self.calib_size,
                                                       seed=self.calib_seed, preprocess=pp)
        return self._calibrations[key]

    def evaluator(self, row: PlanRow, calibration: CalibrationSet | None) -> TaskEvaluator | None:
        """The held-out task evaluator for reduced-precision rows (shared by rows with the same contract)."""
        if self.evaluator_factory is None or row.precision == "fp32":
            return None
        pp = self.contract(row)
        k = pp.sha256 if pp else ""
        if k not in self._evaluators:
            self._evaluators[k] = self.evaluator_factory(self.prep, pp, calibration)
        return self._evaluators[k]

    def end2end_evaluator(self, row: PlanRow, calibration: CalibrationSet | None, prep: Prepared,
                          post: dict[str, Any]) -> TaskEvaluator | None:
        """The detection metric of a reduced-precision end2end row whose graph ends in the contract: its outputs
        are detections already, so the metric reads them as they are (``contract_detections``) instead of
        decoding raw heads; a row whose graph stays raw (ncnn, MNN) gets the model's own metric. Without them such
        rows were held only to detection agreement with fp32's bar (the bundled detector's ORT INT8 end2end:
        refused at 0.954 matched, where its mAP50-95 moves -0.18) or to nothing but tensors."""
        if post.get("stage") == "raw":  # the graph is the raw model (ncnn, MNN): decoded as without end2end
            return self.evaluator(row, calibration)
        if self.evaluator_factory is None or row.precision == "fp32" or post.get("stage") != "detections":
            return None
        pp = self.contract(row)
        key = f"end2end:{prep.reference.sha256}:{pp.sha256 if pp else ''}"
        if key not in self._evaluators:
            info = {**(prep.info or {}), "task": "detection",
                    "postprocess": "edgeconv.postprocess.verify:contract_detections"}
            self._evaluators[key] = self.evaluator_factory(dataclasses.replace(prep, info=info), pp, calibration)
        return self._evaluators[key]

    def postprocess_spec(self) -> Any:
        """The model's decode + NMS contract, derived once for every row (None without ``--postprocess``). A model
        it cannot be derived for is the request's error, raised here once, not one identical failure per row."""
        if not self.postprocess:
            return None
        if "spec" not in self._end2end:
            from edgeconv import postprocess as pp

            self._end2end["spec"] = pp.spec_for(self.prep, **self.postprocess_options)
        return self._end2end["spec"]

    def end2end(self, row: PlanRow) -> tuple[Prepared, dict[str, Any] | None, tuple[str, ...]]:
        """The reference this row converts (end2end where asked), its contract record and INT8 keep-float nodes."""
        if not self.postprocess:
            return self.prep, None, ()
        import tempfile

        from edgeconv import postprocess as pp

        backend = get_target(row.profile.backend)
        model_spec = self.postprocess_spec()
        place = pp.plan_postprocess(backend.name, model_spec, mode=self.postprocess,
                                    capabilities=backend.capabilities)
        spec = pp.effective_spec(model_spec, place)
        memo = f"{place.stage}/{place.nms}/{place.torch_wrapper}/{place.tensorrt}"
        if memo not in self._end2end:
            work = self._end2end.get("work") or tempfile.mkdtemp(prefix="edgeconv-e2e-")
            self._end2end["work"] = work
            e2e = pp.end2end_reference(self.prep, spec, place, work)
            keep = pp.int8_keep_fp32(e2e.reference.onnx_path, spec) if place.nms is not None else ()
            self._end2end[memo] = (e2e, keep)
        e2e, keep = self._end2end[memo]
        record = {"spec": spec.to_dict(), "placement": place.to_dict(), "stage": place.stage}
        return e2e, record, (keep if row.precision in backend.calibrated else ())

    def close(self) -> None:
        import shutil

        if self._end2end.get("work"):
            shutil.rmtree(self._end2end["work"], ignore_errors=True)

    def lint(self, prep: Prepared, cal: CalibrationSet) -> list[dict[str, Any]]:
        """The pre-quantization lint (``edgeconv lint``) of a reference, once per reference × calibration set:
        each finding is logged as a warning naming the layer and the --keep-fp32 or preprocessing change to try."""
        key = f"{prep.reference.sha256}:{cal.key}"
        if key not in self._lints:
            from edgeconv.calibration.stats import compute_stats
            from edgeconv.core.console import log

            try:
                from edgeconv.lint import lint
            except ImportError:
                self._lints[key] = []
                return []
            ref = prep.reference
            stats = compute_stats(ref.onnx_path, ref.sha256, cal, "minmax", None, use_cache=self.use_cache)
            # findings are named from the file (node scopes, weight names): a warning needs no dynamo re-export,
            # which costs YOLO11n ~18 CPU s on 2 cores; the float-fallback search, which keeps layers by name,
            # makes (and caches) the precise map when it runs
            found = lint(ref.onnx_path, stats.ranges, len(cal))
            for f in found:
                log.warning("int8 lint [%s]: %s%s", f.rule, f.message, f" ({f.suggestion})" if f.suggestion else "")
            self._lints[key] = [f.to_dict() for f in found]
        return self._lints[key]

    def convert(self, row: PlanRow) -> Artifact:
        cal = self.calibration(row)
        prep, post, keep = self.end2end(row)
        findings = self.lint(prep, cal) if cal is not None and post is None else None
        keep_fp32 = tuple(dict.fromkeys((*row.keep_fp32, *keep)))
        evaluator = self.evaluator(row, cal) if post is None else self.end2end_evaluator(row, cal, prep, post)
        try:
            art = convert_reference(prep, row.profile, out=row.dest, precision=row.precision, calibration=cal,
                                    keep_fp32=keep_fp32, options=row.options, use_cache=self.use_cache,
                                    preprocess=self.contract(row), evaluator=evaluator, postprocess=post)
        except VerificationError as e:
            task = getattr(e, "task", None) or {}
            over = task.get("budget") is not None and task.get("delta") is not None and \
                task["delta"] < -task["budget"]
            if cal is None or not row.options.get("int8_fallback", True) or post is not None:
                raise
            if over and evaluator is not None:
                art = self.repair(row, prep, cal, evaluator, keep_fp32, e)
            elif not over and _cosine_failed(e, row.profile.tol(row.precision).get("cosine")):
                # No task metric to hold it to: the same search, with the worst-case cosine on real inputs as the
                # objective (its budget is the profile's cosine tolerance).
                cos = float(row.profile.tol(row.precision)["cosine"])
                art = self.repair(row, prep, cal, drift_evaluator(prep, cal), keep_fp32, e,
                                  budget=100.0 * (1.0 - cos), final_evaluator=evaluator)
            else:
                raise
        if findings is not None:  # what the lint said before quantizing travels with the artifact and its report
            from edgeconv.core.artifact import write_manifest

            art.manifest["lint"] = findings
            write_manifest(art.path, art.manifest)
        return art

    def convert_many(self, rows: list[PlanRow], jobs: int = 1, *, catch_all: bool = False
                     ) -> list[Artifact | EdgeconvError]:
        """Convert ``rows``, up to ``jobs`` at once in forked worker processes; each row's artifact or its error
        (never raised), in row order. A row's error is only its own: the others go on. ``seconds`` then holds each
        row's wall time (conversion + verification, or the cache hit). ``catch_all``: an exception that is not an
        edgeconv error (a backend bug) becomes that row's ConversionError instead of propagating.

        What the rows share is made once here first (calibration sets and their content hashes, held-out
        evaluators, end2end references, the INT8 lint), so the workers inherit it instead of each rebuilding it.
        With ``jobs`` 1, or when a backend whose thread pools do not survive a fork is already loaded in this
        process, the rows run one after another in this process.
        """
        from edgeconv.core.isolate import Call, iter_many

        loaded = sorted({m for r in rows for m in get_target(r.profile.backend).fork_unsafe_modules
                         if m in sys.modules})
        if jobs > 1 and len(rows) > 1 and loaded:
            log.debug("converting one row at a time: %s already loaded here (a fork would hang)", ", ".join(loaded))
            jobs = 1
        out: list[Artifact | EdgeconvError] = [ConversionError("not converted")] * len(rows)
        if jobs <= 1 or len(rows) <= 1:
            for k, row in enumerate(rows):
                try:
                    res: Artifact | EdgeconvError = self._timed(row)[0]
                except EdgeconvError as e:
                    res = e
                except Exception as e:
                    if not catch_all:
                        raise
                    res = ConversionError(f"{row.label} conversion failed: internal error: {type(e).__name__}: {e}",
                                          hint="a bug: please report it with --verbose", target=row.profile.name)
                out[k] = res
            return out
        for row in rows:
            try:
                cal = self.calibration(row)
                if cal is not None:
                    _ = cal.key  # content hashes, once
                prep, post, _keep = self.end2end(row)
                if cal is not None and post is None:
                    self.lint(prep, cal)
                    self.evaluator(row, cal)
            except EdgeconvError:
                pass  # the worker meets the same error and reports it as the row's
        import shutil
        import tempfile

        from edgeconv.core.console import native_output_to

        chatter = Path(tempfile.mkdtemp(prefix="edgeconv-output-"))
        with native_output_to(chatter / "preload.log"):
            self._preload_shared(rows)
        # Longest first (torch-route converters re-trace the module; calibrated rows calibrate), so the slowest
        # rows do not start last and leave the other workers idle at the end.
        order = sorted(range(len(rows)), key=lambda k: -_expected_cost(rows[k]))
        calls = [Call(self._timed, (rows[k],), what=f"{rows[k].label} conversion", target=rows[k].profile.name,
                      timeout=_row_time_limit(rows[k])) for k in order]
        kept: list[Path] = []  # the output files of failed rows (iter_many removes the others')
        try:
            for i, res in track(iter_many(calls, jobs, stage="convert", child_setup=plain_progress,
                                          output_dir=chatter),
                                f"converting {len(rows)} rows, {jobs} at a time", total=len(rows)):
                k = order[i]
                if isinstance(res, tuple):
                    out[k], self.seconds[rows[k].label] = res
                else:
                    out[k] = res
                    log.error("%s", res.one_line())
                    p = getattr(res, "output_log", None)
                    if p is not None and p.is_file() and p.stat().st_size:
                        kept.append(p)
        finally:
            if kept:
                log.info("the converters' own output for the failed rows: %s", ", ".join(map(str, kept)))
            else:
                shutil.rmtree(chatter, ignore_errors=True)
        return out

    def _preload_shared(self, rows: list[PlanRow]) -> None:
        """Import once here, before the workers fork, the fork-safe heavy modules of each backend that has rows
        for more than one worker to convert (cache hits excluded): otherwise each worker imports them itself.
        litert-torch: TFLite fp32/fp16 in one worker and int8 in the other each paid its import (~4-8 s CPU)."""
        from edgeconv.pipeline import preload

        todo: dict[str, int] = {}
        try:
            for row in rows:
                backend = get_target(row.profile.backend)
                if backend.preload_modules and not self.describe(row).get("cache_hit"):
                    todo[row.profile.backend] = todo.get(row.profile.backend, 0) + 1
            for name, count in todo.items():
                if count > 1:
                    preload(get_target(name))
        except Exception as e:  # noqa: BLE001 - an optimisation only: the workers import what they need themselves
            log.debug("preloading before the workers fork skipped (%s: %s)", type(e).__name__, e)

    def _timed(self, row: PlanRow) -> tuple[Artifact, float]:
        t0 = time.perf_counter()
        art = self.convert(row)
        self.seconds[row.label] = time.perf_counter() - t0
        return art, self.seconds[row.label]

    def repair(self, row: PlanRow, prep: Prepared, cal: CalibrationSet, evaluator: TaskEvaluator,
               keep_fp32: tuple[str, ...], error: VerificationError, *, budget: float | None = None,
               final_evaluator: TaskEvaluator | bool | None = True) -> Artifact:
        """An INT8 row over its task budget: keep the fewest most-sensitive layers in float that bring it inside
        (``edgeconv.quant``), verify the chosen attempt again under the real tolerances (converting anew only when
        it is not the row's own conversion or fails them) and record the search in the manifest.
        When no keep set within the attempt limit meets the budget, the original verification error stands.

        ``evaluator`` scores each attempt against ``budget`` (default: the task budget the error names);
        ``final_evaluator`` is what the chosen artifact is verified with (True: the same evaluator)."""
        import json
        import tempfile

        from edgeconv.calibration.stats import compute_stats
        from edgeconv.core.artifact import write_manifest
        from edgeconv.core.console import log, status
        from edgeconv.quant import as_patterns, pipeline_builder, rank_layers, repair

        ref = prep.reference
        if budget is None:
            budget = float(error.task["budget"])  # type: ignore[attr-defined]
            log.warning("%s %s loses %.2f points (budget %.2f): searching for layers to keep in float",
                        row.profile.name, row.precision, -error.task["delta"], budget)  # type: ignore[attr-defined]
        else:
            log.warning("%s %s: %s; searching for layers to keep in float (objective: %s)", row.profile.name,
                        row.precision, error.message.split(": ", 1)[-1], evaluator.metric)
        options = _search_options(row)
        stats = compute_stats(ref.onnx_path, ref.sha256, cal, "minmax", None, use_cache=self.use_cache)
        with status(f"ranking layers of {row.label} by INT8 sensitivity"):
            ranked = rank_layers(ref.onnx_path, cal.feeds(), stats, modules=_module_names(ref))
        with tempfile.TemporaryDirectory(prefix="edgeconv-fallback-") as tmp:
            build = pipeline_builder(prep, row.profile, calibration=cal, evaluator=evaluator, out_root=tmp,
                                     options=options, use_cache=self.use_cache, latency_runs=0,
                                     keep_fp32=keep_fp32)
            res = repair(build, ranked, budget, int(row.options.get("int8_fallback_attempts", 12)),
                         time_limit_s=float(row.options.get("int8_fallback_time_s", 900.0)),
                         max_float=float(row.options.get("int8_fallback_max_float", 0.5)))
            if not res.ok:
                log.warning("%s %s: float fallback found no keep set within the budget (%s)", row.profile.name,
                            row.precision, res.reason)
                raise error
            # the attempt the search measured, verified under the real tolerances (convert_reference's ``adopt``)
            art = convert_reference(prep, row.profile, out=row.dest, precision=row.precision, calibration=cal,
                                    keep_fp32=tuple(dict.fromkeys((*keep_fp32, *as_patterns(res.keep)))),
                                    options=options, use_cache=self.use_cache, preprocess=self.contract(row),
                                    evaluator=evaluator if final_evaluator is True else final_evaluator or None,
                                    adopt=res.artifact)
        art.manifest["int8_fallback"] = {**json.loads(json.dumps(res.to_dict(), default=str)),
                                         "objective": evaluator.metric, "budget": budget}
        if "adopted" in art.manifest:  # name the attempt: its temporary folder is gone
            src = art.manifest["adopted"]["from"]
            art.manifest["adopted"]["from"] = next(
                (f"attempt {i}" for i, a in enumerate(res.attempts, 1) if a.artifact == src), "an attempt")
        write_manifest(art.path, art.manifest)
        if self.use_cache and art.manifest.get("cache_key"):  # a later hit of this artifact carries the search too
            cache.store("artifacts", str(art.manifest["cache_key"]), art.path)
        log.info("%s %s: kept %s in float -> delta %.2f (budget %.2f)", row.profile.name, row.precision,
                 ", ".join(res.keep), res.delta or 0.0, budget)
        return art

    def describe(self, row: PlanRow) -> dict[str, Any]:
        """What the row would do, and whether the artifact cache already holds it (no conversion)."""
        d: dict[str, Any] = {"profile": row.profile.name, "backend": row.profile.backend,
                             "precision": row.precision, "out": str(row.dest)}
        try:
            cal = self.calibration(row)
            pp = self.contract(row)
            backend, ctx = build_context(self.prep, row.profile, row.precision, calibration=cal,
                                         keep_fp32=row.keep_fp32, options=row.options, preprocess=pp,
                                         evaluator=self.evaluator(row, cal))
            key = artifact_key(backend, ctx)
            with cache.disabled(not self.use_cache):
                d.update(key=key, cache_hit=cache.lookup("artifacts", key) is not None,
                         calibration=cal.manifest() if cal else None, preprocess=pp.to_dict() if pp else None,
                         isolated=backend.isolate)
        except EdgeconvError as e:
            d.update(error=e.one_line(), cache_hit=False)
        return d


def _search_options(row: PlanRow) -> dict[str, Any]:
    """The options every float-fallback attempt of ``row`` converts with. MNN's default EMA activations ignore a
    skip list, so a keep set switches its tool to KL: with the baseline on EMA and the attempts on KL, the search
    compared two methods instead of keep sets (SINet: EMA -19.1, every KL attempt -64.6, 900 s for nothing).
    There every attempt, the empty keep set included, runs KL."""
    opts = dict(row.options)
    chosen = any(opts.get(k) or row.profile.options.get(k) for k in ("feature_method", "calib_method"))
    if row.profile.backend == "mnn" and not chosen and str(opts.get("int8_mode", "full")) != "weight":
        opts["feature_method"] = "KL"
        log.info("%s: the float-fallback search runs every attempt with KL activations (MNN's EMA ignores the keep "
                 "sets it tries)", row.label)
    return opts


def _cosine_failed(error: VerificationError, limit: float | None) -> bool:
    """Whether the host verification's worst-case cosine (the drift record the error carries) is under ``limit``."""
    cosine = (getattr(error, "drift", None) or {}).get("cosine")
    return limit is not None and cosine is not None and cosine < float(limit)


def _module_names(ref: Any) -> dict[str, Any] | None:
    """ONNX node -> PyTorch module for the layers a fallback keeps (exporter metadata, else a scoped re-export);
    None lets the ranking use what the file alone says."""
    try:
        from edgeconv.diagnose.modules import reference_module_map

        return reference_module_map(ref)
    except Exception as e:  # noqa: BLE001 - names are a report nicety: a failure must not stop the repair
        log.debug("module names for the fallback report unavailable: %s", e)
        return None


def drift_evaluator(prep: Prepared, cal: CalibrationSet, samples: int = 16) -> TaskEvaluator:
    """An objective for the float-fallback search where no task metric exists: the worst-case output cosine
    (in percent, the pipeline's own measure) against the reference on ``samples`` calibration-distribution inputs."""
    import itertools

    from edgeconv.core.compare import compare_outputs
    from edgeconv.core.hashing import sha256_json
    from edgeconv.targets.base import reference_items

    items = reference_items(prep.reference.onnx_path, list(itertools.islice(cal.feeds(), samples)))

    def score(outs: list[dict[str, Any]], labels: list[Any]) -> float:
        return 100.0 * float(compare_outputs(labels, outs).get("cosine") or 0.0)

    return TaskEvaluator("worst_cosine", items, score,
                         sha256_json({"objective": "worst_cosine", "calibration": cal.key, "samples": samples,
                                      "reference": prep.reference.sha256}),
                         {"unit": "%", "source": "calibration sample", "task": "drift"})


def default_jobs(rows: int) -> int:
    """Rows converted at once: ``$EDGECONV_JOBS`` if set, else one per core, at most one per 3 GB of available
    memory (a detector's conversion peaks at ~1-2 GB) and never more than there are rows."""
    import os

    env = os.environ.get("EDGECONV_JOBS")
    if env:
        try:
            return max(1, min(rows, int(env)))
        except ValueError:
            raise ConfigError(f"EDGECONV_JOBS={env!r} is not a number",
                              hint="set EDGECONV_JOBS=2 (or unset it)") from None
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        avail = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        by_mem = max(1, int(avail // (3 << 30)))
    except (ValueError, OSError, AttributeError):
        by_mem = 1
    return max(1, min(rows, cores, by_mem))


def convert_planned(planned: list[tuple[int, Planner, PlanRow]], *, eval_files: list[Path] | None = None,
                    allow_overlap: bool = False, jobs: int | None = None) -> dict[int, tuple[Any, float]]:
    """slot -> (artifact or its error, seconds) for rows of one or more planners (one per detections placement):
    each calibration sample is first checked disjoint from the evaluation files, then each planner's rows are
    converted up to ``jobs`` at once (:meth:`Planner.convert_many`). ``edgeconv run`` converts everything before
    it benchmarks anything, so latency is measured on a machine no conversion shares."""
    from edgeconv.calibration.dataset import check_disjoint

    groups: dict[int, tuple[Planner, list[tuple[int, PlanRow]]]] = {}
    for slot, pl, row in planned:
        groups.setdefault(id(pl), (pl, []))[1].append((slot, row))
    checked: set[int] = set()
    out: dict[int, tuple[Any, float]] = {}
    for pl, items in groups.values():
        ok = []
        for slot, row in items:
            try:
                cal = pl.calibration(row)
                if cal is not None and eval_files and id(cal) not in checked:
                    check_disjoint(cal, eval_files, allow_overlap=allow_overlap)
                    checked.add(id(cal))
                ok.append((slot, row))
            except EdgeconvError as e:
                out[slot] = (e, 0.0)
        rows = [row for _, row in ok]
        results = pl.convert_many(rows, default_jobs(len(rows)) if jobs is None else jobs, catch_all=True)
        for (slot, row), res in zip(ok, results, strict=True):
            out[slot] = (res, pl.seconds.get(row.label, 0.0))
    return out


def _expected_cost(row: PlanRow) -> float:
    """A rough relative cost of converting a row, for scheduling only (measured on the bundled YOLO: ExecuTorch
    int8 72 s, TFLite int8 35 s, OpenVINO int8 29 s, torch-route fp32 ~22 s, most ONNX-route rows 1-6 s; TFLite
    fp16 1 s after its fp32 row, 14 s when the two ran at once in two workers and both lowered)."""
    backend = get_target(row.profile.backend)
    if row.precision in backend.derived_from:
        return 0.5  # a cast of another row's shared stage: last, when that stage is cached (or being built)
    return (4.0 if backend.needs_torch_module else 1.0) * (3.0 if row.precision in backend.calibrated else 1.0)


def _row_time_limit(row: PlanRow) -> float:
    """A worker's limit for one whole row: its conversions' own limit, times the float-fallback attempts."""
    per = float(row.options.get("timeout_s", 1800.0))
    attempts = int(row.options.get("int8_fallback_attempts", 12)) if row.precision == "int8" else 0
    return per * (2 + attempts)
