"""A backend is one package + one profile + one entry point: a plug-in outside edgeconv/ shows up everywhere,
its native crashes and hangs stay in its own row, and a plug-in that fails to import is listed loudly."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from edgeconv import api
from edgeconv.core.errors import ConfigError, ConversionError, MissingDependencyError

FIX = Path(__file__).parent.parent / "fixtures" / "tiny_model.py"


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edgeconv.cli", *args], env=env, capture_output=True, text=True,
                          timeout=300)


def test_plugin_appears_in_targets_doctor_and_registry(plugin_env: dict[str, str]) -> None:
    from edgeconv.targets.registry import broken_targets, registrations

    regs = registrations()
    assert regs["echo"].cls is not None and regs["echo"].cls.__module__ == "edgeconv_testplugin"
    assert "broken" in broken_targets() and "edgeconv_testplugin_missing" in broken_targets()["broken"]
    rows = json.loads(cli(plugin_env, "targets", "--json").stdout)
    rows = rows if isinstance(rows, list) else rows.get("targets", rows)
    assert any(r.get("profile") == "echo" and r.get("backend") == "echo" for r in rows)
    doc = json.loads(cli(plugin_env, "doctor", "--json").stdout)
    assert "echo" in doc["backends"]
    assert doc["backends"].get("broken", {}).get("broken"), doc["backends"].get("broken")


def test_broken_plugin_is_a_missing_dependency_not_unknown(plugin_env: dict[str, str]) -> None:
    from edgeconv.targets.registry import get_target

    with pytest.raises(MissingDependencyError, match="cannot be loaded"):
        get_target("broken")


def test_plugin_converts_and_lands_in_the_report(plugin_env: dict[str, str], tmp_path: Path,
                                                 tiny_weights: Path) -> None:
    from edgeconv.bench.matrix import run_matrix

    cfg = {"model": {"model": f"{FIX}:build", "weights": str(tiny_weights), "input": ["images:1x3x64x64"]},
           "data": {"limit": 2}, "targets": [{"profile": "echo", "options": {"flavour": "salty"}}],
           "bench": {"min_iters": 3, "min_seconds": 0.05}}
    report = run_matrix(cfg, tmp_path / "r", use_cache=False)
    (row,) = report["results"]
    assert row["status"] == "ok" and row["target"] == "echo", row.get("error")
    m = json.loads((tmp_path / "r" / "artifacts" / "echo-fp32" / "manifest.json").read_text())
    assert m["conversion"]["flavour"] == "salty" and m["isolated"] is True
    import os

    assert m["conversion"]["pid"] != os.getpid()  # converted in a child process


def test_plugin_option_typo_names_the_valid_ones(plugin_env: dict[str, str], tmp_path: Path,
                                                 tiny_weights: Path) -> None:
    with pytest.raises(ConfigError, match="unknown option 'flavor'") as e:
        api.convert(f"{FIX}:build", targets=["echo"], out=tmp_path, weights=str(tiny_weights),
                    inputs=["images:1x3x64x64"], options={"flavor": "salty"})
    assert "flavour" in (e.value.hint or "")


def test_segfault_and_hang_fail_only_their_rows(plugin_env: dict[str, str], tmp_path: Path,
                                                tiny_weights: Path) -> None:
    outs = api.convert(f"{FIX}:build", targets=["crashy", "sleepy", "echo"], out=tmp_path, use_cache=False,
                       weights=str(tiny_weights), inputs=["images:1x3x64x64"])
    by = {o.profile: o for o in outs}
    assert isinstance(by["crashy"].error, ConversionError) and "SIGSEGV" in by["crashy"].error.message
    assert isinstance(by["sleepy"].error, ConversionError) and "did not finish within 6 s" in by["sleepy"].error.message
    assert by["echo"].ok and (tmp_path / "echo-fp32" / "echo.onnx").is_file()
    assert not (tmp_path / "crashy-fp32").exists() and not list(tmp_path.glob(".crashy*"))


def test_crash_through_the_cli_is_a_conversion_exit_code(plugin_env: dict[str, str], tmp_path: Path,
                                                         tiny_weights: Path) -> None:
    res = cli(plugin_env, "convert", "--model", f"{FIX}:build", "--weights", str(tiny_weights), "--input",
              "images:1x3x64x64", "--target", "crashy", "--out", str(tmp_path), "--no-cache")
    assert res.returncode == 5, res.stderr
    assert "crashed (signal SIGSEGV)" in res.stderr and "Traceback" not in res.stderr
