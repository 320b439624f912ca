"""Which device verifies a profile's artifacts: the user's choice, else a device whose ``serves`` names the profile.

An emulated board that is not built yet is passed over with a notice (building it is a one-time, explicit step);
a device the user named explicitly is never passed over: if it cannot run, that is the user's error to see.
"""

from __future__ import annotations

from edgeconv.core.console import log
from edgeconv.devices.config import Device, devices_serving, load_device


def device_for_profile(profile: str, explicit: str | Device | None = None) -> Device | None:
    """``explicit`` (``--device NAME|PATH``) when given, else the first usable device serving ``profile``."""
    if explicit is not None:
        return load_device(explicit)
    for dev in devices_serving(profile):
        if dev.transport == "qemu":
            from edgeconv.devices.board import Board, boards_root

            if not Board(dev.board or "arm64", boards_root() / (dev.board or "arm64")).built:
                log.info("profile %s: device %s skipped (the emulated board is not built: "
                         "`edgeconv devices create-emulated %s`)", profile, dev.name, dev.board or "arm64")
                continue
        return dev
    return None
