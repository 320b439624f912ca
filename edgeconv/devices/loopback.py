"""A throwaway OpenSSH server on 127.0.0.1 (Debian's openssh-server), for tests and the SSH benchmark.

Key authentication only, a fresh host key and client key per server, its own known_hosts file; listening on the
loopback address only, stopped when the context exits.  Nothing here is needed to use a real SSH device.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from edgeconv.core.errors import MissingDependencyError
from edgeconv.devices.config import Device, DeviceError, device_from_dict


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sshd_path() -> str | None:
    return shutil.which("sshd") or ("/usr/sbin/sshd" if os.path.exists("/usr/sbin/sshd") else None)


@contextlib.contextmanager
def loopback_sshd(folder: Path | None = None) -> Iterator[dict[str, Any]]:
    """Start sshd on 127.0.0.1:<free port>; yields port, user, key, wrong_key, known_hosts, dir."""
    exe = sshd_path()
    if exe is None or shutil.which("ssh-keygen") is None:
        raise MissingDependencyError("openssh-server is not installed", hint="apt-get install openssh-server "
                                     "(scripts/ci-system-deps.sh)")
    with contextlib.ExitStack() as stack:
        d = Path(folder) if folder else Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="ec-sshd-")))
        d.mkdir(parents=True, exist_ok=True)
        os.chmod(d, 0o700)
        for name in ("host_key", "client_key", "wrong_key"):
            if not (d / name).exists():
                subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / name)], check=True)
        shutil.copy(d / "client_key.pub", d / "authorized_keys")
        port = free_port()
        (d / "sshd_config").write_text(
            f"Port {port}\nListenAddress 127.0.0.1\nHostKey {d / 'host_key'}\nPidFile {d / 'sshd.pid'}\n"
            f"AuthorizedKeysFile {d / 'authorized_keys'}\nPasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\nPubkeyAuthentication yes\nUsePAM no\nStrictModes no\n"
            "PermitRootLogin prohibit-password\nSubsystem sftp internal-sftp\nLogLevel ERROR\nMaxStartups 50\n")
        host_pub = (d / "host_key.pub").read_text().split()
        (d / "known_hosts").write_text(f"[127.0.0.1]:{port} {host_pub[0]} {host_pub[1]}\n")
        if os.geteuid() == 0:
            os.makedirs("/run/sshd", exist_ok=True)  # privilege separation folder (the ssh service makes it at boot)
        proc = subprocess.Popen([exe, "-D", "-e", "-f", str(d / "sshd_config")], stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.monotonic() + 10
            while True:
                if proc.poll() is not None:
                    raise DeviceError(f"sshd exited: {(proc.stderr.read() if proc.stderr else '').strip()[:200]}")
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise DeviceError("sshd did not start listening within 10 s") from None
                    time.sleep(0.1)
            yield {"port": port, "dir": d, "user": getpass.getuser(), "key": d / "client_key",
                   "wrong_key": d / "wrong_key", "known_hosts": d / "known_hosts"}
        finally:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()


def loopback_device(info: dict[str, Any], workdir: str | Path, name: str = "loopback-ssh", **kw: Any) -> Device:
    """A device definition for :func:`loopback_sshd`'s server, running this interpreter's Python."""
    return device_from_dict({"name": name, "transport": "ssh", "host": "127.0.0.1", "port": info["port"],
                             "user": info["user"], "key": str(info["key"]), "known_hosts": str(info["known_hosts"]),
                             "python": sys.executable, "workdir": str(workdir), "connect_timeout": 5, **kw})
