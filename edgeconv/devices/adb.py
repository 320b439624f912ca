"""The adb transport (Android, adbutils). No phone is reachable here: the command lines it builds are tested."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

from edgeconv.core.lazy import require
from edgeconv.devices.config import Device, DeviceUnreachable
from edgeconv.devices.transports import Completed, DeviceTimeout, Transport


class AdbTransport(Transport):
    """Android over adb (adbutils).  Not exercised here (no phone); :meth:`command` is tested instead."""

    kind = "adb"
    DEFAULT_WORKDIR = "/data/local/tmp/edgeconv"

    def __init__(self, device: Device) -> None:
        super().__init__(device)
        self._dev: Any = None

    def _device(self) -> Any:
        if self._dev is None:
            adbutils = require("adbutils", "devices")
            try:
                self._dev = adbutils.adb.device(serial=self.device.serial)
                self._dev.shell("true", timeout=self.device.connect_timeout)
            except (adbutils.AdbError, OSError) as e:
                raise DeviceUnreachable(f"device {self.device.name}: {self.device.address} is unreachable ({e})",
                                        hint="is it attached (adb devices) with USB debugging allowed?") from e
        return self._dev

    def workdir(self) -> str:
        return self.device.workdir or self.DEFAULT_WORKDIR

    @staticmethod
    def command(argv: list[str], env: dict[str, str] | None = None, cwd: str | None = None) -> str:
        """The ``adb shell`` command line: toybox ``env`` for variables, every word quoted, exit status kept."""
        parts = (["env", *[f"{k}={v}" for k, v in env.items()]] if env else []) + list(argv)
        cmd = shlex.join(parts)
        return f"cd {shlex.quote(cwd)} && {cmd}" if cwd else cmd

    def run(self, argv: list[str], *, timeout: float, env: dict[str, str] | None = None) -> Completed:
        adbutils = require("adbutils", "devices")
        try:
            r = self._device().shell2(self.command(argv, env), timeout=timeout)
        except adbutils.AdbTimeout as e:
            raise DeviceTimeout(f"device {self.device.name}: command did not finish within {timeout:.0f} s") from e
        except (adbutils.AdbError, OSError) as e:
            raise DeviceUnreachable(f"device {self.device.name}: adb failed ({e})") from e
        return Completed(int(r.returncode), str(r.output), "")

    def _sh(self, *argv: str) -> Completed:
        return self.run(list(argv), timeout=self.device.connect_timeout + 60)

    def put(self, local: Path, remote: str) -> None:
        self._device().sync.push(str(local), remote)

    def get(self, remote: str, local: Path) -> None:
        self._device().sync.pull(remote, str(local))

    def exists(self, remote: str) -> bool:
        return self._sh("test", "-e", remote).returncode == 0

    def makedirs(self, remote: str) -> None:
        self._sh("mkdir", "-p", remote)

    def listdir(self, remote: str) -> list[str]:
        r = self._sh("ls", "-1", remote)
        return r.stdout.split() if r.returncode == 0 else []

    def rename(self, src: str, dst: str) -> bool:
        if self.exists(dst):
            return False
        return self._sh("mv", src, dst).returncode == 0

    def rmtree(self, remote: str) -> None:
        self._sh("rm", "-rf", remote)
