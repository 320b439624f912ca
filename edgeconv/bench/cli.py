"""Click commands ``bench``, ``run`` and ``compare`` (registered by ``edgeconv.cli`` through ``COMMANDS``).

Exit codes: errors keep their kind's code (config 2, …); a gate that fails (``--fail-on`` condition holds) exits 1.
Results go to stdout (a line per row, or the whole report with ``--json``), logs and progress to stderr.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from edgeconv.cli import call_with_new_options, handle_errors, parse_tolerances
from edgeconv.core.console import emit_json, stdout_to_stderr

GATE_FAILED = 1


def _summary(report: dict) -> None:
    for r in report.get("results", []):
        lat = r.get("latency_ms")
        p50 = f"p50 {lat['p50']:.3g} ms [{lat['p50_ci'][0]:.3g}, {lat['p50_ci'][1]:.3g}]" if lat else \
            ("latency n/a (proxy)" if r.get("proxy") else "")
        d = r.get("drift") or {}
        drift = f"cosine {d['cosine']:.6f}" if d.get("cosine") is not None else ""
        t = r.get("task") or {}
        task = ""
        if isinstance(t.get("value"), (int, float)) and isinstance(t.get("delta"), (int, float)):
            ci = t.get("delta_ci95")
            task = f"{t['metric']} {t['value']:.2f} ({t['delta']:+.2f}" + (
                f", 95% CI {ci[0]:+.2f}..{ci[1]:+.2f})" if ci and None not in ci else ")")
        elif t:
            task = f"{t.get('metric', 'task')}: no data"
        line = r.get("error") if r.get("status") != "ok" else "  ".join(x for x in (p50, drift, task) if x)
        click.echo(f"{r.get('status', '?'):<8}{r.get('profile', '?'):<20}{r.get('precision', '?'):<6}{line}")


def model_name(manifest: dict[str, Any], fallback: str) -> str:
    """What to call the model an artifact was made from: the bundled name, the factory, or the file's stem."""
    task = manifest.get("task") or {}
    if task.get("bundled"):
        return str(task["bundled"])
    src = manifest.get("source") or {}
    spec = str(src.get("spec") or src.get("path") or "")
    if not spec:
        return Path(fallback).name
    target, _, attr = spec.rpartition(":") if ":" in spec and not spec.endswith((".onnx", ".pt", ".pt2")) \
        else (spec, "", "")
    if target.endswith(".py"):
        return f"{Path(target).stem}:{attr}" if attr and attr != "build" else Path(target).stem
    if attr:  # package.module:factory
        return f"{target.rsplit('.', 1)[-1]}:{attr}" if attr != "build" else target.rsplit(".", 1)[-1]
    return Path(spec).stem


def _print_plan(plan: dict) -> None:
    for p in plan.get("plan", []):
        what = p.get("error") or ("cache hit" if p.get("cache_hit") else "convert")
        click.echo(f"plan    {p.get('profile', '?'):<20}{p.get('precision', '?'):<6}{p.get('out', '')}  ({what})")


def _gate(report: dict) -> None:
    failures = (report.get("comparison") or {}).get("failures") or []
    for f in failures:
        click.echo(f"gate: {f}", err=True)
    if failures:
        sys.exit(GATE_FAILED)


@click.command("bench")
@click.argument("artifact_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--data", help="Evaluation data: image folder (labelled: YOLO/COCO or ImageFolder), .npy/.npz "
              "tensors, or 'zoo' for the bundled eval split. Default: random inputs (drift only).")
@click.option("--out", "-o", default="bench-report", show_default=True, type=click.Path(file_okay=False),
              help="Folder for report.json/md/html and junit.xml.")
@click.option("--threads", type=int, help="Threads (default: the profile's).")
@click.option("--min-iters", default=50, show_default=True)
@click.option("--min-seconds", default=2.0, show_default=True)
@click.option("--streams", default=0, show_default=True, help="Throughput mode: requests in flight (>1 to enable).")
@click.option("--limit", default=100, show_default=True, help="Evaluation inputs.")
@click.option("--task", metavar="SPEC", help="Task spec (default: the manifest's): detection, classification, "
              "ctc:alphabet=@chars.txt,blank=0, segmentation:ignore=255 (docs/tasks.md).")
@click.option("--roofline", is_flag=True, help="Add each row's efficiency against this machine's measured peak.")
@click.option("--decoder", "--postprocess", "postprocess",
              help="Decoder plug-in MODULE:FN or FILE.py:FN (default: the manifest's).")
@click.option("--preprocess", help="Preprocessing contract (default: the artifact's).")
@click.option("--json", "as_json", is_flag=True, help="Print the report (report.json's content) on stdout.")
@handle_errors
def bench(artifact_dir: str, data: str | None, out: str, threads: int | None, min_iters: int, min_seconds: float,
          streams: int, limit: int, task: str | None, roofline: bool, postprocess: str | None,
          preprocess: str | None, as_json: bool) -> None:
    """Benchmark one converted artifact: latency (own process), drift and task metric vs its reference."""
    from edgeconv.bench.evaluate import BenchOptions, evaluate_artifact
    from edgeconv.bench.latency import LatencyConfig
    from edgeconv.bench.report import make_report, write_all
    from edgeconv.calibration.preprocess import Preprocess
    from edgeconv.core.artifact import Artifact

    art = Artifact.load(artifact_dir)
    opts = BenchOptions(LatencyConfig(min_iters=min_iters, min_seconds=min_seconds, streams=streams), threads,
                        limit)
    with stdout_to_stderr():  # runtimes that print must not mix into the results
        row = evaluate_artifact(art, data, options=opts, task=task, postprocess=postprocess,
                                preprocess=Preprocess.parse(preprocess) if preprocess else None)
    report = make_report([row], model={"name": model_name(art.manifest, artifact_dir),
                                       "sha256": (art.manifest.get("reference") or {}).get("sha256"),
                                       "source": (art.manifest.get("source") or {}).get("spec")},
                         reference=row.get("reference"), bench={**opts.latency.to_dict(), "threads": threads})
    if roofline:
        from edgeconv.bench.roofline import add_roofline

        add_roofline(report)
    paths = write_all(report, out)
    if as_json:
        emit_json(report)
    else:
        _summary(report)
        click.echo(f"report: {paths['report.md']}")
    if row["status"] == "failed":
        sys.exit(GATE_FAILED)


@click.command("run")
@click.argument("config", type=click.Path(exists=True, dir_okay=False))
@click.option("--out", "-o", required=True, type=click.Path(file_okay=False), help="Report folder.")
@click.option("--baseline", type=click.Path(exists=True), help="Baseline report.json (or its folder) to gate on.")
@click.option("--fail-on", help="Comma list of regression,drift,error (default with --baseline: all three; "
              "the config's [compare] fail_on wins over the default).")
@click.option("--threads", type=int, help="Threads per runtime for every target (default: the config's, else the "
              "profile's).")
@click.option("--tol", "tols", multiple=True, metavar="PRECISION.METRIC=VALUE",
              help="Tolerance over the profiles' (repeatable), e.g. int8.cosine=0.98.")
@click.option("--dry-run", is_flag=True, help="Print the plan (conversions, cache hits); convert and measure nothing.")
@click.option("--no-cache", is_flag=True, help="Ignore and do not fill the artifact cache.")
@click.option("--farm", metavar="local|ray://HOST:PORT", help="Benchmark the rows with a device on a Ray farm, on "
              "the nodes advertising it (ray start --resources '{\"device:NAME\": 1}'); local: a Ray on this machine.")
@click.option("--roofline", is_flag=True, help="Add each row's efficiency against this machine's measured peak.")
@click.option("--jobs", "-j", type=click.IntRange(min=1), help="Rows converted at once in worker processes before "
              "the benchmarks run one at a time (default: one per core, bounded by memory; $EDGECONV_JOBS).")
@click.option("--json", "as_json", is_flag=True, help="Print the report (report.json's content) on stdout.")
@handle_errors
def run(config: str, out: str, baseline: str | None, fail_on: str | None, threads: int | None, tols: tuple[str, ...],
        dry_run: bool, no_cache: bool, farm: str | None, roofline: bool, jobs: int | None, as_json: bool) -> None:
    """Convert and benchmark a model × targets × precisions matrix from CONFIG.toml into --out."""
    from edgeconv.bench.matrix import load_config, run_matrix

    cfg = load_config(config)
    if threads is not None:
        cfg["bench"] = {**(cfg.get("bench") or {}), "threads": threads}
    with stdout_to_stderr():  # converters and runtimes that print must not mix into the results
        report = call_with_new_options(run_matrix, cfg, out, baseline, fail_on=fail_on, use_cache=not no_cache,
                                       tolerances=parse_tolerances(tols), dry_run=dry_run, jobs=jobs,
                                       **({"farm": farm} if farm is not None else {}))
    if roofline and not dry_run:
        from edgeconv.bench.report import write_all
        from edgeconv.bench.roofline import add_roofline

        add_roofline(report)
        write_all(report, out)
    if as_json:
        emit_json(report)
    elif dry_run:
        _print_plan(report)
    else:
        _summary(report)
        click.echo(f"report: {Path(out) / 'report.md'}")
    if not dry_run:
        _gate(report)


@click.command("compare")
@click.argument("new", type=click.Path(exists=True))
@click.argument("baseline", type=click.Path(exists=True))
@click.option("--fail-on", default="", help="Comma list of regression,drift,error: exit 1 when one holds.")
@click.option("--min-effect", default=0.05, show_default=True,
              help="Smallest relative p50 change that counts as a regression (on top of disjoint CIs).")
@click.option("--out", "-o", type=click.Path(file_okay=False), help="Write the annotated report (4 files) here.")
@click.option("--json", "as_json", is_flag=True, help="Print the comparison (verdicts, conditions) on stdout.")
@handle_errors
def compare(new: str, baseline: str, fail_on: str, min_effect: float, out: str | None, as_json: bool) -> None:
    """Compare NEW/report.json with BASELINE/report.json; mark regressions; exit 1 when a --fail-on condition holds."""
    from edgeconv.bench import compare as cmp
    from edgeconv.bench.report import load_report, row_key, write_all

    names = cmp.parse_fail_on(fail_on)
    rep, base = load_report(new), load_report(baseline)
    c = cmp.compare_reports(rep, base, min_effect=min_effect)
    cmp.annotate(rep, c, names, str(baseline))
    if as_json:
        emit_json(rep["comparison"])
    else:
        for r in rep.get("results", []):
            v = r.get("comparison") or {}
            ch = f" {v['change']:+.1%}" if v.get("change") is not None else ""
            click.echo(f"{v.get('verdict', 'n/a'):<12}{row_key(r):<28}{ch}  {v.get('detail', r.get('error') or '')}")
    for cond, msgs in c.conditions.items():
        for m in msgs:
            click.echo(f"{cond}: {m}", err=True)
    if out:
        write_all(rep, out)
    failures = c.holds(names)
    if failures:
        click.echo(f"failed: {len(failures)} condition(s) from --fail-on {','.join(names)}", err=True)
        sys.exit(GATE_FAILED)


COMMANDS = [bench, run, compare]
