"""The ``edgeconv`` command: a thin click layer over the public API.

Every error is an EdgeconvError printed as one line plus a hint, with an exit code by kind (README: "Exit codes");
``--verbose`` adds the traceback.
"""

from __future__ import annotations

import functools
import json
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from edgeconv.core.console import console, setup_logging
from edgeconv.core.errors import ConfigError, EdgeconvError


def handle_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn EdgeconvErrors (and crashes) into one line + hint + exit code."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        ctx = click.get_current_context()
        verbose = (ctx.find_root().params.get("verbose") or kwargs.get("verbose")) if ctx else False
        try:
            return fn(*args, **kwargs)
        except EdgeconvError as e:
            if verbose:
                console.print_exception() if sys.exc_info()[0] else None
                tb = getattr(e, "child_traceback", None)
                if tb:
                    console.print(tb)
            click.echo(e.one_line(), err=True)
            if e.hint:
                click.echo(f"  hint: {e.hint}", err=True)
            sys.exit(e.exit_code)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)
        except click.exceptions.Exit:
            raise
        except Exception as e:  # a bug in edgeconv or a backend: still one line, traceback with --verbose
            if verbose:
                traceback.print_exc()
            click.echo(f"internal error: {type(e).__name__}: {' '.join(str(e).split())[:300]}", err=True)
            click.echo("  hint: re-run with --verbose and report it", err=True)
            sys.exit(70)

    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.option("--verbose", "-v", is_flag=True, help="Debug logging and full tracebacks.")
@click.version_option(package_name="edgeconv")
def main(verbose: bool) -> None:
    """edgeconv: convert PyTorch models for edge devices and prove how they run there."""
    setup_logging(verbose)


def _kv(items: tuple[str, ...], what: str) -> dict[str, Any]:
    from edgeconv.intake.loader import parse_model_args

    try:
        return parse_model_args(list(items))
    except ConfigError as e:
        raise ConfigError(e.message.replace("--model-arg", what), hint=f"e.g. {what} key=value") from e


@main.command()
@click.option("--model", "-m", required=True, help="FILE.py:FACTORY, MODULE:FACTORY, TorchScript/.pt2/.onnx file, "
              "or zoo:NAME for a bundled model.")
@click.option("--weights", "-w", help="state_dict checkpoint (.pt/.pth/.safetensors).")
@click.option("--model-arg", multiple=True, metavar="KEY=VALUE", help="Keyword argument for the factory (repeatable).")
@click.option("--trust-checkpoint", is_flag=True, help="Allow checkpoints that need arbitrary unpickling (runs code).")
@click.option("--input", "inputs", multiple=True, metavar="NAME:1x3xHxW[:dtype]", help="Model input (repeatable).")
@click.option("--output-name", "output_names", multiple=True, help="Names for the model outputs, in order.")
@click.option("--target", "-t", "targets", multiple=True, required=True,
              help="Profile name (see `edgeconv targets`) or path to a profile .toml (repeatable).")
@click.option("--precision", "-p", "precisions", multiple=True, type=click.Choice(["fp32", "fp16", "int8"]),
              help="Precision(s); default: the profile's.")
@click.option("--out", "-o", required=True, type=click.Path(file_okay=False), help="Output folder; artifacts go to "
              "OUT/<profile>-<precision>/.")
@click.option("--opset", default=17, show_default=True, help="ONNX opset (the dynamo exporter uses >= 18).")
@click.option("--exporter", "exporters", multiple=True, type=click.Choice(["dynamo", "legacy"]),
              help="Exporter order (default: dynamo, then legacy).")
@click.option("--dynamic", type=click.Choice(["batch", "spatial", "batch,spatial"]), help="Dynamic axes (opt-in).")
@click.option("--max-batch", default=8, show_default=True, help="Largest batch of the dynamic profile.")
@click.option("--no-simplify", is_flag=True, help="Skip onnxsim/onnxslim.")
@click.option("--calib", type=click.Path(), help="Calibration data: image folder or .npy/.npz tensors.")
@click.option("--calib-size", default=512, show_default=True, help="Number of calibration samples (seeded).")
@click.option("--calib-seed", default=0, show_default=True)
@click.option("--calib-method", type=click.Choice(["minmax", "entropy", "percentile"]), help="Activation statistics.")
@click.option("--preprocess", help="Preprocessing contract: key=value list (size=320x320,color=BGR,resize=letterbox,"
              "scale=1/255,mean=a/b/c,std=a/b/c,order=scale-first,layout=NCHW) or a .json/.toml file.")
@click.option("--keep-fp32", multiple=True, metavar="NAME|PATTERN|op:TYPE", help="Layers kept in float (repeatable).")
@click.option("--route", type=click.Choice(["onnx", "torch"]), help="Backend route where it has two.")
@click.option("--max-drop", type=float, help="Accuracy budget for INT8 (task metric), where the backend has one.")
@click.option("--embed-preprocess", is_flag=True, help="Embed the preprocessing into the model (OpenVINO).")
@click.option("--option", "backend_options", multiple=True, metavar="KEY=VALUE", help="Backend option (repeatable).")
@click.option("--no-cache", is_flag=True, help="Ignore and do not fill the artifact cache.")
@handle_errors
def convert(model: str, weights: str | None, model_arg: tuple[str, ...], trust_checkpoint: bool,
            inputs: tuple[str, ...], output_names: tuple[str, ...], targets: tuple[str, ...],
            precisions: tuple[str, ...], out: str, opset: int, exporters: tuple[str, ...], dynamic: str | None,
            max_batch: int, no_simplify: bool, calib: str | None, calib_size: int, calib_seed: int,
            calib_method: str | None, preprocess: str | None, keep_fp32: tuple[str, ...], route: str | None,
            max_drop: float | None, embed_preprocess: bool, backend_options: tuple[str, ...], no_cache: bool) -> None:
    """Convert a model to one or more targets; every artifact is verified against the reference ONNX."""
    from edgeconv.api import convert as api_convert
    from edgeconv.calibration.preprocess import Preprocess
    from edgeconv.export.onnx_export import EXPORTERS, DynamicSpec

    options = _kv(backend_options, "--option")
    for k, v in (("route", route), ("max_drop", max_drop), ("calib_method", calib_method)):
        if v is not None:
            options[k] = v
    if embed_preprocess:
        options["embed_preprocess"] = True
    dyn = DynamicSpec(batch="batch" in (dynamic or ""), spatial="spatial" in (dynamic or ""), max_batch=max_batch)
    outcomes = api_convert(model, targets=list(targets), out=out, precisions=list(precisions) or None,
                           weights=weights, model_args=list(model_arg), inputs=list(inputs),
                           output_names=list(output_names) or None, opset=opset, exporters=exporters or EXPORTERS,
                           dynamic=dyn, simplify=not no_simplify, calib=calib, calib_size=calib_size,
                           calib_seed=calib_seed, preprocess=Preprocess.parse(preprocess) if preprocess else None,
                           keep_fp32=keep_fp32, options=options, use_cache=not no_cache,
                           trust_checkpoint=trust_checkpoint)
    failed = [o for o in outcomes if not o.ok]
    for o in outcomes:
        if o.ok:
            v = o.artifact.manifest.get("verification", {}).get("drift", {})
            click.echo(f"ok      {o.profile:<20} {o.precision:<5} {o.out}  "
                       f"(max_abs {v.get('max_abs', float('nan')):.2e}, cosine {v.get('cosine', float('nan')):.6f})")
        else:
            click.echo(f"failed  {o.profile:<20} {o.precision:<5} {o.error.one_line()}")
    if failed:
        sys.exit(max(o.error.exit_code for o in failed))


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@handle_errors
def targets(as_json: bool) -> None:
    """Every target profile: installed or not, how to install it, its precisions."""
    from rich.table import Table

    from edgeconv.api import list_targets

    rows = list_targets()
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    t = Table(title="edgeconv targets")
    for col in ("profile", "backend", "converts here", "runs here", "precisions", "install / note"):
        t.add_column(col)
    for r in rows:
        t.add_row(r["profile"], r["backend"], "yes" if r["installed"] else "no",
                  "yes" if r["runs_here"] else "no", ",".join(r["precisions"]),
                  r["install"] if not r["installed"] else (r["why_not"] or ""))
    console.print(t) if console.is_terminal else click.echo(_plain(t))


def _plain(table: Any) -> str:
    from rich.console import Console

    c = Console(width=160, record=True, file=open("/dev/null", "w"))  # noqa: SIM115
    c.print(table)
    return c.export_text()


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@handle_errors
def doctor(as_json: bool) -> None:
    """Versions, CPU flags and which targets are usable on this machine."""
    from edgeconv.api import doctor as api_doctor

    d = api_doctor()
    if as_json:
        click.echo(json.dumps(d, indent=2, default=str))
        return
    env = d["environment"]
    click.echo(f"cpu:      {env['cpu']} ({env['arch']}, {env['cores']} cores)")
    click.echo(f"flags:    {' '.join(env['cpu_flags']) or '-'}")
    click.echo(f"os:       {env['os']}, python {env['python']}")
    click.echo("versions: " + ", ".join(f"{k} {v}" for k, v in env["versions"].items()))
    for name, b in d["backends"].items():
        state = "ready" if b["runs_here"] else ("converts only: " + (b["why_not"] or "") if b["installed"]
                                                  else f"not installed ({', '.join(b['missing'])})")
        click.echo(f"backend  {name:<12} {state}")
    for n in d["notes"]:
        click.echo(f"note:     {n}")


def _register_optional_commands() -> None:
    """Commands owned by other sub-packages (bench, demo) register here if those packages are present."""
    import importlib

    for mod in ("edgeconv.bench.cli", "edgeconv.demo", "edgeconv.calibration.cli"):
        try:
            m = importlib.import_module(mod)
        except ImportError:
            continue
        for cmd in getattr(m, "COMMANDS", []):
            main.add_command(cmd)


_register_optional_commands()

if __name__ == "__main__":
    main()

__all__ = ["Path", "main"]
