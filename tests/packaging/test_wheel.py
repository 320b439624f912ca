"""The built wheel works outside the checkout: profiles and the calibration sample travel as package data.

The wheel is built from a copy of the working tree (so the checkout gets no ``build/``), installed into a fresh venv
that has no pip and no edgeconv of its own; a ``.pth`` file lends it this venv's site-packages for the heavy
dependencies (torch, onnxruntime, the backends) without exposing the checkout, and every command runs from a
temporary folder, so nothing can be found through the working directory.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Installed:
    wheel: Path
    python: Path
    exe: Path
    site: Path
    cwd: Path
    env: dict[str, str]

    def run(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(self.exe), *args], cwd=self.cwd, env=self.env, capture_output=True, text=True,
                              timeout=timeout, check=False)


def _copy_tree(dest: Path) -> None:
    """The files git would ship (tracked + untracked-not-ignored), or the whole tree without caches outside git."""
    try:
        names = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                               capture_output=True, check=True).stdout.decode().split("\0")
    except (OSError, subprocess.CalledProcessError):
        shutil.copytree(ROOT, dest, symlinks=True, ignore=shutil.ignore_patterns(
            ".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".*cache*"))
        return
    for n in filter(None, names):
        src, dst = ROOT / n, dest / n
        if not src.exists() and not src.is_symlink():
            continue  # deleted in the working tree
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_symlink():
            os.symlink(os.readlink(src), dst)
        elif src.is_file():
            shutil.copy2(src, dst)


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    pytest.importorskip("setuptools", minversion="77", reason="building the wheel needs setuptools >= 77 here")
    base = tmp_path_factory.mktemp("wheel")
    src, dist, venv = base / "src", base / "dist", base / "venv"
    _copy_tree(src)
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(dist)], check=True, capture_output=True, timeout=300)
    wheel = next(dist.glob("edgeconv-*.whl"))
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    py = venv / "bin" / "python"
    site = Path(subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    # Heavy dependencies come from this venv; the checkout (and this venv's editable edgeconv finder, which only a
    # site-packages *directory* would activate) stays invisible.
    (site / "_edgeconv_test_parent.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install", "-q", "--no-deps", "--no-index",
                    str(wheel)], check=True, capture_output=True, timeout=300)
    cwd = base / "work"
    cwd.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "EDGECONV_PROFILES", "VIRTUAL_ENV")}
    env["EDGECONV_CACHE"] = str(base / "cache")
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    return Installed(wheel, py, venv / "bin" / "edgeconv", site, cwd, env)


def test_wheel_carries_profiles_calibration_license_and_types(installed: Installed) -> None:
    names = set(zipfile.ZipFile(installed.wheel).namelist())
    profiles = {n.rsplit("/", 1)[1] for n in names if n.startswith("edgeconv/_data/targets/")}
    assert profiles == {p.name for p in (ROOT / "targets").glob("*.toml")}
    prefix = "edgeconv/_data/calibration/"
    calib = {n.removeprefix(prefix) for n in names if n.startswith(prefix)}
    assert calib == {str(p.relative_to(ROOT / "calibration")) for p in (ROOT / "calibration").rglob("*") if p.is_file()}
    assert "edgeconv/py.typed" in names
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    meta = zipfile.ZipFile(installed.wheel).read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    assert "Requires-Python: >=3.11" in meta and "License-Expression: Apache-2.0" in meta


def test_installed_copy_is_used_and_lists_targets(installed: Installed) -> None:
    res = subprocess.run([str(installed.python), "-c", "import edgeconv, edgeconv.zoo as z, edgeconv.profiles as p; "
                          "print(edgeconv.__file__); print(z.CALIBRATION_ROOT); print(p.profile_dirs()[-1])"],
                         cwd=installed.cwd, env=installed.env, capture_output=True, text=True, check=True)
    lines = res.stdout.split()
    assert all(Path(line).is_relative_to(installed.site) for line in lines), lines
    res = installed.run("targets", "--json")
    assert res.returncode == 0, res.stderr
    rows = {r["profile"]: r for r in json.loads(res.stdout)}
    assert {p.stem for p in (ROOT / "targets").glob("*.toml")} <= set(rows)
    assert rows["onnxruntime"]["installed"] is True
    table = installed.run("targets")
    assert table.returncode == 0 and "onnxruntime" in table.stdout  # the table goes to stdout


def test_installed_convert_int8_with_bundled_calibration_and_bench(installed: Installed) -> None:
    res = installed.run("convert", "--model", "zoo:classifier", "--target", "onnxruntime", "-p", "fp32", "-p", "int8",
                        "--out", "out")
    assert res.returncode == 0, res.stdout + res.stderr
    m = json.loads((installed.cwd / "out" / "onnxruntime-int8" / "manifest.json").read_text())
    assert m["verification"]["status"] == "ok"
    assert Path(m["calibration"]["root"]).is_relative_to(installed.site)  # the sample shipped in the wheel
    res = installed.run("bench", "out/onnxruntime-int8", "--min-seconds", "0.2", "--min-iters", "10", "--limit", "8",
                        "--out", "bench")
    assert res.returncode == 0, res.stdout + res.stderr
    rep = json.loads((installed.cwd / "bench" / "report.json").read_text())
    assert rep["model"]["name"] == "classifier" and rep["results"][0]["status"] == "ok"


@pytest.mark.slow
def test_installed_every_backend_every_precision_run_and_demo(installed: Installed) -> None:
    """The issue's whole list, from the wheel: every installed backend at every precision, then run and demo."""
    code = ("import json; from edgeconv.api import list_targets; from edgeconv.targets.registry import all_targets\n"
            "t = all_targets()\n"
            "skip = lambda b, p: getattr(t[b], 'skip_reason', lambda p: None)(p)  # e.g. bf16 on a CPU without it\n"
            "print(json.dumps([{**r, 'precisions': [p for p in r['precisions'] if not skip(r['backend'], p)]}\n"
            "                  for r in list_targets() if r['installed'] and r['profile'] == r['backend']]))")
    res = subprocess.run([str(installed.python), "-c", code], cwd=installed.cwd, env=installed.env,
                         capture_output=True, text=True, check=True)
    rows = json.loads(res.stdout)
    assert rows
    for r in rows:
        args = ["convert", "--model", "zoo:classifier", "--target", r["profile"], "--out", "all"]
        for p in r["precisions"]:
            args += ["-p", p]
        res = installed.run(*args, timeout=900)
        assert res.returncode == 0, f"{r['profile']}: {res.stdout}{res.stderr}"
    suite = installed.cwd / "suite.toml"
    suite.write_text('[model]\nsource = "zoo:classifier"\n[data]\neval = "zoo"\nlimit = 20\n'
                     '[[targets]]\nprofile = "onnxruntime"\nprecisions = ["fp32", "int8"]\n'
                     '[bench]\nmin_iters = 10\nmin_seconds = 0.2\n')
    res = installed.run("run", str(suite), "--out", "run-out", timeout=900)
    assert res.returncode == 0, res.stdout + res.stderr
    res = installed.run("demo", "--model", "classifier", "--target", "onnxruntime", "--limit", "20",
                        "--min-seconds", "0.2", "--out", "demo-out", timeout=900)
    assert res.returncode == 0, res.stdout + res.stderr
    assert json.loads((installed.cwd / "demo-out" / "report.json").read_text())["results"]
