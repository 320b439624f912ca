"""Bad devices in a matrix run (``edgeconv run``, directly and on ``--farm local``): a worker that crashes, one that
returns a malformed result and a device without the runtime each fail their own row with one line; the good row
is measured; nothing is left on any device but its cache."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
FAST = {"min_iters": 5, "min_seconds": 0.05, "warmup_min_iters": 1, "warmup_max_seconds": 0.2, "threads": 1,
        "timeout": 120}
# The bad devices misbehave on benchmark jobs only (verification at conversion skips latency), so it is the
# benchmark row, the farm's part, that meets them.
ON_BENCH = 'if grep -q \'"skip_latency": false\' "$2" 2>/dev/null; then {bad}; fi\nexec {py} "$@"'
BAD = {  # device -> (what its "python" does, what the row's error must say)
    "crashes": (ON_BENCH.replace("{bad}", 'echo "Segmentation fault (core dumped)" >&2; exit 139'),
                "crashed (exit code 139)"),
    "garbage": (ON_BENCH.replace("{bad}", 'echo garbage > "$(dirname "$2")/result.npz"; exit 0'), "malformed result"),
    "bare": ('exec {py} -S "$@"', "onnxruntime runtime is not installed on this device"),
}


def _devices(tmp: Path) -> list[dict]:
    """One good local device and the bad ones, each with its own working folder; the [[targets]] that use them."""
    import numpy

    site = tmp / "numpy-only"  # the 'bare' device's Python sees numpy and nothing else (-S)
    site.mkdir()
    (site / "numpy").symlink_to(Path(numpy.__file__).parent)
    if (libs := Path(numpy.__file__).parent.parent / "numpy.libs").is_dir():
        (site / "numpy.libs").symlink_to(libs)
    targets = []
    for name, body in [("good", None), *((n, b) for n, (b, _) in BAD.items())]:
        lines = [f'name = "{name}"', 'transport = "local"', f'workdir = "{tmp / "dev" / name}"']
        if body is not None:
            exe = tmp / f"{name}-python"
            exe.write_text("#!/bin/sh\n" + body.format(py=sys.executable) + "\n")
            exe.chmod(0o755)
            lines.append(f'python = "{exe}"')
        if name == "bare":
            lines.append(f'env = {{ PYTHONPATH = "{site}" }}')
        (tmp / f"{name}.toml").write_text("\n".join(lines) + "\n")
        (tmp / f"ort-{name}.toml").write_text('backend = "onnxruntime"\nprecision = "fp32"\n')
        targets.append({"profile": str(tmp / f"ort-{name}.toml"), "device": str(tmp / f"{name}.toml")})
    return targets


def _suite(tmp: Path, onnx: Path, targets: list[dict]) -> Path:
    lines = [f'[model]\nmodel = "{onnx}"\nname = "tiny"\n', "[data]\nlimit = 2\n", "[bench]"]
    lines += [f"{k} = {json.dumps(v)}" for k, v in FAST.items()]
    for t in targets:
        lines += ["\n[[targets]]", *(f"{k} = {json.dumps(v)}" for k, v in t.items())]
    (tmp / "suite.toml").write_text("\n".join(lines) + "\n")
    return tmp / "suite.toml"


@pytest.mark.parametrize("farm", [None, pytest.param("local", marks=pytest.mark.slow)])
def test_each_bad_device_fails_only_its_row_in_one_line_and_leaves_only_its_cache(farm, tiny_onnx, tmp_path):
    if farm:
        pytest.importorskip("ray", reason="the farm runs on Ray")
    from edgeconv.cli import main

    suite = _suite(tmp_path, tiny_onnx, _devices(tmp_path))
    args = ["run", str(suite), "--out", str(tmp_path / "r"), "--json", *(["--farm", farm] if farm else [])]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    rows = {r["profile"].removeprefix("ort-"): r for r in json.loads((tmp_path / "r" / "report.json").read_text())
            ["results"]}
    assert rows["good"]["status"] == "ok" and rows["good"]["device"] == "good" and rows["good"]["drift"]["pass"]
    assert ("farm" in rows["good"]) == bool(farm)
    for name, (_, says) in BAD.items():
        r = rows[name]
        assert r["status"] == "failed" and r["stage"] == "bench" and says in r["error"], (name, r.get("error"))
        assert "\n" not in r["error"] and r["error"].startswith("device error") and f"device {name}" in r["error"]
    for name in ("good", *BAD):
        wd = tmp_path / "dev" / name
        assert {p.name for p in wd.iterdir()} <= {"cache", "jobs"}, name
        assert not (wd / "jobs").exists() or list((wd / "jobs").iterdir()) == [], name
