"""How the host reaches a device: one small interface (run argv with a timeout, put/get files, a few file-system
operations, the Python to run) and four implementations.

- ``local``: this machine, a subprocess (today's behaviour, through the same worker as any device).
- ``qemu``: an emulated arm64 board: ``qemu-aarch64-static -cpu MODEL -L ROOT ROOT/usr/bin/python3`` runs the
  board's own Python and the aarch64 wheels in it.  Files live on the host (the board root is a folder), so file
  operations are the local ones; no binfmt handler (root-only, kernel-global) is needed because qemu is named
  explicitly.
- ``ssh``: asyncssh (key authentication only, known_hosts checked unless the device file says ``"none"``), one
  connection per transport, SFTP for files.
- ``adb``: adbutils (``shell``, ``sync.push``/``pull``); the command lines are built by :meth:`AdbTransport.command`
  so they can be tested without a phone (none is reachable here).

Every failure is a DeviceError with one line naming the device; a connection failure is DeviceUnreachable.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import posixpath
import shlex
import shutil
import signal
import subprocess
import sys
import threading
from abc import ABC, abstractmethod
from collections.abc import Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from edgeconv.core.lazy import require
from edgeconv.devices.config import Device, DeviceError, DeviceUnreachable

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


# --- ssh -----------------------------------------------------------------------------------------------------------


class SshTransport(Transport):
    """asyncssh on a private event loop thread, so the rest of edgeconv stays synchronous."""

    kind = "ssh"

    def __init__(self, device: Device) -> None:
        super().__init__(device)
        self.asyncssh = require("asyncssh", "devices")
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=f"ssh-{device.name}", daemon=True)
        self._thread.start()
        self._conn: Any = None
        self._sftp: Any = None
        self._home: str | None = None

    def _call(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        fut = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return fut.result(timeout)
        except TimeoutError as e:
            fut.cancel()
            raise DeviceTimeout(f"device {self.device.name}: no answer within {timeout:.0f} s") from e

    async def _connect(self) -> Any:
        if self._conn is not None:
            return self._conn
        d, ssh = self.device, self.asyncssh
        kh: Any = ()  # asyncssh: () = the default ~/.ssh/known_hosts
        if d.known_hosts:
            kh = None if d.known_hosts.lower() == "none" else str(Path(d.known_hosts).expanduser())
        kw: dict[str, Any] = {"port": d.port, "known_hosts": kh, "preferred_auth": "publickey"}
        if d.user:
            kw["username"] = d.user
        if d.key:
            key = Path(d.key).expanduser()
            if not key.is_file():
                raise DeviceError(f"device {d.name}: ssh key {key} does not exist", hint="fix key= in the device file")
            kw.update(client_keys=[str(key)], agent_path=None)
        where = f"ssh {d.address}"
        try:
            self._conn = await asyncio.wait_for(ssh.connect(d.host, **kw), timeout=d.connect_timeout)
        except ssh.PermissionDenied as e:
            raise DeviceError(f"device {d.name}: {where} refused the key (permission denied)",
                              hint="check key= and user= in the device file and the device's authorized_keys") from e
        except ssh.HostKeyNotVerifiable as e:
            raise DeviceError(f"device {d.name}: {where}: host key not trusted ({e.reason})",
                              hint="add the host to known_hosts (ssh-keyscan) or set known_hosts= in the device file") \
                from e
        except (OSError, TimeoutError, ssh.Error) as e:
            why = getattr(e, "strerror", None) or getattr(e, "reason", None) or type(e).__name__
            raise DeviceUnreachable(f"device {d.name}: {where} is unreachable ({why})",
                                    hint="is the device on, and host=/port= right?") from e
        return self._conn

    async def _sftp_client(self) -> Any:
        if self._sftp is None:
            conn = await self._connect()
            self._sftp = await conn.start_sftp_client()
            self._home = await self._sftp.realpath(".")
        return self._sftp

    def _fs(self, op: str, *args: Any, **kw: Any) -> Any:
        async def go() -> Any:
            sftp = await self._sftp_client()
            return await getattr(sftp, op)(*args, **kw)

        try:
            return self._call(go(), self.device.connect_timeout + 120)
        except self.asyncssh.SFTPError as e:
            raise DeviceError(f"device {self.device.name}: sftp {op} {args[-1]}: {e.reason}") from e

    def workdir(self) -> str:
        self._call(self._sftp_client(), self.device.connect_timeout + 30)
        wd = self.device.workdir or ".cache/edgeconv-device"
        return wd if wd.startswith("/") else posixpath.join(self._home or ".", wd)

    def run(self, argv: list[str], *, timeout: float, env: dict[str, str] | None = None) -> Completed:
        cmd = shlex.join(["env", *[f"{k}={v}" for k, v in (env or {}).items()], *argv]) if env else shlex.join(argv)

        async def go() -> Completed:
            conn = await self._connect()
            try:
                r = await conn.run(cmd, check=False, timeout=timeout)
            except self.asyncssh.TimeoutError as e:
                raise DeviceTimeout(f"device {self.device.name}: command did not finish within {timeout:.0f} s "
                                    "and was stopped") from e
            except (OSError, self.asyncssh.Error) as e:  # the connection dropped mid-command
                self._conn = self._sftp = None
                raise DeviceUnreachable(f"device {self.device.name}: connection lost ({type(e).__name__})") from e
            rc = r.returncode if r.returncode is not None else -1  # asyncssh: -N when ended by signal N
            return Completed(rc, str(r.stdout or ""), str(r.stderr or ""))

        return self._call(go(), timeout + self.device.connect_timeout + 30)

    def put(self, local: Path, remote: str) -> None:
        self._fs("put", str(local), remote)

    def get(self, remote: str, local: Path) -> None:
        self._fs("get", remote, str(local))

    def exists(self, remote: str) -> bool:
        return bool(self._fs("exists", remote))

    def makedirs(self, remote: str) -> None:
        self._fs("makedirs", remote, exist_ok=True)

    def listdir(self, remote: str) -> list[str]:
        if not self.exists(remote):
            return []
        return [n for n in self._fs("listdir", remote) if n not in (".", "..")]

    def rename(self, src: str, dst: str) -> bool:
        if self.exists(dst):
            return False
        try:
            self._fs("rename", src, dst)
        except DeviceError:
            if self.exists(dst):
                return False
            raise
        return True

    def rmtree(self, remote: str) -> None:
        if self.exists(remote):
            self._fs("rmtree", remote, ignore_errors=True)

    def close(self) -> None:
        async def go() -> None:
            if self._sftp is not None:
                self._sftp.exit()
            if self._conn is not None:
                self._conn.close()
                await self._conn.wait_closed()

        with contextlib.suppress(DeviceError, OSError, RuntimeError):
            self._call(go(), 10)
        self._conn = self._sftp = None
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        if not self._loop.is_running():
            self._loop.close()


# --- adb -----------------------------------------------------------------------------------------------------------


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


TRANSPORT_CLASSES: dict[str, type[Transport]] = {"local": LocalTransport, "qemu": QemuTransport,
                                                 "ssh": SshTransport, "adb": AdbTransport}


def open_transport(device: Device) -> Transport:
    return TRANSPORT_CLASSES[device.transport](device)
