"""Benchmark and verify on the device itself: device definitions, transports, the device worker, a Ray farm.

The host keeps the reference and computes drift and task metrics; a device only runs the small worker
(``edgeconv/devices/worker.py``: numpy + the backend runtime, no edgeconv, no torch) on an artifact copied there once
per content hash, so a report row from a Raspberry Pi, a phone, an emulated board or this machine has one shape.
Nothing heavy is imported here: transports import asyncssh/adbutils/ray only when used.
"""

from __future__ import annotations

from edgeconv.devices.config import (
    Device,
    DeviceError,
    DeviceUnreachable,
    device_from_dict,
    devices_serving,
    list_devices,
    load_device,
)
from edgeconv.devices.remote import (
    DeviceOptions,
    DeviceResult,
    probe_device,
    run_device_worker,
    run_on_device,
    verify_on_device,
)
from edgeconv.devices.resolve import device_for_profile
from edgeconv.devices.support import unsupported_reason

__all__ = ["Device", "DeviceError", "DeviceOptions", "DeviceResult", "DeviceUnreachable", "device_for_profile",
           "device_from_dict", "devices_serving", "list_devices", "load_device", "probe_device", "run_device_worker",
           "run_on_device", "unsupported_reason", "verify_on_device"]
