"""The SSH transport: asyncssh on a private event-loop thread (key authentication only, known_hosts checked unless
the device file says ``"none"``), one connection per transport, SFTP for files."""

from __future__ import annotations

import asyncio
import contextlib
import posixpath
import shlex
import threading
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

from edgeconv.core.lazy import require
from edgeconv.devices.config import Device, DeviceError, DeviceUnreachable
from edgeconv.devices.transports import Completed, DeviceTimeout, Transport

T = TypeVar("T")


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
