"""``edgeconv devices check``: reach each device and compare what it has with what its definition promises."""

from __future__ import annotations

from typing import Any

from edgeconv.devices.config import Device, DeviceError, list_devices, load_device

ARCH_ALIASES = {"arm64": "aarch64", "amd64": "x86_64"}


def check_device(device: Device, timeout: float = 120.0) -> dict[str, Any]:
    """One device's record: reachable, the probe (Python, arch, CPU features, runtimes) and the problems found."""
    from edgeconv.devices.remote import probe_device

    rec: dict[str, Any] = {"device": device.name, "transport": device.transport, "address": device.address,
                           "emulated": device.emulated, "serves": list(device.serves)}
    modules = list(dict.fromkeys(["numpy", *device.runtimes]))
    try:
        probe = probe_device(device, modules, timeout=timeout)
    except DeviceError as e:
        return {**rec, "reachable": False, "ok": False, "error": e.one_line(), "hint": e.hint}
    problems = [f"runtime {m} does not import: {info['error']}" for m, info in probe["runtimes"].items()
                if not info["ok"]]
    want = ARCH_ALIASES.get(device.arch or "", device.arch)
    if want and probe["arch"] != want:
        problems.append(f"architecture is {probe['arch']}, the definition says {device.arch}")
    return {**rec, "reachable": True, "ok": not problems, "probe": probe, "problems": problems}


def check_devices(names: list[str] | None = None, timeout: float = 120.0) -> list[dict[str, Any]]:
    devs = [load_device(n) for n in names] if names else list(list_devices().values())
    return [check_device(d, timeout) for d in devs]
