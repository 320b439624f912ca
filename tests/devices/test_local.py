"""The device worker through the local transport: identical outputs to the host runners, the host worker's record
shape, the device-side cache, and one-line errors for a missing runtime, a crash, a hang and a malformed result."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from edgeconv.core.artifact import Artifact
from edgeconv.devices import DeviceError, DeviceOptions, run_device_worker, run_on_device
from edgeconv.devices.config import device_from_dict
from edgeconv.devices.remote import artifact_files
from edgeconv.targets.registry import get_target

FAST = {"min_iters": 5, "min_seconds": 0.05, "warmup_min_iters": 2, "warmup_max_seconds": 0.5}


def _feeds(art: Path, n: int = 3) -> list[dict[str, np.ndarray]]:
    from edgeconv.core.tensors import random_feeds

    return [random_feeds(Artifact.load(art).inputs, seed=i) for i in range(n)]


def _host_outputs(art_dir: Path, feeds, threads=None):
    art = Artifact.load(art_dir)
    with get_target(art.target).runner(art, threads=threads) as r:
        return [r.infer(f) for f in feeds]


@pytest.mark.parametrize("backend", ["onnxruntime", "ncnn", "tflite", "mnn"])
def test_device_runner_matches_host_runner_exactly(backend, device_arts, local_device):
    if backend not in device_arts:
        pytest.skip(f"{backend} is not installed here")
    feeds = _feeds(device_arts[backend])
    res = run_on_device(local_device, device_arts[backend], feeds, latency=False)
    host = _host_outputs(device_arts[backend], feeds)
    assert len(res.outputs) == len(host) == 3
    for got, ref in zip(res.outputs, host):
        assert list(got) == list(ref)  # reference names, in order
        for name in ref:
            assert got[name].shape == ref[name].shape  # NCHW with the batch axis, like the host runner
            np.testing.assert_array_equal(got[name], ref[name])  # same runtime, same mapping: bit-identical


def test_timings_have_the_host_worker_shape(device_arts, local_device):
    art = device_arts["onnxruntime"]
    res = run_on_device(local_device, art, _feeds(art), latency=True, options=DeviceOptions(latency=FAST))
    t = res.timings
    assert t["ok"] is True and t["device"] == "test-local"
    for key in ("cold_start_ms", "latency_ms", "peak_rss_mb", "rss_before_mb", "eval_inference_ms", "runner"):
        assert key in t, key
    lat = t["latency_ms"]
    assert lat["n"] >= 5 and lat["p50_ci"][0] <= lat["p50"] <= lat["p50_ci"][1]
    assert set(lat) >= {"min", "p50", "p90", "p99", "mean", "quantiles", "warmup"}
    assert t["cold_start_ms"]["total"] > 0 and t["peak_rss_mb"] > 10
    assert res.env["transport"] == "local" and res.env["runtimes"]["onnxruntime"]["ok"]
    assert "latency_emulated" not in t


def test_artifact_copied_once_per_content_hash_and_jobs_removed(device_arts, local_device):
    art = device_arts["onnxruntime"]
    run_on_device(local_device, art, _feeds(art, 1), latency=False)
    wd = Path(local_device.workdir)
    cached = sorted((wd / "cache" / "artifacts").iterdir())
    _, sha = artifact_files(art)
    assert [p.name for p in cached] == [sha]
    assert sorted(p.name for p in cached[0].iterdir()) == sorted(["manifest.json",
                                                                  *json.loads((art / "manifest.json").read_text())
                                                                  ["files"]])
    stamp = cached[0].stat().st_mtime_ns
    run_on_device(local_device, art, _feeds(art, 1), latency=False)
    assert cached[0].stat().st_mtime_ns == stamp  # not uploaded again
    assert list((wd / "jobs").iterdir()) == []  # nothing left but the cache
    assert not [p for p in (wd / "cache").rglob("*.tmp-*")]


def test_run_device_worker_is_a_drop_in_for_run_worker(device_arts, local_device, tmp_path):
    from edgeconv.bench.latency import LatencyConfig
    from edgeconv.bench.worker import save_feeds

    art = Artifact.load(device_arts["onnxruntime"])
    save_feeds(tmp_path / "feeds.npz", _feeds(art.path, 2))
    res, outs = run_device_worker(art, tmp_path / "feeds.npz", tmp_path, device=local_device, threads=1,
                                  latency=LatencyConfig(**FAST), timeout=120)
    assert res["ok"] and res["threads"] == 1 and len(outs) == 2
    nowhere = device_from_dict({"name": "x", "transport": "local", "python": "/nonexistent"})
    bad, none = run_device_worker(art, tmp_path / "feeds.npz", tmp_path, device=nowhere,
                                  threads=None, latency=LatencyConfig(**FAST), timeout=30)
    assert bad["ok"] is False and none is None and "\n" not in bad["error"] and "device error" in bad["error"]


def _fake_python(tmp_path: Path, body: str) -> str:
    """A 'python' on the device that behaves badly (the worker's interpreter is the device's own)."""
    exe = tmp_path / "badpython"
    exe.write_text(f"#!/bin/sh\n{body}\n")
    exe.chmod(0o755)
    return str(exe)


def _bad_device(tmp_path: Path, body: str) -> object:
    return device_from_dict({"name": "bad", "transport": "local", "python": _fake_python(tmp_path, body),
                             "workdir": str(tmp_path / "dev")})


def _assert_one_line_and_clean(e: pytest.ExceptionInfo, tmp_path: Path) -> None:
    line = e.value.one_line()
    assert "\n" not in line and line.startswith("device error")
    assert list((tmp_path / "dev" / "jobs").iterdir()) == []


def test_worker_crash_is_one_line(device_arts, tmp_path):
    dev = _bad_device(tmp_path, 'echo "Segmentation fault (core dumped)" >&2; exit 139')
    with pytest.raises(DeviceError, match="crashed \\(exit code 139\\)") as e:
        run_on_device(dev, device_arts["onnxruntime"], _feeds(device_arts["onnxruntime"], 1))
    _assert_one_line_and_clean(e, tmp_path)


def test_worker_hang_is_stopped(device_arts, tmp_path):
    dev = _bad_device(tmp_path, "sleep 60")
    with pytest.raises(DeviceError, match="did not finish within 1 s") as e:
        run_on_device(dev, device_arts["onnxruntime"], _feeds(device_arts["onnxruntime"], 1),
                      options=DeviceOptions(timeout=1))
    _assert_one_line_and_clean(e, tmp_path)


def test_worker_hang_in_the_runtime_ends_at_its_deadline(device_arts, tmp_path):
    """The real worker, stuck inside the runtime: SIGALRM's default action ends it on the device by itself."""
    import sys

    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(
        "import onnxruntime, time\n"
        "onnxruntime.InferenceSession.run = lambda *a, **k: time.sleep(600)\n")
    dev = device_from_dict({"name": "stuck", "transport": "local", "python": sys.executable,
                            "workdir": str(tmp_path / "dev"), "env": {"PYTHONPATH": str(hook)}})
    with pytest.raises(DeviceError, match="stopped at its deadline") as e:
        run_on_device(dev, device_arts["onnxruntime"], _feeds(device_arts["onnxruntime"], 1),
                      options=DeviceOptions(timeout=2))
    _assert_one_line_and_clean(e, tmp_path)


def test_malformed_result_is_one_line(device_arts, tmp_path):
    # a worker that 'succeeds' but writes garbage where the result belongs
    body = 'job="$2"; d=$(dirname "$job"); echo garbage > "$d/result.npz"; exit 0'
    dev = _bad_device(tmp_path, body)
    with pytest.raises(DeviceError, match="malformed result") as e:
        run_on_device(dev, device_arts["onnxruntime"], _feeds(device_arts["onnxruntime"], 1))
    _assert_one_line_and_clean(e, tmp_path)


def test_missing_runtime_is_one_line(device_arts, tmp_path):
    """A device whose Python lacks the backend: the worker says which runtime, the host one line."""
    import sys

    if "ncnn" not in device_arts:
        pytest.skip("ncnn is not installed here")
    site = tmp_path / "site"  # numpy only: the device has no ncnn
    site.mkdir()
    import numpy

    os.symlink(Path(numpy.__file__).parent, site / "numpy")
    if (libs := Path(numpy.__file__).parent.parent / "numpy.libs").is_dir():
        os.symlink(libs, site / "numpy.libs")
    # -S: no site-packages, so only the numpy linked above is importable
    dev = device_from_dict({"name": "bare", "transport": "local", "workdir": str(tmp_path / "dev"),
                            "python": _fake_python(tmp_path, f'exec {sys.executable} -S "$@"'),
                            "env": {"PYTHONPATH": str(site)}})
    with pytest.raises(DeviceError, match="ncnn runtime is not installed on this device") as e:
        run_on_device(dev, device_arts["ncnn"], _feeds(device_arts["ncnn"], 1))
    assert e.value.hint
    _assert_one_line_and_clean(e, tmp_path)


def test_verify_on_device_judges_drift_by_the_tolerance(device_arts, local_device):
    from edgeconv.devices import verify_on_device

    art = device_arts["onnxruntime"]
    feeds = _feeds(art, 2)
    refs = _host_outputs(art, feeds)
    ok = verify_on_device(art, local_device, feeds, refs, {"max_abs": 1e-6})
    assert ok["status"] == "ok" and ok["drift"]["max_abs"] == 0.0 and ok["device"] == "test-local"
    shifted = [{k: v + 1.0 for k, v in r.items()} for r in refs]
    bad = verify_on_device(art, local_device, feeds, shifted, {"max_abs": 1e-3})
    assert bad["status"] == "failed" and any("max_abs" in f for f in bad["failures"])


def test_device_for_profile_skips_an_unbuilt_board(tmp_path, monkeypatch):
    from edgeconv.devices import device_for_profile

    monkeypatch.setenv("EDGECONV_BOARDS", str(tmp_path / "no-boards"))
    assert device_for_profile("raspberry-pi-5") is None  # the only device serving it is an unbuilt board
    assert device_for_profile("raspberry-pi-5", explicit="local").name == "local"


def test_jobs_of_a_lost_host_are_swept_after_their_deadline(device_arts, local_device):
    import time

    jobs = Path(local_device.workdir) / "jobs"
    expired, live = jobs / f"{int(time.time()) - 5}-dead", jobs / f"{int(time.time()) + 3600}-running"
    for d in (expired, live):
        d.mkdir(parents=True)
        (d / "feeds.npz").write_bytes(b"x")
    run_on_device(local_device, device_arts["onnxruntime"], _feeds(device_arts["onnxruntime"], 1), latency=False)
    assert not expired.exists() and live.exists()  # a job still within its deadline is never touched
