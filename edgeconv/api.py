"""Public API functions behind the CLI commands ``convert``, ``targets`` and ``doctor``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeconv.calibration.preprocess import Preprocess
from edgeconv.core import cache
from edgeconv.core.console import log
from edgeconv.core.env import cpu_info, environment
from edgeconv.core.errors import ConfigError, EdgeconvError
from edgeconv.export.onnx_export import EXPORTERS, DynamicSpec
from edgeconv.profiles import Profile, list_profiles
from edgeconv.targets.registry import all_targets


@dataclass
class ConvertOutcome:
    """One target × precision of a convert call: the artifact, or the error that stopped it (or, for a dry run,
    what would be done)."""

    profile: str
    precision: str
    out: Path
    artifact: Any = None
    error: EdgeconvError | None = None
    planned: bool = False
    cache_hit: bool | None = None
    plan: dict[str, Any] | None = None
    skipped: str | None = None  # a combination of a product the target has no route for: the reason

    @property
    def ok(self) -> bool:
        """Converted (or, for a dry run, planned) without an error; a skipped combination is not ok, nor failed."""
        return self.error is None and self.skipped is None


def default_evaluator(*, data: str | None = None, task: str | None = None, postprocess: str | None = None,
                      limit: int = 100) -> Any:
    """The evaluator factory ``convert`` and ``run`` share: held-out labelled data (the bundled eval split for
    ``zoo:`` models), disjoint from the calibration sample, scored by the task metric."""

    def factory(prep: Any, pp: Preprocess | None, calibration: Any) -> Any:
        from edgeconv.bench.budget import task_evaluator

        exclude = calibration.content_hashes() if calibration is not None else None
        return task_evaluator(prep.info, prep.reference, pp, data=data, task=task, postprocess=postprocess,
                              limit=limit, exclude=exclude, calibration=calibration)

    return factory


def _as_preprocess(pp: str | Preprocess | None) -> Preprocess | None:
    return Preprocess.parse(pp) if isinstance(pp, str) else pp


def convert(model: Any, *, targets: list[str | Profile], out: str | Path, precisions: list[str] | None = None,
            weights: str | None = None, model_args: dict[str, Any] | list[str] | None = None,
            inputs: list[str] | None = None, output_names: list[str] | None = None, opset: int = 17,
            exporters: tuple[str, ...] = EXPORTERS, dynamic: DynamicSpec | None = None, simplify: bool = True,
            calib: str | None = None, calib_size: int = 512, calib_seed: int = 0,
            preprocess: str | Preprocess | None = None, keep_fp32: tuple[str, ...] = (),
            options: dict[str, Any] | None = None, use_cache: bool = True, trust_checkpoint: bool = False,
            tolerances: dict[str, dict[str, float]] | None = None, dry_run: bool = False,
            eval_data: str | None = None, task: str | None = None, decoder: str | None = None,
            check_task: bool = True, postprocess: str | None = None,
            postprocess_options: dict[str, Any] | None = None, jobs: int | None = None) -> list[ConvertOutcome]:
    """Convert one model to each target (and precision) into ``out/<profile>-<precision>``.

    ``model``: ``FILE.py:FACTORY``, ``package.module:FACTORY``, a TorchScript/.pt2/.onnx path, ``zoo:NAME``, or an
    ``nn.Module``. ``targets``: profile names, profile .toml paths or ``Profile`` objects. ``preprocess``: a
    ``--preprocess`` string (``size=320x320,color=BGR``) or a ``Preprocess``. ``tolerances``:
    ``{"int8": {"cosine": 0.98}}`` overrides. Reduced precisions are checked against the task budget on held-out
    data when it exists (``eval_data``/``task``/``decoder``; the bundled eval split for ``zoo:`` models).
    ``postprocess="end2end"`` (or a placement: ``graph``, ``decode``, ``beside``) ships detectors' decode + NMS
    with every artifact, in the graph where the backend has the ops and as post-processor files beside it where it
    has not (``postprocess_options``: ``max_det``, ``score_threshold``, ``iou_threshold``, ``class_agnostic``).

    Targets, precisions, options and the preprocessing are validated before the model is loaded; model loading and
    export errors raise (nothing can be converted); a failing target is recorded in its outcome and the others go
    on. With ``dry_run`` nothing is converted: each outcome says what would be made and whether it is cached.
    ``jobs``: rows converted at once in worker processes (default: :func:`default_jobs`).
    """
    from edgeconv.plan import plan_rows

    pp = _as_preprocess(preprocess)
    if task is not None:
        from edgeconv.tasks import parse as parse_task

        parse_task(task)  # a bad task spec fails now, not after the export
    if eval_data is not None and not str(eval_data).startswith("zoo") and not Path(eval_data).exists():
        raise ConfigError(f"evaluation data {eval_data} does not exist", hint="pass --eval DIR (labelled images)")
    if calib:
        from edgeconv.calibration.sources import discover

        discover(calib)  # a missing or empty calibration folder fails now, not after the export
    rows, skipped = plan_rows(list(targets), precisions, out, keep_fp32=tuple(keep_fp32), options=options,
                              tolerances=tolerances)
    if not rows:  # nothing the targets can make: the request itself is wrong
        raise skipped[0][1]
    for (name, prec), err in skipped:
        log.warning("%s %s: skipped: %s (%s)", name, prec, err.message, err.hint)
    skips = [ConvertOutcome(name, prec, Path(out), skipped=f"{err.message} ({err.hint})")
             for (name, prec), err in skipped]
    outcomes = _convert_rows(rows, skips, model, use_cache=use_cache, weights=weights, model_args=model_args,
                             inputs=inputs, output_names=output_names, opset=opset, exporters=exporters,
                             dynamic=dynamic, simplify=simplify, trust_checkpoint=trust_checkpoint, calib=calib,
                             calib_size=calib_size, calib_seed=calib_seed, pp=pp, eval_data=eval_data, task=task,
                             decoder=decoder, check_task=check_task, postprocess=postprocess,
                             postprocess_options=postprocess_options, dry_run=dry_run, jobs=jobs)
    return outcomes + skips


def _convert_rows(rows: list[Any], skips: list[ConvertOutcome], model: Any, *, use_cache: bool, weights: Any,
                  model_args: Any, inputs: Any, output_names: Any, opset: int, exporters: Any, dynamic: Any,
                  simplify: bool, trust_checkpoint: bool, calib: Any, calib_size: int, calib_seed: int, pp: Any,
                  eval_data: Any, task: Any, decoder: Any, check_task: bool, postprocess: Any,
                  postprocess_options: Any, dry_run: bool, jobs: int | None) -> list[ConvertOutcome]:
    """``convert`` past validation: the fast path, else prepare once and run the plan. One row whose conversion
    fails is the command's error only when it was the whole request (no other row, none skipped)."""
    from edgeconv.fastpath import fast_keys, fast_lookup, remember, source_fingerprint
    from edgeconv.pipeline import prepare
    from edgeconv.plan import Planner, default_jobs

    with cache.disabled(not use_cache):
        keys: dict[str, str] = {}
        if use_cache:
            args = sorted(model_args.items()) if isinstance(model_args, dict) else sorted(model_args or [])
            settings = {"args": [list(a) if isinstance(a, tuple) else a for a in args],
                        "inputs": [i.to_dict() if hasattr(i, "to_dict") else str(i) for i in inputs or []],
                        "outputs": list(output_names or []), "opset": opset, "exporters": list(exporters),
                        "dynamic": (dynamic or DynamicSpec()).__dict__, "simplify": simplify,
                        "trust_checkpoint": trust_checkpoint}
            src = source_fingerprint(model, weights, settings)
            if src is not None:
                zoo_calib = None
                if isinstance(model, str) and model.startswith("zoo:"):
                    from edgeconv.pipeline import resolve_zoo

                    zoo_calib = resolve_zoo(model)["calib_dir"]  # type: ignore[index]
                keys = fast_keys(src, rows, calib=calib, calib_size=calib_size, calib_seed=calib_seed,
                                 preprocess=pp, evaluation={"data": eval_data, "task": task, "post": decoder,
                                                            "check": check_task, "postprocess": postprocess,
                                                            "postprocess_options": postprocess_options},
                                 zoo_calib=zoo_calib)
                hits = fast_lookup(keys)
                if hits is not None:
                    return _fast_outcomes(rows, hits, dry_run)
        if not (isinstance(model, str) and model.endswith(".onnx")):
            from edgeconv.export.onnx_export import check_opset  # asks torch for its opset range

            check_opset(opset, tuple(exporters))
        prep = prepare(model, weights=weights, model_args=model_args, inputs=inputs, output_names=output_names,
                       opset=opset, exporters=exporters, dynamic=dynamic, simplify=simplify,
                       trust_checkpoint=trust_checkpoint, use_cache=use_cache, preprocess=pp)
        rows = _skip_torch_routes(rows, skips, prep)
        planner = Planner(prep, calib, calib_size, calib_seed, pp, use_cache,
                          default_evaluator(data=eval_data, task=task, postprocess=decoder) if check_task
                          else None, postprocess={"end2end": "auto"}.get(postprocess or "", postprocess),
                          postprocess_options=dict(postprocess_options or {}))
        outcomes: list[ConvertOutcome] = []
        try:
            planner.postprocess_spec()  # a decode that cannot be derived fails the request once
        except EdgeconvError:
            planner.close()
            raise
        if dry_run:
            for row in rows:
                oc = ConvertOutcome(row.profile.name, row.precision, row.dest, planned=True, plan=planner.describe(row))
                oc.cache_hit = bool(oc.plan.get("cache_hit"))
                outcomes.append(oc)
            planner.close()
            return outcomes
        results = planner.convert_many(rows, default_jobs(len(rows)) if jobs is None else jobs)
        for row, res in zip(rows, results, strict=True):
            oc = ConvertOutcome(row.profile.name, row.precision, row.dest)
            if isinstance(res, EdgeconvError):
                if len(rows) == 1 and not skips:  # one conversion asked for: its error is the command's error
                    planner.close()
                    raise res
                res.target = res.target or row.profile.name
                log.error("%s", res.one_line())
                oc.error = res
            else:
                oc.artifact = res
                if row.label in keys:
                    remember(keys[row.label], res.manifest["cache_key"])
            outcomes.append(oc)
        planner.close()
    return outcomes


def _skip_torch_routes(rows: list[Any], skips: list[ConvertOutcome], prep: Any) -> list[Any]:
    """Rows of targets that convert from the PyTorch model (TFLite, ExecuTorch) have no route from an ``.onnx``
    model: skipped with the reason beside the rows that do convert, as a precision a target lacks is; when they
    are all the rows, their conversion's own error stands (the request itself is wrong)."""
    from edgeconv.targets.registry import get_target

    if prep.reference.module is not None:
        return rows
    torchless = [r for r in rows if get_target(r.profile.backend).needs_torch_module]
    if not torchless or len(torchless) == len(rows):
        return rows
    why = ("converts from the PyTorch model, and an .onnx model has none (give --model FILE.py:FACTORY with "
           "--weights)")
    for r in torchless:
        log.warning("%s %s: skipped: %s", r.profile.name, r.precision, why)
        skips.append(ConvertOutcome(r.profile.name, r.precision, r.dest, skipped=f"{r.profile.name} {why}"))
    return [r for r in rows if r not in torchless]


def _fast_outcomes(rows: list[Any], hits: dict[str, Path], dry_run: bool) -> list[ConvertOutcome]:
    """Every row known from file hashes alone: copy the verified entries out (or, for a dry run, say so)."""
    from edgeconv.core.artifact import Artifact, atomic_dir

    outcomes = []
    for row in rows:
        oc = ConvertOutcome(row.profile.name, row.precision, row.dest, cache_hit=True)
        if dry_run:
            oc.planned = True
            oc.plan = {"profile": row.profile.name, "backend": row.profile.backend, "precision": row.precision,
                       "out": str(row.dest), "cache_hit": True, "key": Artifact.load(hits[row.label]).manifest.get(
                           "cache_key"), "fast_path": True}
        else:
            with atomic_dir(row.dest) as tmp:
                cache.copy_out(hits[row.label], tmp)
            oc.artifact = Artifact.load(row.dest)
            oc.artifact.manifest["cache"] = "hit"
            log.info("cache hit: %s %s (decided from file hashes, nothing loaded)", row.profile.name, row.precision)
        outcomes.append(oc)
    return outcomes


def list_targets() -> list[dict[str, Any]]:
    """Every profile with its backend's install state, how to install it and its precisions, plus every
    registered backend that cannot be loaded (marked broken with its import error, never silently dropped)."""
    from edgeconv.targets.registry import broken_targets

    backends = all_targets()
    broken = broken_targets()
    rows = []
    for name, prof in list_profiles().items():
        b = backends.get(prof.backend)
        installed = bool(b and b.available())
        if b is not None:
            runs, why = b.runs_here()
        else:
            runs, why = False, (f"backend broken: {broken[prof.backend]}" if prof.backend in broken
                                else "backend not registered")
        rows.append({"profile": name, "backend": prof.backend, "installed": installed, "runs_here": runs,
                     "why_not": None if runs else why, "install": f"pip install 'edgeconv[{b.extra if b else '?'}]'",
                     "precisions": [p for p in prof.precisions if not b or p in b.precisions],
                     "default_precision": prof.precision, "device": prof.device, "description": prof.description,
                     "broken": prof.backend in broken,
                     "routes": list(b.routes) if b else [], "isolated": bool(b and b.isolate),
                     "options": {k: o.to_dict() for k, o in b.option_schema().items()} if b else {}})
    for name, err in broken.items():
        if not any(r["backend"] == name for r in rows):
            rows.append({"profile": None, "backend": name, "installed": False, "runs_here": False,
                         "why_not": f"backend broken: {err}", "install": "reinstall the package that provides it",
                         "precisions": [], "default_precision": None, "device": None, "description": "",
                         "broken": True, "routes": [], "isolated": False, "options": {}})
    return rows


def _core_imports() -> dict[str, str | None]:
    """Import what every conversion needs, for real: a package can be installed and still not import (a protobuf
    runtime older than onnx's generated code: ``VersionError`` at ``import onnx``), which a look at the installed
    distributions does not see. Module -> None, or the error's first line."""
    import importlib

    out: dict[str, str | None] = {}
    for mod in ("numpy", "onnx", "onnxruntime"):
        try:
            importlib.import_module(mod)
            out[mod] = None
        except Exception as e:  # noqa: BLE001 - any failure to import is the finding
            out[mod] = f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
    return out


def doctor() -> dict[str, Any]:
    """Versions, CPU flags and which backends convert and run here — read from this machine, not assumed.
    Backend versions come from each target's own declaration (modules + tools), so a plug-in reports its own."""
    from edgeconv.targets.registry import broken_targets

    env = environment()
    info = cpu_info()
    backends: dict[str, Any] = {}
    for name, b in all_targets().items():
        runs, why = b.runs_here()
        backends[name] = {"installed": b.available(), "missing": b.missing(), "runs_here": runs,
                          "why_not": why or None, "versions": {k: v for k, v in b.versions().items() if v},
                          "broken": False, "isolated": b.isolate, "environment": b.environment}
        env["versions"].update(backends[name]["versions"])
    for name, err in broken_targets().items():
        backends[name] = {"installed": False, "missing": [], "runs_here": False, "why_not": err, "versions": {},
                          "broken": True, "error": err}
    notes = []
    flags = set(info["flags"])
    if info["arch"] in ("x86_64", "AMD64") and not flags & {"avx512_vnni", "avx_vnni", "amx_int8"}:
        notes.append("no VNNI/AMX: INT8 speed-ups on this CPU will be small; ORT int8 uses reduce_range")
    if flags & {"avx512_bf16", "amx_bf16"}:
        notes.append("BF16 CPU: OpenVINO runs fp32 IRs in bf16 unless pinned (edgeconv's runner pins f32)")
    core = _core_imports()
    env["core_imports"] = core
    for mod, err in core.items():
        if err:
            notes.append(f"{mod} does not import ({err}): every conversion needs it; reinstall the environment "
                         "(bash scripts/setup.sh)")
    from edgeconv.core.env import isa_line

    env["isa_line"] = isa_line()
    return {"environment": env, "backends": backends, "notes": notes,
            "profiles": sorted(list_profiles()), "log_level": log.level}
