"""``edgeconv env create|list|check|remove NAME``: backend environments by hand (they are also made on first use)."""

from __future__ import annotations

import json

import click

from edgeconv.cli import handle_errors


@click.group("env")
def env() -> None:
    """Backend environments: pinned venvs for toolkits that cannot share edgeconv's (e.g. rknn)."""


@env.command("create")
@click.argument("name")
@click.option("--find-links", "find_links", multiple=True, type=click.Path(), metavar="DIR",
              help="Folder of wheels for pip (repeatable; also $EDGECONV_WHEELHOUSE).")
@click.option("--no-index", is_flag=True, help="Use only --find-links folders (offline).")
@click.option("--python", help="Interpreter to make the venv from (default: this one's base; $EDGECONV_ENV_PYTHON).")
@click.option("--force", is_flag=True, help="Remove an existing environment and make it again.")
@handle_errors
def create_cmd(name: str, find_links: tuple[str, ...], no_index: bool, python: str | None, force: bool) -> None:
    """Create (or confirm) the backend environment NAME."""
    from edgeconv.envs import manager
    from edgeconv.envs.registry import get_spec

    spec = get_spec(name)
    if force:
        manager.remove(spec, python)
    found = manager.locate(spec, python)
    e = found or manager.ensure(spec, find_links=find_links, no_index=no_index, python=python, implicit=False)
    if found:
        click.echo(f"{name}: exists at {e.path}", err=True)
    click.echo(str(e.path))


@env.command("list")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@handle_errors
def list_cmd(as_json: bool) -> None:
    """Every backend environment the installed targets declare, and whether it exists here."""
    from edgeconv.envs.registry import all_status

    rows = all_status()
    if as_json:
        click.echo(json.dumps(rows, indent=1))
        return
    for name, s in rows.items():
        state = (f"ready  {s['bytes'] / 2**30:.2f} GiB  python {s['python']}  {s['path']}" if s["exists"]
                 else f"absent {s['problem']}")
        click.echo(f"{name:10s} {state}")


@env.command("check")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@handle_errors
def check_cmd(name: str, as_json: bool) -> None:
    """Import the toolkit inside NAME's environment; exit 7 if it is missing or broken."""
    import sys

    from edgeconv.envs.registry import env_status

    s = env_status(name, deep=True)
    if as_json:
        click.echo(json.dumps(s, indent=1))
    else:
        click.echo(f"{name}: {'ok' if s['ok'] else 'NOT OK'}  {s.get('path')}")
        for k, v in (s.get("versions") or {}).items():
            click.echo(f"  {k} {v}")
        if s.get("problem"):
            click.echo(f"  problem: {s['problem']}")
    if not s["ok"]:
        sys.exit(7)


@env.command("remove")
@click.argument("name")
@handle_errors
def remove_cmd(name: str) -> None:
    """Delete NAME's environment (it is made again on next use)."""
    from edgeconv.envs import manager
    from edgeconv.envs.registry import get_spec

    gone = manager.remove(get_spec(name))
    click.echo(f"removed {gone}" if gone else f"{name}: no environment to remove", err=True)


COMMANDS = [env]
