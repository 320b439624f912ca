"""Executing a Core ML artifact on a Mac reached by SSH: the worker protocol over the system ``ssh``/``scp``.

The Mac needs only Python 3 with coremltools, numpy and Pillow; edgeconv is not installed there.  The host copies
the artifact once per content hash (``<workdir>/<sha256>/``), then runs ``worker.py serve`` with the coreml
handler, exactly as a backend environment runs it locally, so outputs come back for drift and task metrics on the
host.  ``SshTransport`` implements the same four methods as ``edgeconv.envs.transport.LocalTransport``; it is the
stand-in until the devices' SSH transport takes its place (same interface).  Commands are built, not guessed:
every remote argument is ``shlex``-quoted, and BatchMode forbids password prompts that would hang a run.
"""

from __future__ import annotations

import shlex
import subprocess
from dataclasses import dataclass
from pathlib import Path

from edgeconv.envs.transport import Completed, _kill_group


@dataclass
class SshTransport:
    """``host`` as ``ssh`` takes it (``user@mac.local`` or a Host alias); ``workdir`` is a folder on the Mac."""

    host: str
    python: str = "python3"
    workdir: str = "~/.cache/edgeconv-worker"
    port: int | None = None
    identity: str | None = None
    ssh: str = "ssh"
    scp: str = "scp"
    options: tuple[str, ...] = ("-o", "BatchMode=yes", "-o", "ConnectTimeout=15")
    name: str = "ssh"

    def _ssh_base(self) -> list[str]:
        argv = [self.ssh, *self.options]
        if self.port:
            argv += ["-p", str(self.port)]
        if self.identity:
            argv += ["-i", self.identity]
        return [*argv, self.host]

    def _scp_base(self) -> list[str]:
        argv = [self.scp, "-q", "-r", *self.options]
        if self.port:
            argv += ["-P", str(self.port)]
        if self.identity:
            argv += ["-i", self.identity]
        return argv

    def remote_command(self, argv: list[str], cwd: str | None = None) -> list[str]:
        """The local argv that runs ``argv`` on the Mac (one quoted shell command line, as ssh sends it)."""
        line = " ".join(_quote(a) for a in argv)
        if cwd:
            line = f"cd {_quote(cwd)} && {line}"
        return [*self._ssh_base(), line]

    def remote_path(self, local: Path) -> str:
        return f"{self.workdir}/{local.name}"

    def push_commands(self, local: Path) -> list[list[str]]:
        return [[*self._ssh_base(), f"mkdir -p {_quote(self.workdir)}"],
                [*self._scp_base(), str(local), f"{self.host}:{_quote_scp(self.workdir)}/"]]

    def pull_commands(self, remote: str, local: Path) -> list[list[str]]:
        return [[*self._scp_base(), f"{self.host}:{_quote_scp(remote)}/.", str(local)]]

    def run(self, argv: list[str], *, timeout: float, cwd: str | None = None) -> Completed:
        proc = subprocess.Popen(self.remote_command(argv, cwd), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, start_new_session=True)
        try:
            out, err = proc.communicate(timeout=timeout)
            return Completed(proc.returncode, out, err)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            out, err = proc.communicate()
            return Completed(proc.returncode, out or "", err or "", timed_out=True)

    def spawn(self, argv: list[str], *, log: str, cwd: str | None = None) -> subprocess.Popen[str]:
        line = self.remote_command([*argv], cwd)
        line[-1] = f"{line[-1]} 2>>{_quote(log)}"
        return subprocess.Popen(line, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                text=True, bufsize=1, start_new_session=True)

    def push(self, local: Path) -> str:
        for argv in self.push_commands(local):
            subprocess.run(argv, check=True, timeout=600, capture_output=True)
        return self.remote_path(local)

    def pull(self, remote: str, local: Path) -> None:
        for argv in self.pull_commands(remote, local):
            subprocess.run(argv, check=True, timeout=600, capture_output=True)


def _quote(arg: str) -> str:
    """Quote for the remote shell, but let a leading ``~/`` expand to the remote home."""
    if arg.startswith("~/"):
        return "~/" + shlex.quote(arg[2:])
    return shlex.quote(arg)


def _quote_scp(path: str) -> str:
    return path if path.startswith("~/") and "'" not in path and " " not in path else shlex.quote(path)
