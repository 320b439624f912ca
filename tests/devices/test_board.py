"""The emulated arm64 board (qemu-user, no binfmt): real aarch64 wheels and kernels, CPU features from AT_HWCAP,
drift against the host, emulated latency marked as such.  The board is built once (about a minute) and reused."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgeconv.core.artifact import Artifact
from edgeconv.core.compare import compare_outputs
from edgeconv.core.tensors import random_feeds
from edgeconv.devices import DeviceOptions, run_on_device
from edgeconv.devices.check import check_device
from edgeconv.devices.config import device_from_dict

FAST = {"min_iters": 3, "min_seconds": 0.01, "warmup_min_iters": 1, "warmup_max_seconds": 0.2}


def _feeds(art: Path, n: int = 2):
    return [random_feeds(Artifact.load(art).inputs, seed=i) for i in range(n)]


def _host(art_dir: Path, feeds):
    from edgeconv.targets.registry import get_target

    art = Artifact.load(art_dir)
    with get_target(art.target).runner(art) as r:
        return [r.infer(f) for f in feeds]


def test_board_check_sees_arm_features_and_runtimes(board_device):
    rec = check_device(board_device)
    assert rec["ok"], rec.get("problems") or rec.get("error")
    p = rec["probe"]
    assert p["arch"] == "aarch64" and p["python"].startswith("3.11")
    cpu = p["cpu"]
    assert cpu["source"] == "hwcap"  # /proc/cpuinfo is the host's under qemu-user; AT_HWCAP is the emulated CPU's
    assert cpu["fp16_arithmetic"] and cpu["dotprod"] and not cpu["i8mm"]  # Cortex-A76 (Raspberry Pi 5)
    assert all(p["runtimes"][m]["ok"] for m in ("numpy", "ncnn", "onnxruntime", "ai_edge_litert", "MNN"))
    maxcpu = check_device(device_from_dict({**board_device.to_dict(), "cpu": "max"}))
    assert maxcpu["probe"]["cpu"]["i8mm"]


@pytest.mark.parametrize("backend", ["onnxruntime", "ncnn", "tflite", "mnn"])
def test_board_runs_each_backend_close_to_the_host(backend, device_arts, board_device):
    if backend not in device_arts:
        pytest.skip(f"{backend} is not installed here")
    art = device_arts[backend]
    feeds = _feeds(art)
    res = run_on_device(board_device, art, feeds, latency=True, options=DeviceOptions(latency=FAST, timeout=300))
    assert res.env["arch"] == "aarch64" and res.env["emulated"] is True and res.env["qemu_cpu"] == "cortex-a76"
    assert res.timings["latency_emulated"] is True and "not comparable" in res.timings["latency_note"]
    host = _host(art, feeds)
    drift = compare_outputs(host, res.outputs)
    assert drift["shape_ok"] and drift["cosine"] > 0.999  # same model, other kernels: close, not identical
    assert all(np.isfinite(o[n]).all() for o in res.outputs for n in o)
    assert not list((Path(board_device.workdir) / "jobs").iterdir())
