"""``unsupported_reason``: whether a device can run a backend, from the worker's runner table, the device's
definition and its probe; an unreachable device is not "unsupported" (its run reports that)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from edgeconv.devices import unsupported_reason
from edgeconv.devices.config import device_from_dict
from edgeconv.devices.support import forget_probes, runtimes_for
from edgeconv.devices.worker import RUNNERS


@pytest.fixture(autouse=True)
def _fresh_probes():
    forget_probes()
    yield
    forget_probes()


def _sh(tmp_path: Path, body: str) -> str:
    exe = tmp_path / "python-wrapper"
    exe.write_text(f"#!/bin/sh\n{body}\n")
    exe.chmod(0o755)
    return str(exe)


def test_a_backend_without_a_worker_runner_is_unsupported_everywhere(local_device):
    why = unsupported_reason(local_device, "openvino", probe=False)
    assert why and "no runner for openvino" in why and all(b in why for b in RUNNERS)
    assert runtimes_for("openvino") == () and runtimes_for("tflite") == ("ai_edge_litert", "tflite_runtime")


def test_a_runtime_the_definition_does_not_list_is_unsupported_without_asking_the_device(tmp_path):
    marker = tmp_path / "asked"
    dev = device_from_dict({"name": "no-ncnn", "transport": "local", "workdir": str(tmp_path / "d"),
                            "python": _sh(tmp_path, f"touch {marker}; exit 1"), "runtimes": ["numpy", "onnxruntime"]})
    why = unsupported_reason(dev, "ncnn")
    assert why == "device no-ncnn: its definition does not list the ncnn runtime (runtimes = ['numpy', 'onnxruntime'])"
    assert not marker.exists()  # decided from the definition: no round trip
    assert unsupported_reason(dev, "tflite", probe=False)
    assert unsupported_reason(dev, "onnxruntime", probe=False) is None


def test_a_listed_runtime_that_does_not_import_there_is_unsupported(tmp_path):
    """The device's Python has numpy only (-S, numpy linked in): the probe finds no onnxruntime."""
    import numpy

    site = tmp_path / "site"
    site.mkdir()
    os.symlink(Path(numpy.__file__).parent, site / "numpy")
    if (libs := Path(numpy.__file__).parent.parent / "numpy.libs").is_dir():
        os.symlink(libs, site / "numpy.libs")
    dev = device_from_dict({"name": "bare", "transport": "local", "workdir": str(tmp_path / "d"),
                            "python": _sh(tmp_path, f'exec {sys.executable} -S "$@"'), "env": {"PYTHONPATH": str(site)},
                            "runtimes": ["numpy", "onnxruntime"]})
    why = unsupported_reason(dev, "onnxruntime")
    assert why and why.startswith("device bare: the onnxruntime runtime does not import there")
    assert "ModuleNotFoundError" in why and "\n" not in why
    assert list((tmp_path / "d" / "cache").iterdir())  # the probe left only the worker's cache on the device
    assert not (tmp_path / "d" / "jobs").exists() or not list((tmp_path / "d" / "jobs").iterdir())


def test_a_device_that_has_the_runtime_is_supported(local_device):
    assert unsupported_reason(local_device, "onnxruntime") is None


def test_an_unreachable_device_is_not_called_unsupported(tmp_path):
    dev = device_from_dict({"name": "gone", "transport": "local", "python": "/nonexistent/python3",
                            "workdir": str(tmp_path / "d"), "runtimes": ["numpy", "onnxruntime"]})
    assert unsupported_reason(dev, "onnxruntime") is None  # the verification run will say why, in one line
