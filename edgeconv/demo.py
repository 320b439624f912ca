"""``edgeconv demo``: the main job on the bundled YOLO-style detector, out of the box.

Converts the bundled detector to every backend installed here (from the target registry, each with its generic
profile, the one named like the backend), at each precision that profile supports (INT8 calibrated on the bundled
sample), benchmarks latency, drift and mAP on the generated evaluation split, and writes report.json / report.md /
report.html / junit.xml.  It is a thin config over the same ``edgeconv run`` matrix users run in CI, so its exit code
is the gate ``edgeconv compare NEW BASELINE --fail-on ...`` computes on the same report.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from edgeconv.core.console import emit_json, escape, log, print_table, stdout_to_stderr
from edgeconv.profiles import PRECISIONS

REFERENCE_BACKEND = "onnxruntime"  # listed first: the other rows are read against it


def demo_targets(only: tuple[str, ...] = ()) -> list[str]:
    """Generic profiles of the installed backends, reference runtime first; ``only`` limits (and orders) them.

    A backend counts when the registry has it, its modules are importable and a profile named like it exists; the
    rest are named in one log line so a missing one is visible without failing the demo.
    """
    from edgeconv.core.errors import ConfigError
    from edgeconv.profiles import list_profiles
    from edgeconv.targets.registry import all_targets

    backends = all_targets()
    profiles = list_profiles()
    if only:
        unknown = [t for t in only if t not in profiles]
        if unknown:
            raise ConfigError(f"unknown target(s) {unknown} for the demo", hint=f"known: {', '.join(profiles)}")
        return list(only)
    names = sorted(backends, key=lambda n: (n != REFERENCE_BACKEND, list(backends).index(n)))
    chosen = [n for n in names if n in profiles and backends[n].available()]
    left = [f"{n} (pip install 'edgeconv[{backends[n].extra}]')" for n in names if n not in chosen]
    if left:
        log.info("demo: not installed here, so not in the demo: %s", ", ".join(left))
    if not chosen:
        raise ConfigError("no installed backend has a generic profile", hint="pip install 'edgeconv[all]'")
    return chosen


def demo_config(model: str = "yolo", *, limit: int = 200, min_seconds: float = 1.0, min_iters: int = 50,
                targets: list[str] | tuple[str, ...] | None = None, threads: int | None = None,
                precisions: tuple[str, ...] = (), end2end: bool = True) -> dict[str, Any]:
    """The run config of the demo: each target at each of its profile's precisions (or those of ``precisions``)."""
    from edgeconv.profiles import load_profile
    from edgeconv.zoo import BUNDLED

    bundled = BUNDLED[model]
    rows = []
    for name in targets if targets is not None else demo_targets():
        prof = load_profile(name)
        skip = _demo_skip(prof.backend) if not precisions else {}
        for prec, why in skip.items():
            if prec in prof.precisions:
                log.info("demo: %s %s left out (%s)", name, prec, why)
        precs = [p for p in prof.precisions if (not precisions or p in precisions) and p not in skip]
        if precs:
            rows.append({"profile": name, "precisions": precs})
    if end2end and not precisions and bundled.task == "detection":
        rows += _end2end_rows([r["profile"] for r in rows])
    return {
        "name": f"edgeconv demo ({model})",
        "model": {"source": f"zoo:{model}", "name": model},
        "data": {"eval": "zoo", "calib": str(bundled.calibration_dir), "limit": limit},
        "targets": rows,
        "bench": {"min_iters": min_iters, "min_seconds": min_seconds, "threads": threads or 0},
    }


def _end2end_rows(profiles: list[str]) -> list[dict[str, Any]]:
    """fp32 rows whose artifacts ship decode + NMS (the detections contract) for each ONNX-route target.

    Torch-route targets are left out of the default demo: their end2end artifact is a second full conversion from
    the module (minutes on 2 cores); ``edgeconv convert --postprocess end2end`` makes it on request.
    """
    from edgeconv.profiles import load_profile
    from edgeconv.targets.registry import all_targets

    backends = all_targets()
    out = []
    for name in profiles:
        b = backends.get(load_profile(name).backend)
        if b is not None and not b.needs_torch_module and "fp32" in b.precisions:
            out.append({"profile": name, "precisions": ["fp32"], "postprocess": "end2end"})
    return out


def _demo_skip(backend: str) -> dict[str, str]:
    """Precisions a backend declares too slow or known-bad for the default demo (its ``demo_skip``)."""
    from edgeconv.targets.registry import all_targets

    t = all_targets().get(backend)
    return dict(getattr(t, "demo_skip", {}) or {})


def failed_checks(row: dict[str, Any]) -> list[str]:
    """What made an ``ok`` row not clean, in words: ``fp16 drift max_abs 0.025 > 0.01``, a task drop, a regression."""
    out = []
    prec = row.get("precision", "")
    for c in (row.get("drift") or {}).get("checks") or []:
        if c.get("pass") is False:  # None: not judged (NMS output order on end2end rows)
            op = "<" if c.get("name") in ("cosine", "snr_db") else ">"
            out.append(f"{prec} drift {c.get('name')} {_g(c.get('value'))} {op} {_g(c.get('limit'))}")
    t = row.get("task") or {}
    if t.get("pass") is False:
        out.append(f"{prec} {t.get('metric')} {t.get('delta', 0):+.2f} below the reference (budget "
                   f"{_g(t.get('tolerance'))})")
    c = row.get("comparison") or {}
    if c.get("regression"):
        out.append(f"latency regression {c['change']:+.1%}" if c.get("change") is not None else "latency regression")
    return out


def _g(v: Any) -> str:
    return f"{v:.3g}" if isinstance(v, (int, float)) else str(v)


def row_status(row: dict[str, Any]) -> str:
    """``ok``, ``ok, fp16 drift max_abs 0.025 > 0.01``, ``failed: ...`` or ``skipped: ...``."""
    if row.get("status") != "ok":
        return f"{row.get('status')}: {row.get('error') or ''}".strip().rstrip(":")
    checks = failed_checks(row)
    return "ok" + (", " + "; ".join(checks) if checks else "")


def gate_exit_code(report: dict[str, Any]) -> int:
    """1 when a ``--fail-on`` condition holds (the same failures ``edgeconv compare`` lists), else 0."""
    return 1 if (report.get("comparison") or {}).get("failures") else 0


@click.command()
@click.option("--out", "-o", default="demo-out", show_default=True, type=click.Path(file_okay=False),
              help="Where the artifacts and the four report files go.")
@click.option("--model", type=click.Choice(["yolo", "centernet", "classifier"]), default="yolo", show_default=True,
              help="Bundled model.")
@click.option("--target", "-t", "targets", multiple=True,
              help="Limit to these profiles (repeatable; default: every installed backend's generic profile).")
@click.option("--precision", "-p", "precisions", multiple=True, type=click.Choice(PRECISIONS),
              help="Limit to these precisions (repeatable; default: each profile's).")
@click.option("--limit", default=200, show_default=True, help="Evaluation images for the report (the split has 500; "
              "INT8 rows are also held to their budget at conversion on 100 held-out images).")
@click.option("--jobs", "-j", type=click.IntRange(min=1), help="Rows converted at once before the benchmarks "
              "(default: one per core, bounded by memory).")
@click.option("--min-iters", default=50, show_default=True, help="Latency: at least this many iterations per row.")
@click.option("--min-seconds", default=1.0, show_default=True, help="Latency: measure at least this long per row "
              "(`edgeconv run` defaults to 2 s).")
@click.option("--threads", type=int, help="Threads per runtime (default: the profile's).")
@click.option("--baseline", type=click.Path(exists=True), help="Compare with an earlier report.json (or its folder).")
@click.option("--fail-on", help="Comma list of regression,drift,error (default with --baseline: all three), as "
              "`edgeconv compare --fail-on` reads it.")
@click.option("--no-cache", is_flag=True, help="Rebuild every artifact.")
@click.option("--end2end/--no-end2end", default=True, show_default=True,
              help="Detectors: add fp32 rows whose artifacts ship decode + NMS (the detections contract).")
@click.option("--json", "as_json", is_flag=True, help="Print the report (report.json's content) on stdout.")
def demo(out: str, model: str, targets: tuple[str, ...], precisions: tuple[str, ...], limit: int, jobs: int | None,
         min_iters: int, min_seconds: float, threads: int | None, baseline: str | None, fail_on: str | None,
         no_cache: bool, end2end: bool, as_json: bool) -> None:
    """Run the main job on a bundled model: convert to every installed target, benchmark, report."""
    from edgeconv.bench.matrix import run_matrix
    from edgeconv.cli import handle_errors

    @handle_errors
    def _run() -> None:
        cfg = demo_config(model, limit=limit, min_seconds=min_seconds, min_iters=min_iters,
                          targets=demo_targets(targets), threads=threads, precisions=precisions,
                          end2end=end2end and not precisions)
        with stdout_to_stderr():  # converters and runtimes that print must not mix into the results
            report = run_matrix(cfg, out, baseline=baseline, fail_on=fail_on, use_cache=not no_cache, jobs=jobs)
        if as_json:
            emit_json(report)
        else:
            print_summary(report, Path(out))
        for f in (report.get("comparison") or {}).get("failures") or []:
            click.echo(f"gate: {f}", err=True)
        sys.exit(gate_exit_code(report))

    _run()


def print_summary(report: dict[str, Any], out: Path) -> None:
    """The result table on stdout; the status column names every check that failed."""
    from rich.table import Table

    t = Table(title=f"edgeconv demo: {escape(report.get('model', {}).get('name', ''))}")
    for c in ("target", "precision", "status", "p50 ms", "max abs drift", "task", "delta"):
        t.add_column(c)
    notes = []
    for r in report.get("results", []):
        lat = r.get("latency_ms") or {}
        drift = r.get("drift") or {}
        task = r.get("task") or {}
        st = row_status(r)
        if len(st) > 60:
            notes.append(f"{r.get('profile', r.get('target', ''))}/{r.get('precision', '')}: {st}")
            st = st[:57] + "..."
        t.add_row(escape(r.get("profile", r.get("target", ""))), escape(r.get("precision", "")), escape(st),
                  f"{lat['p50']:.2f}" if lat.get("p50") is not None else "-",
                  f"{drift['max_abs']:.2e}" if drift.get("max_abs") is not None else "-",
                  f"{task['value']:.2f} {escape(task.get('metric', ''))}" if task.get("value") is not None else "-",
                  f"{task['delta']:+.2f}" if task.get("delta") is not None else "-")
    print_table(t)
    for n in notes:
        click.echo(n)
    ok = sum(1 for r in report.get("results", []) if r.get("status") == "ok")
    clean = sum(1 for r in report.get("results", []) if row_status(r) == "ok")
    click.echo(f"{ok}/{len(report.get('results', []))} rows ok ({clean} with every check passed); reports: "
               f"{out / 'report.json'}, {out / 'report.md'}, {out / 'report.html'}, {out / 'junit.xml'}")


COMMANDS = [demo]
