"""How the host reaches a device: one small interface (run argv with a timeout, put/get files, a few file-system
operations, the Python to run) and four implementations.

- ``local``: this machine, a subprocess (today's behaviour, through the same worker as any device).
- ``qemu``: an emulated arm64 board: ``qemu-aarch64-static -cpu MODEL -L ROOT ROOT/usr/bin/python3`` runs the
  board's own Python and the aarch64 wheels in it.  Files live on the host (the board root is a folder), so file
  operations are the local ones; no binfmt handler (root-only, kernel-global) is needed because qemu is named
  explicitly.
- ``ssh`` (``ssh.py``): asyncssh, key authentication only, known_hosts checked unless the device file says
  ``"none"``, one connection per transport, SFTP for files.
- ``adb`` (``adb.py``): adbutils (``shell``, ``sync.push``/``pull``); the command lines are built by
  :meth:`AdbTransport.command` so they can be tested without a phone (none is reachable here).

Every failure is a DeviceError with one line naming the device; a connection failure is DeviceUnreachable.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import shutil
import signal
import subprocess
import sys
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from edgeconv.devices.config import Device, DeviceError

T = TypeVar("T")


class DeviceTimeout(DeviceError):
    """A command on the device ran past its time limit (it was stopped)."""


@dataclass
class Completed:
    returncode: int
    stdout: str
    stderr: str

    def tail(self) -> str:
        """The last non-empty line of stderr (else stdout): what a one-line error quotes."""
        for text in (self.stderr, self.stdout):
            lines = [ln for ln in (text or "").strip().splitlines() if ln.strip()]
            if lines:
                return " ".join(lines[-1].split())[:300]
        return ""


class Transport(ABC):
    """One device connection. A context manager; paths on the device are POSIX strings."""

    kind: str = "?"

    def __init__(self, device: Device) -> None:
        self.device = device

    def __enter__(self) -> Transport:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:  # noqa: B027 - optional hook
        """Free the connection."""

    @abstractmethod
    def workdir(self) -> str:
        """Absolute working folder on the device (the device-side cache and job folders live under it)."""

    def python_argv(self) -> list[str]:
        """argv prefix that starts the device's Python."""
        return [self.device.python or "python3"]

    def worker_env(self) -> dict[str, str]:
        """Environment variables the worker gets (the device's own ``env`` plus what the transport needs)."""
        return {"PYTHONDONTWRITEBYTECODE": "1", "PYTHONUNBUFFERED": "1", **self.device.env}

    @abstractmethod
    def run(self, argv: list[str], *, timeout: float, env: dict[str, str] | None = None) -> Completed:
        """Run ``argv`` on the device; DeviceTimeout past ``timeout`` (the process is stopped)."""

    @abstractmethod
    def put(self, local: Path, remote: str) -> None: ...

    @abstractmethod
    def get(self, remote: str, local: Path) -> None: ...

    @abstractmethod
    def exists(self, remote: str) -> bool: ...

    @abstractmethod
    def makedirs(self, remote: str) -> None: ...

    @abstractmethod
    def listdir(self, remote: str) -> list[str]:
        """Names in a folder; empty when it does not exist."""

    @abstractmethod
    def rename(self, src: str, dst: str) -> bool:
        """Rename ``src`` to ``dst``; False (src left) when ``dst`` already exists — another upload won the race."""

    @abstractmethod
    def rmtree(self, remote: str) -> None:
        """Remove a folder and everything in it; missing is fine."""

    def put_tree(self, local: Path, remote: str, names: list[str]) -> None:
        """Copy ``names`` (relative paths under ``local``) into ``remote``."""
        for n in names:
            dst = posixpath.join(remote, n)
            self.makedirs(posixpath.dirname(dst))
            self.put(local / n, dst)


# --- this machine --------------------------------------------------------------------------------------------------


def run_local(argv: list[str], *, timeout: float, env: dict[str, str], cwd: str | None = None,
              what: str = "command") -> Completed:
    """A subprocess in its own session, killed with its children past ``timeout``."""
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                env=env, cwd=cwd, start_new_session=True, text=True, errors="replace")
    except OSError as e:
        raise DeviceError(f"{what}: cannot start {argv[0]}: {e.strerror}", hint="check python= in the device file") \
            from e
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired as e:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise DeviceTimeout(f"{what} did not finish within {timeout:.0f} s and was stopped") from e
    return Completed(proc.returncode, out, err)


class LocalTransport(Transport):
    kind = "local"

    def workdir(self) -> str:
        base = self.device.workdir or str(Path.home() / ".cache" / "edgeconv-device" / self.device.name)
        return str(Path(base).expanduser().absolute())

    def python_argv(self) -> list[str]:
        return [self.device.python or sys.executable]

    def run(self, argv: list[str], *, timeout: float, env: dict[str, str] | None = None) -> Completed:
        full = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # the worker must not see edgeconv's tree
        full.update(env or {})
        return run_local(argv, timeout=timeout, env=full, what=f"device {self.device.name}")

    def put(self, local: Path, remote: str) -> None:
        shutil.copyfile(local, remote)

    def get(self, remote: str, local: Path) -> None:
        try:
            shutil.copyfile(remote, local)
        except FileNotFoundError as e:
            raise DeviceError(f"device {self.device.name}: {remote} does not exist") from e

    def exists(self, remote: str) -> bool:
        return os.path.exists(remote)

    def makedirs(self, remote: str) -> None:
        os.makedirs(remote, exist_ok=True)

    def listdir(self, remote: str) -> list[str]:
        try:
            return os.listdir(remote)
        except FileNotFoundError:
            return []

    def rename(self, src: str, dst: str) -> bool:
        if os.path.exists(dst):
            return False
        try:
            os.rename(src, dst)
        except OSError:
            if os.path.exists(dst):
                return False
            raise
        return True

    def rmtree(self, remote: str) -> None:
        shutil.rmtree(remote, ignore_errors=True)


class QemuTransport(LocalTransport):
    """The emulated board: its root is a folder here, its Python runs under qemu-user (no binfmt needed)."""

    kind = "qemu"

    def __init__(self, device: Device) -> None:
        super().__init__(device)
        from edgeconv.devices.board import board_for, ensure_cpuinfo

        self.board = board_for(device.board or "arm64")
        ensure_cpuinfo(self.board.root)  # a board copied to a machine with another CPU count

    def workdir(self) -> str:
        return str(Path(self.device.workdir).expanduser()) if self.device.workdir else str(self.board.root / "var"
                                                                                               / "edgeconv")

    def python_argv(self) -> list[str]:
        return self.board.python_argv(self.device.cpu, self.device.python)

    def run(self, argv: list[str], *, timeout: float, env: dict[str, str] | None = None) -> Completed:
        full = {**self.board.env(), **(env or {})}
        return run_local(argv, timeout=timeout, env=full, what=f"device {self.device.name}")


def open_transport(device: Device) -> Transport:
    """The transport for ``device`` (ssh and adb are imported only when used)."""
    if device.transport == "ssh":
        from edgeconv.devices.ssh import SshTransport

        return SshTransport(device)
    if device.transport == "adb":
        from edgeconv.devices.adb import AdbTransport

        return AdbTransport(device)
    return {"local": LocalTransport, "qemu": QemuTransport}[device.transport](device)
