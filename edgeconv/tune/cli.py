"""``edgeconv tune``: the command over :func:`edgeconv.tune.search.tune`."""

from __future__ import annotations

import click

from edgeconv.cli import handle_errors
from edgeconv.core.console import emit_json, escape, print_table, stdout_to_stderr
from edgeconv.tune.pareto import margin_text


def _ints(values: tuple[str, ...], flag: str) -> list[int] | None:
    from edgeconv.core.errors import ConfigError

    out: list[int] = []
    for v in values:
        for part in str(v).split(","):
            try:
                out.append(int(part))
            except ValueError as e:
                raise ConfigError(f"{flag} {part!r} is not an integer", hint=f"e.g. {flag} 1,2") from e
    return sorted(set(out), reverse=True) or None


@click.command("tune")
@click.option("--model", "-m", required=True, help="FILE.py:FACTORY, MODULE:FACTORY, .onnx/.pt2/TorchScript, zoo:NAME.")
@click.option("--weights", help="State dict / checkpoint / safetensors for a factory.")
@click.option("--input", "inputs", multiple=True, help="Input spec [NAME:]1x3xHxW (repeatable).")
@click.option("--device", "devices", multiple=True, required=True,
              help="Profile name or .toml to search (repeatable), or `host`: every installed CPU backend here.")
@click.option("--out", "-o", required=True, type=click.Path(file_okay=False), help="Result folder (tune.json, best/).")
@click.option("--precision", "-p", "precisions", multiple=True, help="Precisions to try (default: all allowed).")
@click.option("--threads", multiple=True, help="Thread counts to try, e.g. 1,2 (default: 1 and every core).")
@click.option("--streams", multiple=True, help="Throughput streams to try (>1: also measures throughput).")
@click.option("--max-candidates", default=24, show_default=True, help="Most candidates measured.")
@click.option("--time-budget", type=float, help="Seconds; no new candidate starts after it is spent.")
@click.option("--max-drop", type=float, help="Task-metric budget in points for every candidate (default: each "
              "profile's task_delta).")
@click.option("--data", default="zoo", show_default=True, help="Evaluation data (zoo = the bundled split).")
@click.option("--calib", help="Calibration data for INT8 (default: the bundled model's).")
@click.option("--preprocess", help="Preprocessing contract.")
@click.option("--limit", default=100, show_default=True, help="Evaluation inputs per candidate.")
@click.option("--min-iters", default=30, show_default=True)
@click.option("--min-seconds", default=1.0, show_default=True)
@click.option("--no-cache", is_flag=True, help="Ignore and do not fill the artifact cache.")
@click.option("--json", "as_json", is_flag=True, help="Print tune.json on stdout.")
@handle_errors
def tune(model: str, weights: str | None, inputs: tuple[str, ...], devices: tuple[str, ...], out: str,
         precisions: tuple[str, ...], threads: tuple[str, ...], streams: tuple[str, ...], max_candidates: int,
         time_budget: float | None, max_drop: float | None, data: str, calib: str | None, preprocess: str | None,
         limit: int, min_iters: int, min_seconds: float, no_cache: bool, as_json: bool) -> None:
    """Search backend × precision × runtime options for the fastest artifact within the accuracy budget."""
    from rich.table import Table

    from edgeconv.tune.search import TuneOptions
    from edgeconv.tune.search import tune as run_tune
    from edgeconv.tune.table import COLUMNS, rows

    opts = TuneOptions(precisions=list(precisions) or None, threads=_ints(threads, "--threads"),
                       streams=_ints(streams, "--streams"), max_candidates=max_candidates, time_budget_s=time_budget,
                       max_drop=max_drop, min_iters=min_iters, min_seconds=min_seconds, limit=limit)
    with stdout_to_stderr():  # converters and runtimes that print must not mix into the results
        doc = run_tune(model, list(devices), out, weights=weights, inputs=list(inputs) or None, data=data,
                       calib=calib, preprocess=preprocess, options=opts, use_cache=not no_cache)
    if as_json:
        emit_json(doc)
        return
    t = Table(title=f"edgeconv tune ({doc['cost_axis']} cost)")
    for col in COLUMNS:
        t.add_column(col)
    for r in rows(doc):
        t.add_row(*(escape(x) for x in r))
    print_table(t)
    click.echo(f"recommended: {doc['recommended'] or 'none within the budget'}"
               + (f" -> {doc['best_path']}" if doc.get("best_path") else "") + margin_text(doc.get("margin")))
    click.echo(f"tune.json: {out}/tune.json")


COMMANDS = [tune]
