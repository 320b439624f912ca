"""Running the device worker through a transport: copy once per content hash, run, fetch one result file, clean up.

Device-side layout under the device's ``workdir``::

    cache/worker-<sha>/{worker.py,latency_core.py}   the worker, by content hash of its two files
    cache/artifacts/<sha>/                           manifest.json + the artifact's deployable files
    jobs/<deadline>-<random>/{job.json,feeds.npz,result.npz}
                                                     one job; removed afterwards, whatever happened (a job whose
                                                     host was lost is swept by the next run after its deadline)

Uploads go to a ``.tmp-*`` folder renamed into place, so a folder in ``cache/`` is always complete and a second
host racing for the same hash simply loses the rename.  Nothing but ``cache/`` outlives a job.

The result is the host benchmark worker's record (``edgeconv.bench.worker.run_job``'s fields) plus ``device`` and
``env``, so a row measured on a device has the same shape as one measured on the host.
"""

from __future__ import annotations

import json
import posixpath
import secrets
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgeconv.core.console import log
from edgeconv.core.hashing import sha256_file, sha256_json
from edgeconv.devices.config import Device, DeviceError, load_device
from edgeconv.devices.transports import DeviceTimeout, Transport, open_transport

HERE = Path(__file__).resolve().parent
WORKER_FILES = ("worker.py", "latency_core.py")
RUNTIME_OF = {"onnxruntime": "onnxruntime", "ncnn": "ncnn", "tflite": "ai_edge_litert", "mnn": "MNN"}
EMULATED_NOTE = "emulated device (qemu-user): latency is not comparable with hardware; drift is the ARM kernels'"


@dataclass
class DeviceOptions:
    """How to run on a device: latency settings (LatencyConfig fields), threads, time limit, whether to time."""

    latency: dict[str, Any] = field(default_factory=dict)
    threads: int | None = None
    timeout: float = 900.0
    keep_job: bool = False  # debugging only: leave jobs/<id> on the device


@dataclass
class DeviceResult:
    """What one run on a device returns: outputs per input (reference names, NCHW), the timing record, the env."""

    outputs: list[dict[str, np.ndarray]]
    timings: dict[str, Any]
    env: dict[str, Any]


def worker_hash() -> str:
    return sha256_json({n: sha256_file(HERE / n) for n in WORKER_FILES})


def artifact_files(artifact_dir: Path) -> tuple[list[str], str]:
    """The files a device needs (manifest.json + the deployable files; not the bundled reference) and their hash."""
    mf_path = artifact_dir / "manifest.json"
    if not mf_path.is_file():
        raise DeviceError(f"{artifact_dir} is not an edgeconv artifact (no manifest.json)")
    mf = json.loads(mf_path.read_text())
    names = ["manifest.json", *sorted(mf.get("files", {}))]
    missing = [n for n in names if not (artifact_dir / n).is_file()]
    if missing:
        raise DeviceError(f"artifact {artifact_dir} lacks {', '.join(missing)}")
    return names, sha256_json({n: sha256_file(artifact_dir / n) for n in names})


def _ensure_cached(t: Transport, local: Path, names: list[str], dest: str) -> bool:
    """Upload ``names`` from ``local`` to ``dest`` unless it is there; True when it was uploaded now."""
    if t.exists(dest):
        return False
    tmp = f"{dest}.tmp-{secrets.token_hex(6)}"
    try:
        t.put_tree(local, tmp, names)
        if not t.rename(tmp, dest):
            t.rmtree(tmp)
            return False
    except BaseException:
        t.rmtree(tmp)
        raise
    return True


def ensure_worker(t: Transport) -> str:
    """The worker's folder on the device (uploaded on first use of this worker version)."""
    cache = posixpath.join(t.workdir(), "cache")
    t.makedirs(cache)
    dest = posixpath.join(cache, f"worker-{worker_hash()[:32]}")
    _ensure_cached(t, HERE, list(WORKER_FILES), dest)
    return dest


def ensure_artifact(t: Transport, artifact_dir: Path) -> tuple[str, str, bool]:
    """(folder on the device, content hash, uploaded now?) — copied once per content hash."""
    names, sha = artifact_files(artifact_dir)
    cache = posixpath.join(t.workdir(), "cache", "artifacts")
    t.makedirs(cache)
    dest = posixpath.join(cache, sha)
    uploaded = _ensure_cached(t, artifact_dir, names, dest)
    return dest, sha, uploaded


def sweep_expired_jobs(t: Transport, jobs: str) -> list[str]:
    """Remove job folders whose worker deadline has passed: left by a host or farm node lost mid-job."""
    now = time.time()
    gone = []
    for name in t.listdir(jobs):
        stamp = name.split("-", 1)[0]
        if stamp.isdigit() and int(stamp) < now:
            t.rmtree(posixpath.join(jobs, name))
            gone.append(name)
    return gone


def probe_device(device: Device | str, modules: list[str] | None = None, timeout: float = 120.0) -> dict[str, Any]:
    """Run the worker's ``--probe`` on the device: Python, arch, CPU features, which runtimes import."""
    device = load_device(device)
    with open_transport(device) as t:
        wdir = ensure_worker(t)
        r = t.run([*t.python_argv(), posixpath.join(wdir, "worker.py"), "--probe", *(modules or [])],
                  timeout=timeout, env=t.worker_env())
    if r.returncode != 0:
        raise DeviceError(f"device {device.name}: the probe failed (exit {r.returncode}) {r.tail()}".strip(),
                          hint="does python= in the device file name a Python 3 with numpy?")
    try:
        return json.loads(r.stdout.strip().splitlines()[-1])
    except (json.JSONDecodeError, IndexError) as e:
        raise DeviceError(f"device {device.name}: the probe printed no result ({r.tail()})") from e


def _read_result(path: Path, device: Device) -> tuple[dict[str, Any], list[dict[str, np.ndarray]]]:
    """Parse the worker's one result file; anything unexpected is a DeviceError (malformed result)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            rec = json.loads(str(z["__result__"]))
            names = json.loads(str(z["__names__"]))
            n = sum(1 for k in z.files if k.endswith("__0"))
            outs = [{name: z[f"s{i}__{j}"] for j, name in enumerate(names)} for i in range(n)]
    except Exception as e:  # noqa: BLE001 - a bad file from a device is that row's failure
        raise DeviceError(f"device {device.name} returned a malformed result ({type(e).__name__}: "
                          f"{' '.join(str(e).split())[:120]})") from e
    if not isinstance(rec, dict) or "ok" not in rec:
        raise DeviceError(f"device {device.name} returned a malformed result (no 'ok' field)")
    return rec, outs


def run_on_device(device: Device | str, artifact_dir: str | Path, feeds: list[dict[str, np.ndarray]] | Path, *,
                  latency: bool = True, options: DeviceOptions | None = None) -> DeviceResult:
    """Measure one artifact on ``device``: outputs for every feed (drift/task metrics are the host's), timings, env.

    ``feeds`` is a list of input dicts or an npz written by ``edgeconv.bench.worker.save_feeds``.  Raises a
    DeviceError (one line) when the device cannot be reached, refuses the key, lacks the runtime, or its worker
    crashes, hangs or returns something malformed; the job folder is removed on the device in every case.
    """
    from edgeconv.bench.worker import save_feeds

    device = load_device(device)
    options = options or DeviceOptions()
    art = Path(artifact_dir)
    target = json.loads((art / "manifest.json").read_text()).get("target") if (art / "manifest.json").is_file() \
        else None
    threads = options.threads if options.threads is not None else (device.threads or None)
    with tempfile.TemporaryDirectory(prefix="edgeconv-device-") as tmpd:
        tmp = Path(tmpd)
        feeds_npz = feeds if isinstance(feeds, Path) else tmp / "feeds.npz"
        if not isinstance(feeds, Path):
            save_feeds(feeds_npz, feeds)
        with open_transport(device) as t:
            wdir = ensure_worker(t)
            art_dir, art_sha, uploaded = ensure_artifact(t, art)
            log.debug("device %s: artifact %s %s", device.name, art_sha[:12], "uploaded" if uploaded else "cached")
            jobs = posixpath.join(t.workdir(), "jobs")
            sweep_expired_jobs(t, jobs)
            # the name carries the time by which its worker has ended itself (SIGALRM), so any later run may sweep it
            job_dir = posixpath.join(jobs, f"{int(time.time() + options.timeout + 60)}-{secrets.token_hex(6)}")
            t.makedirs(job_dir)
            try:
                job = {"artifact": art_dir, "feeds": "feeds.npz", "result": "result.npz",
                       "latency": dict(options.latency), "threads": threads, "affinity": list(device.affinity) or None,
                       "skip_latency": not latency, "deadline_s": int(options.timeout),
                       "runtime": RUNTIME_OF.get(target or "")}
                (tmp / "job.json").write_text(json.dumps(job))
                t.put(tmp / "job.json", posixpath.join(job_dir, "job.json"))
                t.put(feeds_npz, posixpath.join(job_dir, "feeds.npz"))
                argv = [*t.python_argv(), posixpath.join(wdir, "worker.py"), posixpath.join(job_dir, "job.json")]
                try:
                    r = t.run(argv, timeout=options.timeout + 15, env=t.worker_env())
                except DeviceTimeout as e:
                    raise DeviceTimeout(f"device {device.name}: the worker did not finish within "
                                        f"{options.timeout:.0f} s and was stopped") from e
                result_remote = posixpath.join(job_dir, "result.npz")
                if not t.exists(result_remote):
                    how = "was stopped at its deadline" if r.returncode in (-14, 142) else \
                        f"crashed (exit code {r.returncode})"
                    raise DeviceError(f"device {device.name}: the worker {how} {r.tail()}".strip())
                t.get(result_remote, tmp / "result.npz")
            finally:
                if not options.keep_job:
                    t.rmtree(job_dir)
        rec, outs = _read_result(tmp / "result.npz", device)
    env = rec.pop("env", {}) or {}
    env.update(device=device.name, transport=device.transport, address=device.address, emulated=device.emulated,
               artifact_sha256=art_sha)
    if device.transport == "qemu":
        env["qemu_cpu"] = device.cpu
    if not rec.get("ok"):
        log.debug("device worker traceback:\n%s", rec.get("traceback", ""))
        hint = None
        if "not installed on this device" in str(rec.get("error")):
            hint = "install the runtime on the device (or build the emulated board again)"
        raise DeviceError(f"device {device.name}: {rec.get('error')}", hint=hint)
    rec["device"] = device.name
    if device.emulated:
        rec["latency_emulated"] = True
        rec["latency_note"] = EMULATED_NOTE
    return DeviceResult(outs, rec, env)


def run_device_worker(art: Any, feeds_npz: Path, work: Path, *, device: Device | str, threads: int | None,
                      latency: Any, timeout: float, skip_latency: bool = False) -> tuple[dict[str, Any], list | None]:
    """Drop-in for ``edgeconv.bench.evaluate.run_worker`` that measures on ``device``.

    Same arguments and the same return: ``(record, outputs)``, or ``({"ok": False, "error": one line}, None)``.
    Within ``edgeconv.devices.farm.measured(...)`` for this device and artifact it returns that measurement.
    """
    from edgeconv.devices.farm import take_measured

    held = take_measured(device, Path(getattr(art, "path", art)))
    if held is not None:  # measured on the farm (edgeconv run --farm): score it, do not run it again
        return held
    lat = latency.to_dict() if hasattr(latency, "to_dict") else dict(latency or {})
    try:
        res = run_on_device(device, Path(getattr(art, "path", art)), Path(feeds_npz), latency=not skip_latency,
                            options=DeviceOptions(latency=lat, threads=threads, timeout=timeout))
    except DeviceError as e:
        return {"ok": False, "error": e.one_line(), "hint": e.hint}, None
    return {**res.timings, "env": res.env}, res.outputs


def verify_on_device(artifact_dir: str | Path, device: Device | str, feeds: list[dict[str, np.ndarray]],
                     refs: list[dict[str, np.ndarray]], tolerance: dict[str, float],
                     *, timeout: float = 600.0) -> dict[str, Any]:
    """Verification of an artifact on a device: its drift against ``refs`` judged by ``tolerance``.

    Returns the record the pipeline stores beside the host's (``status`` ok/failed, drift, failures, device env);
    a drift beyond tolerance is a failed check in the record, the caller decides whether that raises.
    """
    from edgeconv.core.compare import compare_outputs, within

    res = run_on_device(device, artifact_dir, feeds, latency=False, options=DeviceOptions(timeout=timeout))
    drift = compare_outputs(refs, res.outputs)
    passed, fails = within(drift, tolerance)
    return {"status": "ok" if passed else "failed", "device": res.env.get("device"), "samples": len(feeds),
            "tolerance": tolerance, "drift": {k: v for k, v in drift.items() if k != "per_output"},
            "per_output": drift["per_output"], "failures": fails, "emulated": res.env.get("emulated", False),
            "env": {k: res.env.get(k) for k in ("arch", "python", "cpu", "runtimes", "transport", "qemu_cpu")
                    if k in res.env}}


