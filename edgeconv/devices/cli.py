"""``edgeconv devices list|check|create-emulated``: a click group the main CLI registers (``COMMANDS``)."""

from __future__ import annotations

import json
from typing import Any

import click

from edgeconv.core.console import console


def _handle(fn: Any) -> Any:
    from edgeconv.cli import handle_errors

    return handle_errors(fn)


@click.group()
def devices() -> None:
    """Devices that verify and benchmark artifacts on their own hardware (devices/*.toml, $EDGECONV_DEVICES)."""


@devices.command("list")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def list_cmd(as_json: bool) -> None:
    """Every known device: transport, address, what it serves."""

    @_handle
    def go() -> None:
        from edgeconv.devices.config import list_devices

        devs = list_devices()
        if as_json:
            click.echo(json.dumps({n: d.to_dict() for n, d in devs.items()}, indent=2))
            return
        from rich.table import Table

        table = Table("device", "transport", "where", "arch", "serves", "latency")
        for d in devs.values():
            table.add_row(d.name, d.transport, d.address, d.arch or "?", ", ".join(d.serves) or "-",
                          "emulated" if d.emulated else "real")
        console.print(table)

    go()


@devices.command("check")
@click.argument("names", nargs=-1)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--timeout", default=120.0, show_default=True, help="Seconds per device.")
def check_cmd(names: tuple[str, ...], as_json: bool, timeout: float) -> None:
    """Reach each device (all when none is named): Python, architecture, CPU features, which runtimes import.

    Exit code 8 when any device is unreachable or lacks a runtime its definition lists."""

    @_handle
    def go() -> None:
        from edgeconv.devices.check import check_devices

        results = check_devices(list(names) or None, timeout=timeout)
        if as_json:
            click.echo(json.dumps(results, indent=2))
        else:
            for r in results:
                _print_check(r)
        if any(not r["ok"] for r in results):
            raise SystemExit(8)

    go()


def _print_check(r: dict[str, Any]) -> None:
    mark = "[green]✔[/]" if r["ok"] else "[red]✘[/]"
    console.print(f"{mark} [bold]{r['device']}[/] ({r['transport']}, {r['address']})")
    if not r.get("reachable"):
        console.print(f"    unreachable: {r['error']}")
        if r.get("hint"):
            console.print(f"    hint: {r['hint']}")
        return
    p = r["probe"]
    cpu = p["cpu"]
    console.print(f"    python {p['python']} on {p['arch']} ({p['system']}), {p['cpus']} CPUs"
                  + ("  [yellow]emulated[/]" if r.get("emulated") else ""))
    console.print(f"    CPU features ({cpu['source']}): {' '.join(cpu['features']) or 'none of interest'}; "
                  f"fp16 arithmetic {'yes' if cpu['fp16_arithmetic'] else 'no'}, dotprod "
                  f"{'yes' if cpu['dotprod'] else 'no'}, i8mm {'yes' if cpu['i8mm'] else 'no'}")
    for m, info in p["runtimes"].items():
        state = f"[green]{info.get('version') or 'ok'}[/]" if info["ok"] else f"[red]{info['error']}[/]"
        console.print(f"    {m}: {state}")
    for problem in r.get("problems", []):
        console.print(f"    [red]problem:[/] {problem}")


@devices.command("create-emulated")
@click.argument("board", default="arm64")
@click.option("--force", is_flag=True, help="Rebuild even when the board is already built.")
@click.option("--mirror", help="Debian mirror URL (default: the one this machine's apt uses).")
def create_cmd(board: str, force: bool, mirror: str | None) -> None:
    """Build the emulated BOARD (arm64: Debian 12 + Python 3.11 + aarch64 wheels under qemu-user) once, into
    $EDGECONV_BOARDS (default ~/.cache/edgeconv-boards). Needs root and debootstrap + qemu-user-static."""

    @_handle
    def go() -> None:
        from edgeconv.devices.board import create_board

        b = create_board(board, force=force, mirror=mirror)
        meta = b.meta
        click.echo(json.dumps({"board": b.name, "home": str(b.home), "wheels": meta.get("wheels"),
                               "unusable": meta.get("unusable"), "notes": meta.get("notes"),
                               "seconds": meta.get("seconds")}, indent=2))

    go()


COMMANDS = [devices]
