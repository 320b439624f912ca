"""The SSH transport against a real sshd on 127.0.0.1 (started by the fixture): same rows as the host, key errors,
an unreachable host, and nothing left on the device but the cache."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from edgeconv.core.artifact import Artifact
from edgeconv.core.tensors import random_feeds
from edgeconv.devices import DeviceError, DeviceOptions, DeviceUnreachable, run_on_device
from edgeconv.devices.check import check_device
from edgeconv.devices.config import device_from_dict
from edgeconv.devices.remote import artifact_files

FAST = {"min_iters": 5, "min_seconds": 0.05, "warmup_min_iters": 2, "warmup_max_seconds": 0.5}


def _feeds(art: Path, n: int = 2):
    return [random_feeds(Artifact.load(art).inputs, seed=i) for i in range(n)]


def test_ssh_runs_the_same_rows_as_local(device_arts, ssh_device, local_device):
    art = device_arts["onnxruntime"]
    feeds = _feeds(art)
    over_ssh = run_on_device(ssh_device, art, feeds, latency=True, options=DeviceOptions(latency=FAST))
    here = run_on_device(local_device, art, feeds, latency=False)
    for a, b in zip(over_ssh.outputs, here.outputs):
        for name in b:
            np.testing.assert_array_equal(a[name], b[name])
    assert over_ssh.env["transport"] == "ssh" and over_ssh.env["address"].startswith(ssh_device.user + "@127.0.0.1")
    assert over_ssh.timings["latency_ms"]["n"] >= 5
    wd = Path(ssh_device.workdir)  # loopback: the device's folder is visible here
    _, sha = artifact_files(art)
    assert (wd / "cache" / "artifacts" / sha / "manifest.json").is_file()
    assert list((wd / "jobs").iterdir()) == []


def test_ssh_check_reports_python_and_runtimes(ssh_device):
    rec = check_device(device_from_dict({**ssh_device.to_dict(), "runtimes": ["numpy", "onnxruntime",
                                                                              "no_such_runtime"]}))
    assert rec["reachable"] is True
    assert rec["probe"]["runtimes"]["onnxruntime"]["ok"] is True
    assert rec["ok"] is False and any("no_such_runtime" in p for p in rec["problems"])
    assert rec["probe"]["python"].count(".") == 2


def test_wrong_key_is_one_line(device_arts, ssh_device, sshd):
    dev = device_from_dict({**ssh_device.to_dict(), "key": str(sshd["wrong_key"])})
    with pytest.raises(DeviceError, match="refused the key") as e:
        run_on_device(dev, device_arts["onnxruntime"], _feeds(device_arts["onnxruntime"], 1), latency=False)
    assert "\n" not in e.value.one_line() and e.value.hint
    _assert_no_jobs(dev)


def test_untrusted_host_key_is_one_line(device_arts, ssh_device, tmp_path):
    (tmp_path / "empty_known_hosts").write_text("")
    dev = device_from_dict({**ssh_device.to_dict(), "known_hosts": str(tmp_path / "empty_known_hosts")})
    with pytest.raises(DeviceError, match="host key not trusted"):
        run_on_device(dev, device_arts["onnxruntime"], _feeds(device_arts["onnxruntime"], 1), latency=False)


def test_unreachable_host_is_one_line(device_arts, ssh_device):
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dev = device_from_dict({**ssh_device.to_dict(), "port": port, "connect_timeout": 3})
    with pytest.raises(DeviceUnreachable, match="unreachable") as e:
        run_on_device(dev, device_arts["onnxruntime"], _feeds(device_arts["onnxruntime"], 1), latency=False)
    assert "\n" not in e.value.one_line()
    _assert_no_jobs(dev)


@pytest.mark.parametrize(("body", "says"), [
    ('echo "Segmentation fault (core dumped)" >&2; exit 139', "crashed (exit code 139)"),
    ('echo garbage > "$(dirname "$2")/result.npz"; exit 0', "malformed result"),
])
def test_ssh_worker_crash_and_malformed_result_are_one_line_and_cleaned(device_arts, ssh_device, tmp_path, body,
                                                                        says):
    exe = tmp_path / "badpython"  # the device's own Python misbehaves (loopback: a file on this machine)
    exe.write_text(f"#!/bin/sh\n{body}\n")
    exe.chmod(0o755)
    dev = device_from_dict({**ssh_device.to_dict(), "python": str(exe)})
    with pytest.raises(DeviceError, match=re.escape(says)) as e:
        run_on_device(dev, device_arts["onnxruntime"], _feeds(device_arts["onnxruntime"], 1), latency=False)
    assert "\n" not in e.value.one_line() and e.value.one_line().startswith("device error")
    _assert_no_jobs(dev)
    assert (Path(dev.workdir) / "cache" / "artifacts").is_dir()  # the cache stays: the next run reuses it


def _assert_no_jobs(dev) -> None:
    """Nothing but the cache on the device: no job folder is left, whatever went wrong."""
    wd = Path(dev.workdir)
    assert not wd.exists() or {p.name for p in wd.iterdir()} <= {"cache", "jobs"}
    assert not (wd / "jobs").exists() or list((wd / "jobs").iterdir()) == []


def test_ssh_worker_hang_is_stopped_and_cleaned(device_arts, ssh_device, tmp_path):
    import sys

    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text("import onnxruntime, time\n"
                                           "onnxruntime.InferenceSession.run = lambda *a, **k: time.sleep(600)\n")
    dev = device_from_dict({**ssh_device.to_dict(), "python": sys.executable, "env": {"PYTHONPATH": str(hook)}})
    with pytest.raises(DeviceError, match="stopped at its deadline"):
        run_on_device(dev, device_arts["onnxruntime"], _feeds(device_arts["onnxruntime"], 1),
                      options=DeviceOptions(timeout=2))
    assert list((Path(ssh_device.workdir) / "jobs").iterdir()) == []
