"""Host side of the worker protocol (``edgeconv/envs/worker.py``): one-shot jobs and inference sessions.

A job folder holds the worker, the handler script and ``job.json``; it is all the other side needs, so the same
folder can be pushed to a device.  Results come back as ``result.json`` plus whatever files the handler wrote.
Failures keep their kind: a handler's ``kind = "conversion"`` exception becomes a ConversionError with its message,
a crash or a hang becomes one line naming the signal or the time limit.
"""

from __future__ import annotations

import json
import select
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from edgeconv.core import errors as E
from edgeconv.core.console import log
from edgeconv.envs.transport import Completed, Transport, _kill_group

WORKER = Path(__file__).with_name("worker.py")
_KINDS: dict[str | None, type[E.EdgeconvError]] = {
    "conversion": E.ConversionError, "config": E.ConfigError, "verification": E.VerificationError,
    "missing-dependency": E.MissingDependencyError,
}


def _raise_remote(err: dict[str, Any], what: str, target: str | None, log_tail: str = "") -> None:
    cls = _KINDS.get(err.get("kind"))
    if cls is not None:
        e = cls(err["message"], hint=err.get("hint"), target=target)
    else:
        e = E.ConversionError(f"{what} failed: {err.get('type')}: {err.get('message')}", target=target,
                              hint="re-run with --verbose for the toolkit's traceback")
    e.child_traceback = (err.get("traceback") or "") + log_tail  # type: ignore[attr-defined]
    raise e


def prepare_job(work: Path, handler: Path, call: str, args: dict[str, Any]) -> Path:
    """Lay out a self-contained job folder: worker, handler and job.json."""
    work.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(WORKER, work / "worker.py")
    shutil.copyfile(handler, work / handler.name)
    (work / "job.json").write_text(json.dumps({"handler": handler.name, "call": call, "args": args}, indent=1))
    return work


def run_job(transport: Transport, handler: Path, call: str, args: dict[str, Any], *, work: Path, timeout: float,
            what: str, target: str | None = None) -> dict[str, Any]:
    """Run ``handler.<call>(args, job_dir)`` through ``transport``; returns the handler's result (a dict).

    ``work`` is the job folder: inputs the handler reads may be placed there beforehand, outputs it writes are
    there afterwards (pulled back from a remote side).  ``worker.log`` in it holds everything the toolkit printed.
    """
    prepare_job(work, handler, call, args)
    remote = transport.push(work)
    # run inside the job folder (toolkits drop debug files into their working folder); paths relative to it
    done: Completed = transport.run([transport.python, "worker.py", "run", "."], timeout=timeout, cwd=remote)
    transport.pull(remote, work)
    log_path = work / "worker.log"
    tail = log_path.read_text(errors="replace")[-4000:] if log_path.is_file() else ""
    result_path = work / "result.json"
    if done.timed_out:
        raise E.ConversionError(f"{what} did not finish within {timeout:.0f} s and was stopped", target=target,
                                hint="raise the time limit (option timeout_s) or simplify the model")
    if not result_path.is_file():
        why = f"killed by {done.signal}" if done.signal else f"exit code {done.returncode}"
        last = (done.stderr.strip().splitlines() or tail.strip().splitlines() or [""])[-1]
        err = E.ConversionError(f"{what} crashed ({why}) {last[:200]}".strip(), target=target)
        err.child_traceback = done.stderr + tail  # type: ignore[attr-defined]
        raise err
    rec = json.loads(result_path.read_text())
    if not rec.get("ok"):
        _raise_remote(rec["error"], what, target, "\n--- toolkit log (tail) ---\n" + tail)
    return rec["result"]


class WorkerSession:
    """A long-lived worker (``serve`` mode) holding one loaded model; ``infer`` costs one file round trip."""

    def __init__(self, transport: Transport, handler: Path, call: str, args: dict[str, Any], *, what: str,
                 open_timeout: float, infer_timeout: float, target: str | None = None,
                 work: Path | None = None) -> None:
        self.what, self.target, self.infer_timeout = what, target, infer_timeout
        self._own_work = work is None
        self.work = work or Path(tempfile.mkdtemp(prefix="edgeconv-worker-"))
        prepare_job(self.work, handler, call, args)
        self.transport = transport
        self.remote = transport.push(self.work)
        self.log = self.work / "worker.log"
        self.proc = transport.spawn([transport.python, "worker.py", "serve"], log="worker.log", cwd=self.remote)
        self._n = 0
        self.last_ms: float | None = None
        try:
            self._read(open_timeout)  # the hello line
            rec = self._request({"op": "open", "handler": handler.name, "call": call, "args": args, "dir": "."},
                                open_timeout)
            self.info = rec.get("info")
            self.open_ms = rec.get("ms")
        except BaseException:
            self.close()
            raise

    def _read(self, timeout: float) -> dict[str, Any]:
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        line = self.proc.stdout.readline() if ready else None
        if not ready:
            _kill_group(self.proc)
            raise E.VerificationError(f"{self.what} did not answer within {timeout:.0f} s and was stopped",
                                      target=self.target)
        if not line:
            self.proc.wait(5)
            self.transport.pull(self.remote, self.work)
            stderr = self.log.read_text(errors="replace")[-4000:] if self.log.is_file() else ""
            why = (f"killed by {Completed(self.proc.returncode, '', '').signal}"
                   if (self.proc.returncode or 0) < 0 else f"exit code {self.proc.returncode}")
            last = (stderr.strip().splitlines() or [""])[-1][:200]
            err = E.VerificationError(f"{self.what} crashed ({why}) {last}".strip(), target=self.target)
            err.child_traceback = stderr  # type: ignore[attr-defined]
            raise err
        return json.loads(line)

    def _request(self, req: dict[str, Any], timeout: float) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(req) + "\n")
        self.proc.stdin.flush()
        rec = self._read(timeout)
        if not rec.get("ok"):
            _raise_remote(rec["error"], self.what, self.target)
        return rec

    def infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from edgeconv.envs.worker import load_arrays, save_arrays

        self._n += 1
        src, dst = self.work / f"in{self._n % 2}.npz", self.work / f"out{self._n % 2}.npz"
        save_arrays(src, {k: np.ascontiguousarray(v) for k, v in feeds.items()})
        self.transport.push(self.work)
        rec = self._request({"op": "infer", "inputs": src.name, "outputs": dst.name}, self.infer_timeout)
        self.transport.pull(self.remote, self.work)
        self.last_ms = rec.get("ms")
        return load_arrays(dst)

    def close(self) -> None:
        proc = getattr(self, "proc", None)
        if proc is not None and proc.poll() is None:
            try:
                assert proc.stdin is not None
                proc.stdin.write(json.dumps({"op": "close"}) + "\n")
                proc.stdin.flush()
                proc.wait(10)
            except (OSError, ValueError, TimeoutError, Exception):  # noqa: BLE001 - closing must not raise
                _kill_group(proc)
        for stream in (getattr(proc, "stdin", None), getattr(proc, "stdout", None)):
            if stream is not None:
                try:
                    stream.close()
                except OSError:
                    log.debug("closing a worker pipe failed", exc_info=True)
        if self._own_work:
            shutil.rmtree(self.work, ignore_errors=True)
