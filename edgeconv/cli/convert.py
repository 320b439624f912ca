"""``edgeconv convert``: one model to one or more targets × precisions, each artifact verified before it counts.

``--dry-run`` prints the plan (which conversions would run, which are cache hits) and writes nothing; ``--tol``
overrides a profile's verification tolerance for this call; ``--json`` prints one record per target × precision.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from typing import Any

import click

from edgeconv.cli import _kv, call_with_new_options, handle_errors, parse_tolerances
from edgeconv.core.console import emit_json, stdout_to_stderr
from edgeconv.core.errors import EdgeconvError
from edgeconv.profiles import PRECISIONS


def _error_dict(e: EdgeconvError | None) -> dict[str, Any] | None:
    if e is None:
        return None
    return {"kind": e.kind, "exit_code": e.exit_code, "message": e.one_line(), "hint": e.hint}


@click.command()
@click.option("--model", "-m", required=True, help="FILE.py:FACTORY, MODULE:FACTORY, TorchScript/.pt2/.onnx file, "
              "or zoo:NAME for a bundled model.")
@click.option("--weights", "-w", help="state_dict checkpoint (.pt/.pth/.safetensors).")
@click.option("--model-arg", multiple=True, metavar="KEY=VALUE", help="Keyword argument for the factory (repeatable).")
@click.option("--trust-checkpoint", is_flag=True, help="Allow checkpoints that need arbitrary unpickling (runs code).")
@click.option("--input", "inputs", multiple=True, metavar="[NAME:]1x3xHxW[:dtype]",
              help="Model input (repeatable; without NAME the model's own input name).")
@click.option("--output-name", "output_names", multiple=True, help="Names for the model outputs, in order.")
@click.option("--target", "-t", "targets", multiple=True, required=True,
              help="Profile name (see `edgeconv targets`) or path to a profile .toml (repeatable).")
@click.option("--precision", "-p", "precisions", multiple=True, type=click.Choice(PRECISIONS),
              help="Precision(s) (repeatable); default: the profile's.")
@click.option("--out", "-o", required=True, type=click.Path(file_okay=False), help="Output folder; artifacts go to "
              "OUT/<profile>-<precision>/.")
@click.option("--opset", default=17, show_default=True, help="ONNX opset (the dynamo exporter uses >= 18).")
@click.option("--exporter", "exporters", multiple=True, type=click.Choice(["dynamo", "legacy"]),
              help="Exporter order (default: legacy, then dynamo; the first that verifies is used).")
@click.option("--dynamic", type=click.Choice(["batch", "spatial", "batch,spatial"]), help="Dynamic axes (opt-in).")
@click.option("--max-batch", default=8, show_default=True, help="Largest batch of the dynamic profile.")
@click.option("--no-simplify", is_flag=True, help="Skip onnxsim/onnxslim.")
@click.option("--calib", type=click.Path(), help="Calibration data: image folder or .npy/.npz tensors "
              "(default: the bundled model's sample).")
@click.option("--calib-size", default=512, show_default=True, help="Number of calibration samples (seeded).")
@click.option("--calib-seed", default=0, show_default=True, help="Seed of the calibration sample.")
@click.option("--calib-method", type=click.Choice(["minmax", "entropy", "percentile"]), help="Activation statistics.")
@click.option("--preprocess", help="Preprocessing contract: key=value list (size=320x320,color=BGR,resize=letterbox,"
              "scale=1/255,mean=a/b/c,std=a/b/c,order=scale-first,layout=NCHW) or a .json/.toml file.")
@click.option("--keep-fp32", multiple=True, metavar="NAME|PATTERN|op:TYPE", help="Layers kept in float (repeatable).")
@click.option("--route", help="Backend route where it has several (each target declares its own; see "
              "`edgeconv targets --json`), e.g. onnx or torch.")
@click.option("--max-drop", type=float, help="Accuracy budget for INT8 (task metric), where the backend has one.")
@click.option("--eval", "eval_data", type=click.Path(), help="Labelled held-out data: reduced-precision artifacts are "
              "scored on it at conversion and refused (or repaired) over their task budget (default for zoo: models: "
              "the bundled eval split).")
@click.option("--task", metavar="SPEC", help="Task of --eval: detection, classification, ctc:alphabet=@chars.txt,"
              "blank=0, segmentation:ignore=255 (docs/tasks.md).")
@click.option("--decoder", metavar="FILE.py:FN", help="Detections decoder for --eval (raw head outputs -> boxes).")
@click.option("--embed-preprocess", is_flag=True, help="Embed the preprocessing into the model (OpenVINO).")
@click.option("--option", "backend_options", multiple=True, metavar="KEY=VALUE", help="Backend option (repeatable).")
@click.option("--device", help="Also verify on this device (name from `edgeconv devices list`, or a .toml); default: "
              "the first usable device serving the profile, e.g. the emulated arm64 board for raspberry-pi-5.")
@click.option("--postprocess", "postprocess", type=click.Choice(["raw", "end2end", "graph", "decode", "beside"]),
              default="raw", show_default=True,
              help="Detectors: ship decode + NMS with every artifact (end2end: in the graph where the backend has "
                   "the ops, post-processor files beside it elsewhere).")
@click.option("--post-option", "post_options", multiple=True, metavar="KEY=VALUE",
              help="Detections contract option: max_det, score_threshold, iou_threshold, class_agnostic, head, ...")
@click.option("--tol", "tols", multiple=True, metavar="PRECISION.METRIC=VALUE",
              help="Verification tolerance over the profile's (repeatable), e.g. int8.cosine=0.98.")
@click.option("--jobs", "-j", type=click.IntRange(min=1), help="Rows converted at once in worker processes "
              "(default: one per core, bounded by memory; $EDGECONV_JOBS).")
@click.option("--dry-run", is_flag=True,
              help="Print what would be converted (and which are cache hits); write nothing.")
@click.option("--no-cache", is_flag=True, help="Ignore and do not fill the artifact cache.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable result on stdout.")
@handle_errors
def convert(model: str, weights: str | None, model_arg: tuple[str, ...], trust_checkpoint: bool,
            inputs: tuple[str, ...], output_names: tuple[str, ...], targets: tuple[str, ...],
            precisions: tuple[str, ...], out: str, opset: int, exporters: tuple[str, ...], dynamic: str | None,
            max_batch: int, no_simplify: bool, calib: str | None, calib_size: int, calib_seed: int,
            calib_method: str | None, preprocess: str | None, keep_fp32: tuple[str, ...], route: str | None,
            max_drop: float | None, eval_data: str | None, task: str | None, decoder: str | None,
            embed_preprocess: bool, backend_options: tuple[str, ...], device: str | None,
            postprocess: str,
            post_options: tuple[str, ...], tols: tuple[str, ...], jobs: int | None,
            dry_run: bool, no_cache: bool, as_json: bool) -> None:
    """Convert a model to one or more targets; every artifact is verified against the reference ONNX."""
    from edgeconv.api import convert as api_convert
    from edgeconv.calibration.preprocess import Preprocess
    from edgeconv.export.onnx_export import EXPORTERS, DynamicSpec

    options = _kv(backend_options, "--option")
    for k, v in (("route", route), ("max_drop", max_drop), ("calib_method", calib_method), ("device", device)):
        if v is not None:
            options[k] = v
    if embed_preprocess:
        options["embed_preprocess"] = True
    tolerances = parse_tolerances(tols)
    dyn = DynamicSpec(batch="batch" in (dynamic or ""), spatial="spatial" in (dynamic or ""), max_batch=max_batch)
    with _json_on_error(as_json, targets, precisions), stdout_to_stderr():  # printing converters go to stderr
        outcomes = call_with_new_options(
            api_convert, model, targets=list(targets), out=out, precisions=list(precisions) or None, weights=weights,
            model_args=list(model_arg), inputs=list(inputs), output_names=list(output_names) or None, opset=opset,
            exporters=exporters or EXPORTERS, dynamic=dyn, simplify=not no_simplify, calib=calib, calib_size=calib_size,
            calib_seed=calib_seed, preprocess=Preprocess.parse(preprocess) if preprocess else None, keep_fp32=keep_fp32,
            options=options, use_cache=not no_cache, trust_checkpoint=trust_checkpoint, tolerances=tolerances,
            dry_run=dry_run, jobs=jobs, eval_data=eval_data, task=task, decoder=decoder,
            **({"postprocess": postprocess, "postprocess_options": _kv(post_options, "--post-option")}
               if postprocess != "raw" else {}))
    rows = [_outcome_dict(o) for o in outcomes]
    if as_json:
        emit_json(rows)
    else:
        for r in rows:
            if r["status"] == "planned":
                click.echo(f"plan    {r['profile']:<20} {r['precision']:<5} {r['out']}  "
                           f"({'cache hit' if r['cache_hit'] else 'convert'})")
            elif r["status"] == "ok":
                click.echo(_ok_line(r))
            elif r["status"] == "not-executed":
                click.echo(f"checked {r['profile']:<20} {r['precision']:<5} {r['out']}  ({r['note']})")
            elif r["status"] == "skipped":
                click.echo(f"skipped {r['profile']:<20} {r['precision']:<5} {r['note']}")
            else:
                click.echo(f"failed  {r['profile']:<20} {r['precision']:<5} {r['error']['message']}")
    failed = [o for o in outcomes if o.error is not None]
    skipped = [o for o in outcomes if o.skipped]
    outcomes = [o for o in outcomes if not o.skipped]
    if dry_run and not as_json:
        hits = sum(1 for r in rows if r.get("cache_hit"))
        click.echo(f"{len(rows)} row(s) planned, {hits} already in the cache; nothing converted", err=True)
    elif (len(outcomes) > 1 or skipped) and not as_json:
        kinds: dict[str, int] = {}
        for o in failed:
            kinds[o.error.kind] = kinds.get(o.error.kind, 0) + 1
        detail = ", ".join(f"{n} {k}" for k, n in sorted(kinds.items()))
        click.echo(f"{len(outcomes) - len(failed)} of {len(outcomes)} ok" + (f"; failed: {detail}" if failed else "")
                   + (f"; {len(skipped)} skipped (no route)" if skipped else ""), err=True)
    if failed:
        sys.exit(max(o.error.exit_code for o in failed))


@contextlib.contextmanager
def _json_on_error(as_json: bool, targets: tuple[str, ...], precisions: tuple[str, ...]) -> Iterator[None]:
    """With --json, a command that fails as a whole (one row asked for, or a model that does not load) still
    prints its row on stdout, with the error's kind, message and hint, before exiting with the error's code."""
    try:
        yield
    except EdgeconvError as e:
        if as_json:
            with contextlib.suppress(Exception):
                emit_json([{"profile": e.target or (targets[0] if len(targets) == 1 else None),
                            "precision": precisions[0] if len(precisions) == 1 else None, "status": "failed",
                            "error": _error_dict(e)}])
        raise


def _num(v: Any, fmt: str) -> str:
    return format(v, fmt) if isinstance(v, (int, float)) else "n/a"


def _outcome_dict(o: Any) -> dict[str, Any]:
    planned = bool(getattr(o, "planned", False))
    if getattr(o, "skipped", None):
        return {"profile": o.profile, "precision": o.precision, "out": None, "status": "skipped", "note": o.skipped,
                "task": None, "cache_hit": None, "verification": None, "error": None, "plan": None}
    ver = (o.artifact.manifest.get("verification") or {}) if o.artifact is not None else {}
    status = "planned" if planned and o.ok else ("ok" if o.ok else "failed")
    if status == "ok" and ver.get("status") == "not-executed":
        status = "not-executed"
    return {"profile": o.profile, "precision": o.precision, "out": str(o.out), "status": status,
            "note": ver.get("note"), "task": ver.get("task"),
            "cache_hit": getattr(o, "cache_hit", None) if planned else
            (o.artifact.manifest.get("cache") == "hit" if o.artifact is not None else None),
            "verification": ver.get("drift"), "error": _error_dict(o.error),
            "detections": _detections_seen(ver),
            # an INT8 row made another way than asked (TFLite's dynamic-range route when full-integer did not
            # convert) says so on its line, not only in the manifest
            "route_note": _route_note(o.artifact.manifest) if o.artifact is not None else None,
            "plan": getattr(o, "plan", None) if planned else None}


COMMANDS = [convert]


def _detections_seen(ver: dict[str, Any]) -> dict[str, Any] | None:
    """An end2end row's detection agreement on its blocking inputs (what judged it; its tensor drift on the
    detection rows means nothing: near-tied boxes swap places)."""
    recs = [(c or {}).get("detections") for k, c in (ver.get("checks") or {}).items() if k in (ver.get("blocking")
                                                                                                  or [])]
    recs = [r for r in recs if r]
    if not recs:
        return None
    return {"matched_fraction": min(r["matched_fraction"] for r in recs),
            "extra_fraction": max(r["extra_fraction"] for r in recs),
            "reference_detections": ver.get("detections_seen", 0)}


def _route_note(manifest: dict[str, Any]) -> str | None:
    """How an INT8 row was made where it is not the plain route: another route than asked, layers the
    float-fallback search kept in float (how many)."""
    conv = manifest.get("conversion") or {}
    portable = "portable kernels: the XNNPACK delegate could not lower it" if conv.get("xnnpack_lowering_failed") \
        else None
    notes = [conv.get("int8_route"), portable]
    fb = manifest.get("int8_fallback") or {}
    if fb.get("ok") and fb.get("keep_fp32_nodes"):
        notes.append(f"float fallback: {len(fb['keep_fp32_nodes'])} layer(s) kept in float")
    return "; ".join(n for n in notes if n) or None


def _ok_line(r: dict[str, Any]) -> str:
    """The one line of a verified row: drift (and the scaled max-abs the bar judged where it differs from the raw
    one: each output is held to its own scale), the task delta against its budget, how the row was made."""
    d = r["verification"] or {}
    t = r.get("task") or {}
    task_s = (f", {t['metric']} {t['delta']:+.2f} pts (budget {t.get('budget', float('nan')):.2f})"
              if t.get("delta") is not None else "")
    route = f"; {r['route_note']}" if r.get("route_note") else ""
    det = r.get("detections")
    if det:
        return (f"ok      {r['profile']:<20} {r['precision']:<5} {r['out']}  (detections matched "
                f"{det['matched_fraction']:.3f} of {det['reference_detections']}, extra {det['extra_fraction']:.3f}"
                f"{task_s}{route})")
    scaled, raw = d.get("max_abs_scaled"), d.get("max_abs")
    scaled_s = (f", scaled {scaled:.2e}" if isinstance(scaled, float) and isinstance(raw, float)
                and scaled < 0.999 * raw else "")
    return (f"ok      {r['profile']:<20} {r['precision']:<5} {r['out']}  (max_abs {_num(raw, '.2e')}{scaled_s}, "
            f"cosine {_num(d.get('cosine'), '.6f')}{task_s}{route})")
