"""A device farm on Ray: benchmark rows run as Ray tasks on the nodes that advertise the device.

A node that has a device attached starts Ray with ``--resources '{"device:raspberry-pi-5": 1}'``; every row for that
device asks for that one unit, so Ray places it on that node and never runs two rows on one device at once (timings
would collide).  Ray does the placement, the retries (``max_retries`` for a lost worker, ``retry_exceptions`` for a
device that did not answer) and the transfer of artifacts and inputs (the object store); this module only keeps at
most one row per device in flight so each row's time limit counts from its own start, and watches that some live
node still advertises the device: a node lost mid-row fails that row (and the rows queued behind it) at once
instead of leaving them pending forever, and the run goes on.

``farm``: ``"local"`` starts a one-node Ray on this machine advertising every device of the rows;
``"ray://HOST:PORT"`` (Ray Client), ``"HOST:PORT"`` (the head's GCS address, from a machine of the cluster) or
``"auto"`` connects to a running cluster (its nodes need ``pip install 'edgeconv[devices]'``); ``None`` uses the Ray
this process is already connected to (tests use ``ray.cluster_utils.Cluster``).  A Ray that ``run_farm`` started or
joined is shut down when it returns.

``edgeconv run --farm`` (``edgeconv.bench.matrix``) converts on the host, hands its device rows to :func:`run_farm`,
then scores each measurement on the host through the same ``bench_artifact`` as any device row: within
:func:`measured`, the device seam that ``bench_artifact`` calls (``run_device_worker``) returns the farm's
measurement for that one row instead of running it again, so a farm row and a direct device row are one shape.
"""

from __future__ import annotations

import collections
import contextlib
import contextvars
import os
import re
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeconv.core.console import log
from edgeconv.core.errors import ConfigError
from edgeconv.core.lazy import require
from edgeconv.devices.config import Device, DeviceError, DeviceUnreachable, device_from_dict

RESOURCE = "device:{}"
FARM_FORMS = "local | auto | ray://HOST:PORT | HOST:PORT"
_ADDRESS = re.compile(r"^(ray://)?(\[[0-9A-Fa-f:]+\]|[A-Za-z0-9][A-Za-z0-9.-]*):([0-9]{1,5})$")
Measured = tuple[dict[str, Any], list[dict[str, Any]] | None]
_MEASURED: contextvars.ContextVar[tuple[str, Path, Measured] | None] = contextvars.ContextVar("farm_measured",
                                                                                              default=None)


def check_farm(farm: str) -> str:
    """Validate a ``--farm`` value and that Ray is installed, before anything is converted.

    A malformed value is a ConfigError (exit 2); a missing Ray a MissingDependencyError (exit 7)."""
    value = farm.strip()
    m = _ADDRESS.match(value)
    if value not in ("local", "auto") and not (m and 0 < int(m.group(3)) < 65536):
        raise ConfigError(f"--farm {farm!r} is not a Ray farm address",
                          hint=f"--farm {FARM_FORMS}, e.g. --farm local or --farm ray://head:10001")
    require("ray", "devices")
    return value


@contextlib.contextmanager
def measured(device: str, artifact: Path, result: Measured) -> Iterator[None]:
    """Within this block, the one device run of ``artifact`` on ``device`` is ``result`` (already measured)."""
    token = _MEASURED.set((device, Path(artifact).resolve(), result))
    try:
        yield
    finally:
        _MEASURED.reset(token)


def take_measured(device: Device | str, artifact: Path) -> Measured | None:
    """The measurement :func:`measured` holds for this device and artifact (once), else None: run it."""
    from edgeconv.devices.config import load_device

    held = _MEASURED.get()
    if held is None or held[0] != load_device(device).name or held[1] != Path(artifact).resolve():
        return None
    _MEASURED.set(None)
    return held[2]


@dataclass
class FarmRow:
    """One benchmark row: an artifact measured on a device with these inputs and settings."""

    key: str
    device: Device
    artifact: Path
    feeds_npz: Path
    latency: dict[str, Any] = field(default_factory=dict)
    threads: int | None = None
    skip_latency: bool = False


def _pack(artifact: Path) -> tuple[str, dict[str, bytes]]:
    from edgeconv.devices.remote import artifact_files

    names, sha = artifact_files(artifact)
    return sha, {n: (artifact / n).read_bytes() for n in names}


def _unpack(sha: str, files: dict[str, bytes]) -> Path:
    """The artifact in this node's temp folder, once per content hash (atomic: rename into place)."""
    root = Path(tempfile.gettempdir()) / "edgeconv-farm" / "artifacts"
    dest = root / sha
    if dest.is_dir():
        return dest
    tmp = Path(tempfile.mkdtemp(prefix=f".{sha[:12]}.tmp-", dir=_mkdir(root)))
    for n, data in files.items():
        (tmp / n).parent.mkdir(parents=True, exist_ok=True)
        (tmp / n).write_bytes(data)
    try:
        os.rename(tmp, dest)
    except OSError:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)  # another task won the race
    return dest


def _mkdir(p: Path) -> Path:
    p.mkdir(parents=True, exist_ok=True)
    return p


def bench_task(device: dict[str, Any], sha: str, files: dict[str, bytes], feeds: bytes, latency: dict[str, Any],
               threads: int | None, skip_latency: bool, timeout: float) -> tuple[dict[str, Any], list | None]:
    """What a Ray task runs on the device's node: the device worker through the device's transport."""
    import ray

    from edgeconv.devices.remote import DeviceOptions, run_on_device

    t0 = time.perf_counter()
    dev = device_from_dict(device)
    art = _unpack(sha, files)
    node = ray.get_runtime_context().get_node_id()
    with tempfile.TemporaryDirectory(prefix="edgeconv-farm-") as tmp:
        fpath = Path(tmp) / "feeds.npz"
        fpath.write_bytes(feeds)
        try:
            res = run_on_device(dev, art, fpath, latency=not skip_latency,
                                options=DeviceOptions(latency=latency, threads=threads, timeout=timeout))
        except DeviceUnreachable:
            raise  # Ray retries it (retry_exceptions)
        except DeviceError as e:
            return {"ok": False, "error": e.one_line(), "hint": e.hint, "farm": {"node": node}}, None
    return {**res.timings, "env": res.env, "farm": {"node": node, "seconds": round(time.perf_counter() - t0, 2)}}, \
        res.outputs


def connect(farm: str | None, devices: list[str]) -> Any:
    """Start or join Ray; ``local`` advertises ``devices`` on this machine's single node."""
    ray = require("ray", "devices")
    if farm is None:
        if not ray.is_initialized():
            raise DeviceError("no Ray cluster: pass farm='local' or an address")
        return ray
    if ray.is_initialized():
        return ray
    try:
        if farm == "local":
            ray.init(resources={RESOURCE.format(d): 1 for d in devices}, include_dashboard=False,
                     log_to_driver=False, configure_logging=False)
        else:
            ray.init(address=farm, log_to_driver=False)
    except Exception as e:  # noqa: BLE001 - Ray raises ConnectionError, RuntimeError, ValueError, ...
        raise DeviceUnreachable(f"cannot {'start' if farm == 'local' else 'join'} the Ray farm {farm}: "
                                f"{type(e).__name__}: {' '.join(str(e).split())[:200]}",
                                hint="is the head up (`ray start --head`) and is this its address?") from e
    return ray


def _advertised(ray: Any) -> set[str]:
    return {k for n in ray.nodes() if n.get("Alive") for k in (n.get("Resources") or {}) if k.startswith("device:")}


def _fail(msg: str, **extra: Any) -> tuple[dict[str, Any], None]:
    return {"ok": False, "error": " ".join(msg.split())[:500], **extra}, None


def run_farm(rows: list[FarmRow], *, farm: str | None = "local", timeout: float = 900.0, retries: int = 1,
             poll: float = 0.5) -> dict[str, tuple[dict[str, Any], list | None]]:
    """Run every row on its device's node; ``key -> (record, outputs)`` as ``bench.evaluate.run_worker`` returns.

    Failed rows get ``({"ok": False, "error": one line}, None)``: a device error, a row past ``timeout`` (seconds
    from its start), a task that raised, a node lost mid-row, or no live node advertising the device.
    """
    if not rows:
        return {}
    ray = require("ray", "devices")
    started = farm is not None and not ray.is_initialized()
    connect(farm, sorted({r.device.name for r in rows}))
    try:
        return _schedule(ray, rows, timeout=timeout, retries=retries, poll=poll)
    finally:
        if started:
            ray.shutdown()


def _schedule(ray: Any, rows: list[FarmRow], *, timeout: float, retries: int,
              poll: float) -> dict[str, tuple[dict[str, Any], list | None]]:
    remote = ray.remote(bench_task)
    results: dict[str, tuple[dict[str, Any], list | None]] = {}
    queues: dict[str, collections.deque[FarmRow]] = collections.defaultdict(collections.deque)
    for r in rows:
        queues[r.device.name].append(r)
    packed: dict[Path, tuple[str, Any]] = {}
    feeds: dict[Path, Any] = {}
    inflight: dict[Any, tuple[FarmRow, float]] = {}
    busy: set[str] = set()
    while any(queues.values()) or inflight:
        live = _advertised(ray)
        for name, q in queues.items():
            if name in busy or not q:
                continue
            if RESOURCE.format(name) not in live:
                while q:
                    row = q.popleft()
                    results[row.key] = _fail(f"device error: no live Ray node advertises {RESOURCE.format(name)}")
                continue
            row = q.popleft()
            if row.artifact not in packed:
                sha, files = _pack(row.artifact)
                packed[row.artifact] = (sha, ray.put(files))
            if row.feeds_npz not in feeds:
                feeds[row.feeds_npz] = ray.put(row.feeds_npz.read_bytes())
            sha, files_ref = packed[row.artifact]
            ref = remote.options(resources={RESOURCE.format(name): 1}, num_cpus=0, max_retries=retries,
                                 retry_exceptions=[DeviceUnreachable]).remote(
                row.device.to_dict(), sha, files_ref, feeds[row.feeds_npz], row.latency, row.threads,
                row.skip_latency, timeout)
            inflight[ref] = (row, time.monotonic())
            busy.add(name)
        if not inflight:
            continue
        ready, _ = ray.wait(list(inflight), num_returns=1, timeout=poll)
        for ref in ready:
            row, _t = inflight.pop(ref)
            busy.discard(row.device.name)
            results[row.key] = _collect(ray, ref, row)
        now = time.monotonic()
        live = _advertised(ray)
        for ref, (row, t0) in list(inflight.items()):
            why = None
            if now - t0 > timeout + 30:
                why = f"did not finish within {timeout:.0f} s on the farm and was cancelled"
            elif RESOURCE.format(row.device.name) not in live:
                why = f"the Ray node advertising {RESOURCE.format(row.device.name)} was lost mid-row"
            if why:
                ray.cancel(ref, force=True)
                inflight.pop(ref)
                busy.discard(row.device.name)
                results[row.key] = _fail(f"device error: device {row.device.name}: {why}")
                log.warning("%s: %s", row.key, why)
    return results


def score_on_farm(jobs: list[tuple[FarmRow, Callable[[], dict[str, Any]]]], *, farm: str | None,
                  timeout: float = 900.0, retries: int = 1) -> list[dict[str, Any]]:
    """Measure every row on the farm, then call its ``score`` (the host's ``bench_artifact``) on that measurement.

    ``score`` runs within :func:`measured`, so the device seam it calls returns the farm's record and outputs; the
    node that measured the row is added to the scored row as ``farm``.
    """
    results = run_farm([fr for fr, _ in jobs], farm=farm, timeout=timeout, retries=retries)
    rows = []
    for fr, score in jobs:
        rec = results[fr.key]
        with measured(fr.device.name, fr.artifact, rec):
            row = score()
        if rec[0].get("farm"):
            row["farm"] = {**rec[0]["farm"], "address": farm}
        rows.append(row)
    return rows


def _collect(ray: Any, ref: Any, row: FarmRow) -> tuple[dict[str, Any], list | None]:
    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as e:
        cause = e.cause if getattr(e, "cause", None) is not None else e
        msg = cause.one_line() if hasattr(cause, "one_line") else f"{type(cause).__name__}: {cause}"
        return _fail(msg)
    except (ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError, ray.exceptions.ObjectLostError,
            ray.exceptions.TaskCancelledError, ray.exceptions.RayError) as e:
        return _fail(f"device error: device {row.device.name}: the Ray task was lost ({type(e).__name__})")
