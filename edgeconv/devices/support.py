"""Can a device run a backend's artifacts at all?  Decided from data, never from the words of an error message.

Two facts decide it: the device worker's ``RUNNERS`` table (the backends it has a runner for) and the runtimes of
the device, first as its definition lists them (``runtimes = [...]``: a device that does not list a runtime is not
asked), then as the worker's probe finds them there (the module imports, or not; probed once per device and process).
A device that cannot be reached is *not* "unsupported": that is the run's own one-line error, so the caller goes on
and sees it.
"""

from __future__ import annotations

import threading
from typing import Any

from edgeconv.devices import worker
from edgeconv.devices.config import Device, DeviceError, load_device

_PROBES: dict[tuple[str, ...], dict[str, Any]] = {}
_LOCK = threading.Lock()


def runtimes_for(backend: str) -> tuple[str, ...]:
    """The Python modules of which any one lets the worker run ``backend`` (empty: it has no runner for it)."""
    if backend not in worker.RUNNERS:
        return ()
    return worker.RUNTIME_CHOICES.get(backend, (worker.RUNTIME_OF[backend],))


def _key(device: Device) -> tuple[str, ...]:
    return (device.name, device.transport, device.address, device.python or "", device.path or "",
            repr(sorted(device.env.items())))


def _probe(device: Device, modules: list[str]) -> dict[str, Any] | None:
    """The probe's ``runtimes`` for ``modules`` (cached per device); None when the device did not answer."""
    from edgeconv.devices.remote import probe_device

    key = _key(device)
    with _LOCK:
        known = dict(_PROBES.get(key, {}))
    missing = [m for m in modules if m not in known]
    if missing:
        try:
            found = probe_device(device, missing).get("runtimes") or {}
        except DeviceError:
            return None
        with _LOCK:
            _PROBES.setdefault(key, {}).update(found)
            known = dict(_PROBES[key])
    return {m: known[m] for m in modules if m in known}


def unsupported_reason(device: Device | str, backend: str, *, probe: bool = True) -> str | None:
    """Why ``device`` cannot run ``backend`` artifacts (one line), or None when it can, as far as can be known.

    ``probe=False`` decides from the worker's table and the device's definition only (no round trip)."""
    dev = load_device(device)
    mods = runtimes_for(backend)
    if not mods:
        return (f"device {dev.name}: the device worker has no runner for {backend} artifacts "
                f"(it runs {', '.join(worker.RUNNERS)})")
    if dev.runtimes and not set(mods) & set(dev.runtimes):
        return (f"device {dev.name}: its definition does not list the {' or '.join(mods)} runtime "
                f"(runtimes = {list(dev.runtimes)})")
    if not probe:
        return None
    found = _probe(dev, list(mods))
    if found is None or any((found.get(m) or {}).get("ok") for m in mods):
        return None
    why = "; ".join(f"{m}: {(found.get(m) or {}).get('error', 'not probed')}" for m in mods)
    return f"device {dev.name}: the {' or '.join(mods)} runtime does not import there ({why})"[:400]


def forget_probes() -> None:
    """Drop the cached probes (after installing a runtime on a device, in a long-lived process)."""
    with _LOCK:
        _PROBES.clear()
