"""Where a worker runs: the small interface a backend environment shares with remote devices.

A transport can start an argv on the other side (one-shot with a time limit, or as a long-lived session with
pipes) and make a local folder available there.  ``LocalTransport`` is the backend-environment case: the other
side is this machine, its Python is the environment's interpreter, and folders are shared as they are.  An SSH or
qemu transport implements the same four methods (copying folders instead of sharing them).
"""

from __future__ import annotations

import os
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol


@dataclass
class Completed:
    """How a one-shot command ended; ``signal`` names a crash (e.g. SIGSEGV), ``timed_out`` a hang."""

    returncode: int | None
    stdout: str
    stderr: str
    timed_out: bool = False

    @property
    def signal(self) -> str | None:
        if self.returncode is not None and self.returncode < 0:
            try:
                return signal.Signals(-self.returncode).name
            except ValueError:
                return f"signal {-self.returncode}"
        return None


class Transport(Protocol):
    """Run the worker somewhere. ``python`` is the interpreter there; paths are paths there."""

    name: str
    python: str

    def run(self, argv: list[str], *, timeout: float, cwd: str | None = None) -> Completed: ...

    def spawn(self, argv: list[str], *, log: str, cwd: str | None = None) -> subprocess.Popen[str]:
        """Start a session with stdin/stdout pipes; its stderr goes to the file ``log`` (relative to ``cwd``) there:
        a pipe nobody reads would fill and block a chatty toolkit."""
        ...

    def push(self, local: Path) -> str:
        """Make ``local`` (a folder) available on the other side; returns its path there."""
        ...

    def pull(self, remote: str, local: Path) -> None:
        """Bring the folder ``remote`` back into ``local`` (no-op where they are the same folder)."""
        ...


@dataclass
class LocalTransport:
    """This machine, with another interpreter (a backend environment's venv Python)."""

    python: str
    env: dict[str, str] = field(default_factory=dict)  # added to os.environ for the child
    name: str = "local"

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
        env.update(PYTHONUNBUFFERED="1", PYTHONNOUSERSITE="1", **self.env)
        return env

    def run(self, argv: list[str], *, timeout: float, cwd: str | None = None) -> Completed:
        """Run to completion; on timeout the whole process group is killed (toolkits spawn helpers)."""
        proc = subprocess.Popen(argv, cwd=cwd, env=self._env(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, start_new_session=True)
        try:
            out, err = proc.communicate(timeout=timeout)
            return Completed(proc.returncode, out, err)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            out, err = proc.communicate()
            return Completed(proc.returncode, out or "", err or "", timed_out=True)

    def spawn(self, argv: list[str], *, log: str, cwd: str | None = None) -> subprocess.Popen[str]:
        with open(os.path.join(cwd or ".", log), "ab") as err:
            return subprocess.Popen(argv, cwd=cwd, env=self._env(), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                    stderr=err, text=True, bufsize=1, start_new_session=True)

    def push(self, local: Path) -> str:
        return str(local)

    def pull(self, remote: str, local: Path) -> None:
        return None


def _kill_group(proc: subprocess.Popen[str]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        proc.kill()
