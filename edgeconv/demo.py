"""``edgeconv demo``: the main job on the bundled YOLO-style detector, out of the box.

Converts the bundled detector to every target installed here, at each precision its generic profile supports
(INT8 calibrated on the bundled sample in ``calibration/shapes``), benchmarks latency, drift and mAP on the
generated evaluation split, and writes report.json / report.md / report.html / junit.xml.  It is a thin
config over the same ``edgeconv run`` matrix users run in CI.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from edgeconv.core.console import console

# Generic profile per backend, in the order the report lists them.
DEMO_TARGETS = ("onnxruntime", "openvino", "ncnn", "tflite", "tensorrt")


def demo_config(model: str = "yolo", *, limit: int = 500, min_seconds: float = 2.0, min_iters: int = 50,
                targets: tuple[str, ...] = DEMO_TARGETS, threads: int = 0) -> dict[str, Any]:
    """The run config of the demo: every generic profile at each of its precisions."""
    from edgeconv.profiles import load_profile
    from edgeconv.zoo import BUNDLED

    bundled = BUNDLED[model]
    rows = []
    for name in targets:
        prof = load_profile(name)
        rows.append({"profile": name, "precisions": list(prof.precisions)})
    return {
        "name": f"edgeconv demo ({model})",
        "model": {"source": f"zoo:{model}"},
        "data": {"eval": "zoo", "calib": str(bundled.calibration_dir), "limit": limit},
        "targets": rows,
        "bench": {"min_iters": min_iters, "min_seconds": min_seconds, "threads": threads},
    }


@click.command()
@click.option("--out", "-o", default="demo-out", show_default=True, type=click.Path(file_okay=False),
              help="Where the artifacts and the four report files go.")
@click.option("--model", type=click.Choice(["yolo", "centernet", "classifier"]), default="yolo", show_default=True,
              help="Bundled model.")
@click.option("--target", "targets", multiple=True, help="Limit to these generic profiles (repeatable).")
@click.option("--limit", default=500, show_default=True, help="Evaluation images (the split has 500).")
@click.option("--min-seconds", default=2.0, show_default=True, help="Latency: measure at least this long per row.")
@click.option("--threads", default=0, show_default=True, help="Threads per runtime (0: the profile's).")
@click.option("--baseline", type=click.Path(exists=True, dir_okay=False), help="Compare with an earlier report.json.")
@click.option("--no-cache", is_flag=True, help="Rebuild every artifact.")
def demo(out: str, model: str, targets: tuple[str, ...], limit: int, min_seconds: float, threads: int,
         baseline: str | None, no_cache: bool) -> None:
    """Run the main job on a bundled model: convert to every installed target, benchmark, report."""
    from edgeconv.bench.matrix import run_matrix
    from edgeconv.cli import handle_errors

    @handle_errors
    def _run() -> None:
        cfg = demo_config(model, limit=limit, min_seconds=min_seconds, targets=targets or DEMO_TARGETS,
                          threads=threads)
        report = run_matrix(cfg, out, baseline=baseline, use_cache=not no_cache)
        _print_summary(report, Path(out))
        if report.get("comparison", {}).get("failures"):
            sys.exit(1)

    _run()


def _print_summary(report: dict[str, Any], out: Path) -> None:
    from rich.table import Table

    t = Table(title=f"edgeconv demo — {report.get('model', {}).get('name', '')}")
    for c in ("target", "precision", "status", "p50 ms", "max abs drift", "task", "delta", "note"):
        t.add_column(c)
    for r in report.get("results", []):
        lat = r.get("latency_ms") or {}
        drift = r.get("drift") or {}
        task = r.get("task") or {}
        t.add_row(r.get("profile", r.get("target", "")), r.get("precision", ""), r.get("status", ""),
                  f"{lat['p50']:.2f}" if lat.get("p50") is not None else "-",
                  f"{drift['max_abs']:.2e}" if drift.get("max_abs") is not None else "-",
                  f"{task['value']:.4f}" if task.get("value") is not None else "-",
                  f"{task['delta']:+.4f}" if task.get("delta") is not None else "-",
                  (r.get("error") or r.get("latency_note") or "")[:60])
    console.print(t)
    console.print(f"reports: {out / 'report.json'}, {out / 'report.md'}, {out / 'report.html'}, {out / 'junit.xml'}")


COMMANDS = [demo]
