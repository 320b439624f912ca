"""CoreML target: conversion and structural checks on Linux (never executed here), the contract as image
scale/bias, a rejected op named, and the SSH path to a Mac (commands built, protocol run through a stand-in ssh)."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("coremltools", reason="coreml target needs coremltools (pip install 'edgeconv[coreml]')")
torch = pytest.importorskip("torch", reason="coremltools converts from PyTorch")

from edgeconv.calibration.preprocess import Preprocess  # noqa: E402
from edgeconv.core.errors import ConversionError, MissingDependencyError  # noqa: E402
from edgeconv.envs.client import WorkerSession, run_job  # noqa: E402
from edgeconv.targets.coreml import CoreMlTarget  # noqa: E402
from edgeconv.targets.coreml.convert import image_input  # noqa: E402
from edgeconv.targets.coreml.remote import SshTransport  # noqa: E402
from edgeconv.targets.coreml.runner import raw_pixels  # noqa: E402

ENV_HANDLERS = Path(__file__).parents[1] / "envs" / "handlers_for_tests.py"


def _convert(prep, precision: str, tmp_path: Path, preprocess=None, **options):  # noqa: ANN001, ANN003, ANN202
    from edgeconv.pipeline import build_context

    backend, ctx = build_context(prep, _profile(), precision, options=options, preprocess=preprocess)
    ctx.out_dir = tmp_path / precision
    ctx.out_dir.mkdir()
    return backend, ctx, backend.convert(ctx)


def _profile():  # noqa: ANN202
    from edgeconv.profiles import load_profile

    return load_profile("ios")


@pytest.mark.parametrize("order", ["scale-first", "normalize-first"])
def test_image_scale_bias_are_the_contract_arithmetic(order: str) -> None:
    pp = Preprocess(size=(8, 8), mean=(0.485, 0.456, 0.406), std=(0.25, 0.25, 0.25), order=order,
                    scale=1 / 255 if order == "scale-first" else 1.0)
    im = image_input(pp, (1, 3, 8, 8))
    img = (np.arange(8 * 8 * 3) % 256).astype(np.uint8).reshape(8, 8, 3)
    want = pp.apply(img)
    got = im["scale"] * img.transpose(2, 0, 1)[None].astype(np.float32) + \
        np.float32(im["bias"]).reshape(1, 3, 1, 1)  # what Core ML computes from the image
    np.testing.assert_allclose(got, want, atol=2e-6)
    np.testing.assert_allclose(raw_pixels(want, im), img.transpose(2, 0, 1)[None], atol=1e-3)


def test_per_channel_std_cannot_be_an_image_input() -> None:
    assert image_input(Preprocess(size=(8, 8), std=(0.229, 0.224, 0.225)), (1, 3, 8, 8)) is None
    assert image_input(Preprocess(size=(8, 8)), (1, 4, 8, 8)) is None


def test_not_executed_here_is_said_everywhere(tmp_path: Path) -> None:
    t = CoreMlTarget()
    ok, why = t.runs_here()
    if sys.platform == "darwin":
        pytest.skip("on macOS the Core ML runtime exists")
    assert not ok and "needs macOS/iOS" in why
    from edgeconv.core.artifact import Artifact

    art = Artifact(tmp_path, {"options": {}, "profile": {"options": {}}, "inputs": [], "outputs": []})
    with pytest.raises(MissingDependencyError, match="execute only on macOS/iOS"):
        t.runner(art)


@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_convert_and_check_without_the_runtime(tiny_prepared, tmp_path: Path, precision: str) -> None:  # noqa: ANN001
    pp = Preprocess(size=(64, 64), mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    _, ctx, result = _convert(tiny_prepared, precision, tmp_path, preprocess=pp,
                              **({"weight_threshold": 50} if precision == "int8" else {}))
    assert result.runnable_here is False and "converted, not executed here (needs macOS/iOS" in result.verify_note
    assert (ctx.out_dir / "model.mlpackage" / "Manifest.json").is_file()
    assert all((ctx.out_dir / f).is_file() for f in result.files)
    checks = result.meta["checks"]
    assert checks["ok"] and checks["unsupported_ops"] == [] and checks["opset"] == "CoreML6"
    assert result.meta["image_input"] == {"color": "RGB", "scale": pytest.approx(2 / 255), "bias": [-1.0] * 3}
    assert checks["preprocessing"]["scale"] == pytest.approx(2 / 255, rel=1e-3)
    assert checks["preprocessing"]["bias"] == pytest.approx([-1.0] * 3, rel=1e-3)
    ops = result.meta["ops"]
    assert ops.get("conv", 0) >= 3
    if precision == "int8":
        assert ops.get("constexpr_affine_dequantize", 0) == 3  # the INT8 conv weights, dequantized on the device
        assert result.meta["quantization"]["quantized_weights"] == 3
        assert result.meta["quantization"]["data"] == "none needed"
    import json

    saved = json.loads((ctx.out_dir / "coreml_checks.json").read_text())
    assert saved["outputs"][0]["dtype"] == "float32"
    assert saved["outputs"][0]["shape"] == list(tiny_prepared.reference.outputs[0].static_shape)
    assert saved["inputs"][0] == {"name": "images", "kind": "image", "height": 64, "width": 64, "color": "RGB"}


def test_per_channel_std_keeps_a_tensor_input(tiny_prepared, tmp_path: Path) -> None:  # noqa: ANN001
    pp = Preprocess(size=(64, 64), mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    _, ctx, result = _convert(tiny_prepared, "fp32", tmp_path, preprocess=pp)
    assert result.meta["embedded_preprocess"] is False
    import json

    saved = json.loads((ctx.out_dir / "coreml_checks.json").read_text())
    assert saved["inputs"][0] == {"name": "images", "kind": "array", "shape": [1, 3, 64, 64], "dtype": "float32"}


def test_op_without_a_core_ml_conversion_is_named(tmp_path: Path) -> None:
    from edgeconv.pipeline import prepare

    fixture = tmp_path / "m.py"
    fixture.write_text("import torch\n"
                       "class M(torch.nn.Module):\n"
                       "    def __init__(self):\n        super().__init__(); self.c = torch.nn.Conv2d(3, 4, 3)\n"
                       "    def forward(self, x):\n        return torch.linalg.det(self.c(x))\n"
                       "def build():\n    return M()\n")
    prep = prepare(f"{fixture}:build", inputs=["x:1x3x16x16"])
    with pytest.raises(ConversionError, match="cannot convert op 'linalg_det'"):
        _convert(prep, "fp16", tmp_path)


# --- a Mac reached by SSH -----------------------------------------------------------------------------------------

def test_ssh_commands_are_quoted_and_never_prompt(tmp_path: Path) -> None:
    t = SshTransport("me@mac.local", python="/opt/py 3/bin/python3", port=2222, identity="~/.ssh/id_mac")
    argv = t.remote_command([t.python, "~/.cache/edgeconv-worker/job/worker.py", "serve"], cwd="~/.cache/x y")
    assert argv[:6] == ["ssh", "-o", "BatchMode=yes", "-o", "ConnectTimeout=15", "-p"]
    assert argv[6:10] == ["2222", "-i", "~/.ssh/id_mac", "me@mac.local"]
    assert argv[-1] == "cd ~/'.cache/x y' && '/opt/py 3/bin/python3' ~/.cache/edgeconv-worker/job/worker.py serve"
    assert shlex.split(argv[-1].split(" && ")[1])[0] == "/opt/py 3/bin/python3"
    push = t.push_commands(tmp_path / "job")
    assert push[0][-1] == "mkdir -p ~/.cache/edgeconv-worker"
    assert push[1][:3] == ["scp", "-q", "-r"] and "-P" in push[1]
    assert push[1][-1] == "me@mac.local:~/.cache/edgeconv-worker/"
    assert t.pull_commands("~/.cache/edgeconv-worker/job", tmp_path)[0][-2:] == [
        "me@mac.local:~/.cache/edgeconv-worker/job/.", str(tmp_path)]


@pytest.fixture
def fake_ssh(tmp_path: Path) -> SshTransport:
    """ssh/scp stand-ins that run on this machine (the 'Mac' is a folder here): the real protocol, no network."""
    mac = tmp_path / "mac"
    mac.mkdir()
    ssh = tmp_path / "ssh"
    ssh.write_text("#!/bin/sh\nwhile [ \"${1#-}\" != \"$1\" ]; do shift; shift; done\nshift\n"
                   f"cd {mac} && exec sh -c \"$*\"\n")
    scp = tmp_path / "scp"
    scp.write_text("#!/bin/sh\nwhile [ \"${1#-}\" != \"$1\" ]; do case $1 in -q|-r) shift;; *) shift; shift;; esac;"
                   f" done\nsrc=$(echo \"$1\" | sed 's#^host:#{mac}/#'); dst=$(echo \"$2\" | sed 's#^host:#{mac}/#')\n"
                   "mkdir -p \"$dst\" 2>/dev/null; cp -r \"$src\" \"$dst\"\n")
    ssh.chmod(0o755)
    scp.chmod(0o755)
    return SshTransport("host", python=sys.executable, workdir="work", ssh=str(ssh), scp=str(scp))


def test_worker_runs_over_the_ssh_transport(fake_ssh: SshTransport, tmp_path: Path) -> None:
    out = run_job(fake_ssh, ENV_HANDLERS, "echo", {"n": 4, "text": "from the mac"}, work=tmp_path / "job",
                  timeout=60, what="remote echo")
    assert out["doubled"] == 8
    assert (tmp_path / "job" / "made.txt").read_text() == "from the mac"  # pulled back from the other side
    assert Path(out["cwd"]).name == "job" and "mac" in out["cwd"]
    s = WorkerSession(fake_ssh, ENV_HANDLERS, "open_doubler", {"factor": 2.0}, what="remote doubler",
                      open_timeout=60, infer_timeout=60, work=tmp_path / "sess")
    try:
        x = np.ones((1, 2), np.float32)
        np.testing.assert_array_equal(s.infer({"x": x})["y:0"], x * 2)
    finally:
        s.close()
