"""CLI conventions: global flags anywhere, --json on every result command, results on stdout, a closed pipe is not
an error, user strings are not read as markup, and a command module that fails to import is listed loudly."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from edgeconv.cli import main, parse_tolerances
from edgeconv.core.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
#: Commands that print results; each takes --json (the issue's list, where these commands exist here).
RESULT_COMMANDS = (("targets",), ("doctor",), ("convert",), ("bench",), ("run",), ("compare",), ("demo",),
                   ("calibrate",), ("inspect",), ("cache", "info"), ("cache", "verify"), ("cache", "clear"))


def _walk(cmd: click.Command, path: tuple[str, ...] = ()):
    yield path, cmd
    if isinstance(cmd, click.Group):
        for name, sub in cmd.commands.items():
            yield from _walk(sub, (*path, name))


def _cmd(path: tuple[str, ...]) -> click.Command:
    cmd: click.Command = main
    for p in path:
        assert isinstance(cmd, click.Group)
        cmd = cmd.commands[p]
    return cmd


def _sub(*args: str, env: dict[str, str] | None = None, **kw) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edgeconv.cli", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=120, check=False, **kw)


def test_every_command_takes_the_global_flags() -> None:
    for path, cmd in _walk(main):
        opts = {o for p in cmd.params for o in getattr(p, "opts", [])}
        assert {"-v", "--verbose", "-q", "--quiet", "--log-file"} <= opts, path


@pytest.mark.parametrize("path", RESULT_COMMANDS, ids=" ".join)
def test_result_commands_take_json(path: tuple[str, ...]) -> None:
    assert "--json" in {o for p in _cmd(path).params for o in getattr(p, "opts", [])}


def test_global_flags_before_or_after_the_command(tmp_path: Path) -> None:
    r = CliRunner()
    for args in (["-v", "targets", "--json"], ["targets", "--json", "--verbose"], ["targets", "-q", "--json"],
                 ["--quiet", "targets", "--json"]):
        res = r.invoke(main, args)
        assert res.exit_code == 0, (args, res.output)
        assert json.loads(res.stdout)  # stdout is only the JSON
    log = tmp_path / "logs" / "edgeconv.log"
    res = r.invoke(main, ["compare", str(tmp_path / "none.json"), str(tmp_path / "none.json"), "--log-file", str(log)])
    assert res.exit_code == 2  # the path does not exist: click's usage error
    res = r.invoke(main, ["cache", "info", "--json", "--log-file", str(log), "-v"])
    assert res.exit_code == 0, res.output
    assert log.is_file()


def test_table_goes_to_stdout_and_survives_a_closed_pipe(tmp_path: Path) -> None:
    out = tmp_path / "targets.txt"
    with out.open("w") as f:
        res = subprocess.run([sys.executable, "-m", "edgeconv.cli", "targets"], stdout=f, stderr=subprocess.PIPE,
                             text=True, timeout=120, check=False)
    assert res.returncode == 0, res.stderr
    text = out.read_text()
    assert "onnxruntime" in text and "profile" in text and "onnxruntime" not in res.stderr
    p = subprocess.Popen([sys.executable, "-m", "edgeconv.cli", "targets", "--json"], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)
    p.stdout.close()  # the reader is gone before anything is written, as with `| head` on a long output
    err = p.stderr.read().decode()
    assert p.wait(timeout=120) == 141
    assert "Traceback" not in err and "internal error" not in err and "Exception ignored" not in err, err


def test_user_strings_are_not_read_as_markup(monkeypatch: pytest.MonkeyPatch) -> None:
    import edgeconv.api

    row = {"profile": "my[board]", "backend": "ncnn", "installed": False, "runs_here": False, "why_not": None,
           "install": "pip install 'edgeconv[ncnn]'", "precisions": ["fp32"], "default_precision": "fp32",
           "device": "CPU", "description": ""}
    monkeypatch.setattr(edgeconv.api, "list_targets", lambda: [row])
    res = CliRunner().invoke(main, ["targets"])
    assert res.exit_code == 0
    assert "pip install 'edgeconv[ncnn]'" in res.stdout and "my[board]" in res.stdout


def test_no_profiles_is_an_error_not_an_empty_table(monkeypatch: pytest.MonkeyPatch) -> None:
    import edgeconv.api

    monkeypatch.setattr(edgeconv.api, "list_targets", lambda: [])
    res = CliRunner().invoke(main, ["targets"])
    assert res.exit_code == 2 and "no target profiles found" in res.stderr and "EDGECONV_PROFILES" in res.stderr


def test_parse_tolerances() -> None:
    assert parse_tolerances(["int8.cosine=0.98", "fp16.max_abs=5e-2", "int8.task_delta=1"]) == \
        {"int8": {"cosine": 0.98, "task_delta": 1.0}, "fp16": {"max_abs": 0.05}}
    for bad in ("int8.cosine", "int9.cosine=1", "int8.speed=1", "cosine=0.9", "int8.cosine=x"):
        with pytest.raises(ConfigError):
            parse_tolerances([bad])


BROKEN = """
import sys
sys.path.insert(0, {tmp!r})
import edgeconv.cli as c
c.COMMAND_MODULES.update({{"fakemissing.cli": ("gadget",), "fakebug.cli": ("widget", "widget2")}})
c._register_optional_commands()
c.main(prog_name="edgeconv")
"""


def test_a_command_module_that_fails_to_import_is_listed_broken(tmp_path: Path) -> None:
    for pkg, body in (("fakemissing", "import not_installed_anywhere_xyz\n"), ("fakebug", "1 / 0\n")):
        (tmp_path / pkg).mkdir()
        (tmp_path / pkg / "__init__.py").write_text("")
        (tmp_path / pkg / "cli.py").write_text(body)
    script = textwrap.dedent(BROKEN.format(tmp=str(tmp_path)))

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, timeout=120,
                              check=False)

    res = run("--help")
    assert res.returncode == 0, res.stderr
    lines: dict[str, str] = {}
    for ln in res.stdout.split("Commands:")[1].splitlines():
        if ln.startswith("  ") and not ln.startswith("    "):
            name = ln.split()[0]
            lines[name] = ln
        elif ln.strip():
            lines[name] += " " + ln.strip()  # click wraps a long help line
    assert "BROKEN" in lines["gadget"] and "not_installed_anywhere_xyz" in lines["gadget"]
    assert "BROKEN" in lines["widget"] and "BROKEN" in lines["widget2"] and "ZeroDivisionError" in lines["widget"]
    assert "BROKEN" not in lines["convert"]
    res = run("gadget", "--anything", "x")
    assert res.returncode == 7 and "not_installed_anywhere_xyz" in res.stderr and "hint:" in res.stderr
    assert "No such command" not in res.stderr
    res = run("widget")
    assert res.returncode == 70 and "ZeroDivisionError" in res.stderr
    res = run("gadget", "--help")
    assert res.returncode == 0 and "BROKEN" in res.stdout


def test_absent_command_modules_are_not_listed() -> None:
    from edgeconv.cli import _present

    assert not _present("edgeconv.no_such_subpackage.cli")
    assert _present("edgeconv.bench.cli")
