"""The ``edgeconv`` command: a thin click layer over the public API.

Conventions every command follows (tested in ``tests/cli/``):

- results on stdout (tables, or ``--json``), logs and progress on stderr; ``| head`` ends quietly (exit 141);
- ``-v/--verbose``, ``-q/--quiet`` and ``--log-file`` are accepted anywhere on the command line, also by commands
  other packages register through ``COMMANDS``;
- every error is an EdgeconvError printed as one line plus a hint, with an exit code by kind (README: "Exit
  codes"); ``--verbose`` adds the traceback;
- a command module that fails to import stays listed, marked broken with its import error, and running it exits 7
  (a missing dependency) or 70 with that error, never "no such command".

``convert``, ``inspect`` and ``cache`` live in their own modules of this package and register like any other
command module.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import os
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from edgeconv.core.console import console, emit_json, escape, print_table, setup_logging
from edgeconv.core.errors import ConfigError, EdgeconvError

#: Command modules registered into ``main``; each exports ``COMMANDS`` (a list of click commands). The names are
#: what ``--help`` lists (marked broken) when the module exists but fails to import.
COMMAND_MODULES: dict[str, tuple[str, ...]] = {
    "edgeconv.cli.convert": ("convert",),
    "edgeconv.cli.inspect": ("inspect",),
    "edgeconv.cli.cache": ("cache",),
    "edgeconv.bench.cli": ("bench", "run", "compare"),
    "edgeconv.demo": ("demo",),
    "edgeconv.cli.calibrate": ("calibrate",),
    "edgeconv.devices.cli": ("devices",),
    "edgeconv.diagnose.cli": ("diagnose", "lint"),
    "edgeconv.envs.cli": ("env",),
    "edgeconv.tune.cli": ("tune",),
}
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, what a C tool killed by `| head` reports
_META = "edgeconv.global"


def _root_meta() -> dict[str, Any]:
    ctx = click.get_current_context(silent=True)
    return ctx.find_root().meta.setdefault(_META, {}) if ctx else {}


def _verbose() -> bool:
    return bool(_root_meta().get("verbose"))


def handle_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn EdgeconvErrors (and crashes) into one line + hint + exit code."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except EdgeconvError as e:
            if _verbose():
                console.print_exception()
                tb = getattr(e, "child_traceback", None)
                if tb:
                    console.print(tb, markup=False)
            click.echo(e.one_line(), err=True)
            if e.hint:
                click.echo(f"  hint: {e.hint}", err=True)
            sys.exit(e.exit_code)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)
        except (click.exceptions.Exit, click.exceptions.ClickException, BrokenPipeError):
            raise
        except Exception as e:  # a bug in edgeconv or a backend: still one line, traceback with --verbose
            if _verbose():
                traceback.print_exc()
            click.echo(f"internal error: {type(e).__name__}: {' '.join(str(e).split())[:300]}", err=True)
            click.echo("  hint: re-run with --verbose and report it", err=True)
            sys.exit(70)

    return wrapper


# --- global options ------------------------------------------------------------------------------------------------


def _set_global(ctx: click.Context, param: click.Parameter, value: Any) -> None:
    """Record a global flag (wherever it was given) and re-apply the logging set-up."""
    meta = ctx.find_root().meta.setdefault(_META, {})
    if value:
        meta[param.name] = value
    setup_logging(bool(meta.get("verbose")), bool(meta.get("quiet")), meta.get("log_file"))


def global_options() -> list[click.Option]:
    """Fresh instances of the options every command accepts (click binds an option to one command)."""
    return [
        click.Option(["-v", "--verbose"], is_flag=True, expose_value=False, callback=_set_global,
                     help="Debug logging and full tracebacks."),
        click.Option(["-q", "--quiet"], is_flag=True, expose_value=False, callback=_set_global,
                     help="Only warnings and errors on stderr; no progress."),
        click.Option(["--log-file"], type=click.Path(dir_okay=False), expose_value=False, callback=_set_global,
                     help="Also write a timestamped debug log to this file."),
    ]


def add_global_options(cmd: click.Command) -> click.Command:
    """Give ``cmd`` (and every subcommand of a group) the global options, unless it already has them."""
    have = {o for p in cmd.params for o in getattr(p, "opts", [])}
    if "--verbose" not in have:
        cmd.params.extend(global_options())
    if isinstance(cmd, click.Group):
        for sub in cmd.commands.values():
            add_global_options(sub)
    return cmd


class EdgeconvGroup(click.Group):
    """The root group: adds the global options to every command it is given and ends quietly on a closed pipe."""

    def add_command(self, cmd: click.Command, name: str | None = None) -> None:
        super().add_command(add_global_options(cmd), name)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except BrokenPipeError:
            _quiet_pipe()
            sys.exit(EXIT_BROKEN_PIPE)


def _quiet_pipe() -> None:
    """The reader went away (``| head``): point stdout at /dev/null so the interpreter's final flush is silent."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


@click.group(cls=EdgeconvGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(package_name="edgeconv")
def main() -> None:
    """edgeconv: convert PyTorch models for edge devices and prove how they run there."""
    meta = _root_meta()
    setup_logging(bool(meta.get("verbose")), bool(meta.get("quiet")), meta.get("log_file"))


main.params.extend(global_options())


# --- shared parsing ------------------------------------------------------------------------------------------------


def _kv(items: tuple[str, ...], what: str) -> dict[str, Any]:
    from edgeconv.intake.loader import parse_model_args

    try:
        return parse_model_args(list(items))
    except ConfigError as e:
        raise ConfigError(e.message.replace("--model-arg", what), hint=f"e.g. {what} key=value") from e


def parse_tolerances(items: tuple[str, ...] | list[str]) -> dict[str, dict[str, float]]:
    """``("int8.cosine=0.98", "fp16.max_abs=0.05")`` → ``{"int8": {"cosine": 0.98}, "fp16": {"max_abs": 0.05}}``."""
    from edgeconv.profiles import PRECISIONS, TOLERANCE_KEYS

    out: dict[str, dict[str, float]] = {}
    for item in items:
        key, sep, value = item.partition("=")
        precision, dot, metric = key.strip().partition(".")
        if not sep or not dot or precision not in PRECISIONS or metric not in TOLERANCE_KEYS:
            raise ConfigError(f"--tol {item!r} is not PRECISION.METRIC=VALUE",
                              hint=f"precision in {list(PRECISIONS)}, metric in {list(TOLERANCE_KEYS)}; "
                                   "e.g. --tol int8.cosine=0.98")
        try:
            out.setdefault(precision, {})[metric] = float(value)
        except ValueError as e:
            raise ConfigError(f"--tol {item!r}: {value!r} is not a number", hint="e.g. --tol int8.cosine=0.98") from e
    return out


def call_with_new_options(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call ``fn``, passing ``tolerances``/``dry_run`` only when asked for, with a clear error where this version
    of the API does not take them yet."""
    import inspect

    params = inspect.signature(fn).parameters
    for name, flag in (("tolerances", "--tol"), ("dry_run", "--dry-run")):
        if kwargs.get(name) in (None, False, {}):
            kwargs.pop(name, None)
        elif name not in params:
            raise ConfigError(f"{flag} is not supported by {fn.__module__}.{fn.__name__} in this edgeconv",
                              hint=f"drop {flag}")
    return fn(*args, **kwargs)


# --- targets, doctor ----------------------------------------------------------------------------------------------


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@handle_errors
def targets(as_json: bool) -> None:
    """Every target profile: installed or not, how to install it, its precisions."""
    from rich.table import Table

    from edgeconv.api import list_targets

    rows = list_targets()
    if not rows:  # an install without its package data: say so instead of printing an empty table
        from edgeconv.profiles import profile_dirs

        raise ConfigError(f"no target profiles found (looked in {', '.join(map(str, profile_dirs()))})",
                          hint="reinstall edgeconv, or point EDGECONV_PROFILES at a folder of profile .toml files")
    if as_json:
        emit_json(rows)
        return
    t = Table(title="edgeconv targets")
    for col in ("profile", "backend", "converts here", "runs here", "precisions", "install / note"):
        t.add_column(col)
    for r in rows:
        note = r["install"] if not r["installed"] else (r["why_not"] or "")
        t.add_row(escape(r["profile"]), escape(r["backend"]), "yes" if r["installed"] else "no",
                  "yes" if r["runs_here"] else "no", escape(",".join(r["precisions"])), escape(note))
    print_table(t)


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@handle_errors
def doctor(as_json: bool) -> None:
    """Versions, CPU flags and which targets are usable on this machine."""
    from edgeconv.api import doctor as api_doctor

    d = api_doctor()
    if as_json:
        emit_json(d)
        return
    env = d["environment"]
    click.echo(f"cpu:      {env['cpu']} ({env['arch']}, {env['cores']} cores)")
    if env.get("isa_line"):
        click.echo(f"isa:      {env['isa_line']}")
    click.echo(f"flags:    {' '.join(env['cpu_flags']) or '-'}")
    click.echo(f"os:       {env['os']}, python {env['python']}")
    click.echo("versions: " + ", ".join(f"{k} {v}" for k, v in env["versions"].items()))
    for name, b in d["backends"].items():
        state = "ready" if b["runs_here"] else ("converts only: " + (b["why_not"] or "") if b["installed"]
                                                  else f"not installed ({', '.join(b['missing'])})")
        click.echo(f"backend  {name:<12} {state}")
    for n in d["notes"]:
        click.echo(f"note:     {n}")


# --- registration ---------------------------------------------------------------------------------------------------


def _broken_command(name: str, module: str, error: BaseException) -> click.Command:
    """A stand-in listed in --help that explains why ``name`` cannot run, and exits with the matching code."""
    missing = (isinstance(error, ModuleNotFoundError)
               and not str(getattr(error, "name", "") or "").startswith("edgeconv")) or \
        getattr(error, "exit_code", None) == 7
    detail = " ".join(f"{type(error).__name__}: {error}".split())[:200]
    code = 7 if missing else 70
    what = "missing dependency" if missing else "internal error"
    hint = getattr(error, "hint", None) or (f"pip install the package '{getattr(error, 'name', '')}' provides"
                                            if missing else "re-run with --verbose and report it")

    @click.command(name, help=f"BROKEN: cannot import {module} ({detail}).", short_help=f"BROKEN: {detail}",
                   context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
    @click.pass_context
    def broken(ctx: click.Context) -> None:
        click.echo(f"{what}: `edgeconv {name}` is unavailable: cannot import {module}: {detail}", err=True)
        click.echo(f"  hint: {hint}", err=True)
        if _verbose():
            traceback.print_exception(error)
        ctx.exit(code)

    return broken


def _present(module: str) -> bool:
    """Whether ``module`` exists (without importing it); a parent package that exists but fails to import counts as
    present, so the failure is shown instead of hidden."""
    parts = module.split(".")
    for i in range(2, len(parts) + 1):
        try:
            if importlib.util.find_spec(".".join(parts[:i])) is None:
                return False
        except (ImportError, ValueError):
            return True
        except Exception:  # noqa: BLE001 - the parent package's own import raised: broken, not absent
            return True
    return True


def _register_optional_commands() -> None:
    """Register each command module's COMMANDS; a module that is present but fails to import is listed as broken."""
    for mod, names in COMMAND_MODULES.items():
        if not _present(mod):
            continue  # not part of this edgeconv (yet)
        try:
            m = importlib.import_module(mod)
        except Exception as e:  # noqa: BLE001 - any import failure is shown, loudly, as a broken command
            for n in names:
                main.add_command(_broken_command(n, mod, e))
            continue
        for cmd in getattr(m, "COMMANDS", []):
            main.add_command(cmd)


_register_optional_commands()

__all__ = ["COMMAND_MODULES", "Path", "add_global_options", "handle_errors", "main", "parse_tolerances"]
