"""``edgeconv diagnose`` (layer-wise drift of an artifact) and ``edgeconv lint`` (INT8 hazards before quantizing)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from edgeconv.cli import handle_errors
from edgeconv.core.console import emit_json, escape, print_table
from edgeconv.core.errors import ConfigError


def _fmt(v: Any, spec: str) -> str:
    return format(v, spec) if isinstance(v, (int, float)) else "n/a"


@click.command("diagnose")
@click.argument("artifact", type=click.Path(exists=True))
@click.argument("artifact2", required=False, type=click.Path(exists=True))
@click.option("--data", help="Inputs: image folder, .npy/.npz tensors, or 'zoo' (bundled models' eval split).")
@click.option("--samples", default=8, show_default=True, help="Number of inputs compared.")
@click.option("--top", default=5, show_default=True, help="Jumps listed.")
@click.option("--all", "all_rows", is_flag=True, help="List every compared tensor, not only the jumps.")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False), help="Write an SVG plot of SNR per layer.")
@click.option("--threads", type=int, help="Runtime threads.")
@click.option("--no-reexport", is_flag=True, help="Do not re-export a bundled model to recover module names.")
@click.option("--model", "model_spec", help="The model the reference came from (FILE.py:FACTORY), for module names.")
@click.option("--weights", "-w", help="Its checkpoint (with --model).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable result on stdout.")
@handle_errors
def diagnose_cmd(artifact: str, artifact2: str | None, data: str | None, samples: int, top: int, all_rows: bool,
                 plot_path: str | None, threads: int | None, no_reexport: bool, model_spec: str | None,
                 weights: str | None, as_json: bool) -> None:
    """Where, layer by layer, ARTIFACT departs from its reference ONNX (or ARTIFACT2 from ARTIFACT): SNR per
    tensor, and the first layers where the drift jumps, named by ONNX node and PyTorch module."""
    from edgeconv.diagnose.core import diagnose
    from edgeconv.diagnose.plot import write_svg

    if plot_path and not plot_path.lower().endswith(".svg"):
        raise ConfigError(f"--plot {plot_path}: only SVG plots are written", hint="use a .svg file name")
    module = None
    if model_spec:
        from edgeconv.intake.loader import load_source

        module = load_source(model_spec, weights=weights).module
    d = diagnose(artifact, artifact2, data=data, samples=samples, threads=threads, reexport=not no_reexport,
                 module=module)
    if plot_path:
        write_svg(d.rows, plot_path, f"{d.b} vs {d.a}: per-layer SNR ({d.samples} inputs)")
    if as_json:
        out = d.to_json(all_rows=True)
        if plot_path:
            out["plot"] = str(Path(plot_path))
        emit_json(out)
        return
    _print(d, top, all_rows, plot_path)


def _print(d: Any, top: int, all_rows: bool, plot_path: str | None) -> None:
    from rich.table import Table

    click.echo(f"{d.b} vs {d.a}: {d.matched['compared']} of {d.matched['reference_tensors']} reference tensors "
               f"compared on {d.samples} inputs")
    for label, f in d.fused.items():
        if f:
            click.echo(f"fused end-to-end ({label}, untouched artifact): worst cosine {_fmt(f['cosine_worst'], '.6f')}"
                       f", SNR {_fmt(f['snr_db'], '.1f')} dB"
                       + (f", tap effect {_fmt(f['tap_effect'], '.3g')}" if f.get("tap_effect") is not None else ""))
    for n in d.notes:
        click.echo(f"note: {n}")
    rows = d.rows if all_rows else d.jumps(top)
    t = Table(title="every compared tensor" if all_rows else f"first {len(rows)} jump(s) in graph order")
    for col in ("#", "module", "ONNX node", "op", "tensor", "SNR dB", "worst cos", "blame", "jump"):
        t.add_column(col)
    for r in rows:
        t.add_row(str(r.index), escape(r.module if r.module is not None else "?"), escape(r.node), escape(r.op),
                  escape(r.tensor), _fmt(r.snr_db, ".1f"), _fmt(r.cosine_min, ".4f"), _fmt(r.blame, ".2e"),
                  "yes" if r.jump else "")
    print_table(t)
    culprits = d.culprits(top)
    if culprits:
        c = culprits[0]
        click.echo(f"most to blame: {c.module or '?'} ({c.node}, {c.op}) — SNR {c.snr_db:.1f} dB; keep it in float "
                   f"with --keep-fp32 '{c.node}'")
    else:
        click.echo("no layer stands out: the drift grows evenly")
    if plot_path:
        click.echo(f"plot: {plot_path}")


@click.command("lint")
@click.argument("model")
@click.option("--weights", "-w", help="Checkpoint, when MODEL is a FILE.py:FACTORY model.")
@click.option("--input", "inputs", multiple=True, metavar="[NAME:]1x3xHxW[:dtype]",
              help="Model input (repeatable; without NAME the model's own input name).")
@click.option("--calib", type=click.Path(), help="Calibration data (enables the range and outlier rules).")
@click.option("--calib-size", default=512, show_default=True, help="Calibration samples the INT8 run would use.")
@click.option("--preprocess", help="Preprocessing contract (as for convert).")
@click.option("--outlier-samples", default=32, show_default=True, help="Inputs used for the outlier statistics.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable result on stdout.")
@handle_errors
def lint_cmd(model: str, weights: str | None, inputs: tuple[str, ...], calib: str | None, calib_size: int,
             preprocess: str | None, outlier_samples: int, as_json: bool) -> None:
    """INT8 hazards of MODEL (a model spec, an .onnx file or an artifact folder) before quantizing: mixed-range
    concatenated outputs, decode/NMS in the graph, outlier activations, whole-tensor normalisations, tiny
    calibration sets — each with the --keep-fp32 or preprocessing change that avoids it."""
    findings, where = run_lint(model, weights=weights, inputs=list(inputs), calib=calib, calib_size=calib_size,
                               preprocess=preprocess, outlier_samples=outlier_samples)
    if as_json:
        emit_json({"schema": "edgeconv.lint/1", "model": model, "reference": str(where),
                   "findings": [f.to_dict() for f in findings]})
        return
    if not findings:
        click.echo(f"{model}: no INT8 hazards found")
        return
    from rich.table import Table

    t = Table(title=f"INT8 lint: {model}")
    for col in ("rule", "module", "what", "suggested change"):
        t.add_column(col)
    for f in findings:
        keep = " ".join(f"--keep-fp32 '{k}'" for k in f.keep_fp32[:6])
        t.add_row(escape(f.rule), escape(", ".join(f.modules[:4]) or "-"), escape(f.message),
                  escape((keep + "; " if keep else "") + f.suggestion))
    print_table(t)


def run_lint(model: str, *, weights: str | None = None, inputs: list[str] | None = None, calib: str | None = None,
             calib_size: int = 512, preprocess: str | None = None, outlier_samples: int = 32) -> tuple[list[Any], Path]:
    """Lint findings for a model spec / .onnx / artifact folder, with statistics when calibration data exists."""
    from edgeconv.calibration.preprocess import Preprocess
    from edgeconv.calibration.stats import compute_stats
    from edgeconv.lint import lint
    from edgeconv.pipeline import make_calibration, prepare

    p = Path(model)
    if p.is_dir() and (p / "manifest.json").is_file():
        p = p / "reference.onnx"
    pp = Preprocess.parse(preprocess) if preprocess else None
    prep = prepare(str(p) if p.suffix == ".onnx" else model, weights=weights, inputs=inputs or None,
                   preprocess=pp)
    ref = prep.reference
    cal = None
    if calib is not None or prep.calib_dir is not None:
        cal = make_calibration(prep, calib, size=calib_size, preprocess=pp)
    from edgeconv.diagnose.modules import reference_module_map

    modules = reference_module_map(ref)
    if cal is None:
        return lint(ref.onnx_path, None, None, modules=modules), ref.onnx_path
    stats = compute_stats(ref.onnx_path, ref.sha256, cal, "minmax")
    feeds = (f for _, f in zip(range(outlier_samples), cal.feeds(), strict=False))
    return lint(ref.onnx_path, stats, len(cal), feeds=feeds, modules=modules), ref.onnx_path


COMMANDS = [diagnose_cmd, lint_cmd]
