"""Run code that can crash or hang (native converters, runtimes) in a child process with a time limit.

A segfault in pnnx or a hung runtime then becomes that target's failure, not the whole run's.

Two start methods:
- ``fork`` (default where available): the child inherits the parent's memory — the torch module, the reference,
  the calibration set — so nothing has to be pickled and nothing is re-imported (conversions start at once).
  torch's OpenMP pool does not survive a fork (the child would hang in its first parallel region), so the child
  runs torch on one thread; native runtimes (ONNX Runtime, OpenVINO, ncnn) start their own pools as usual.
- ``spawn``: a fresh interpreter; ``func`` and its arguments must pickle.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import signal
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeconv.core import errors as E


def in_forked_child() -> bool:
    """Whether this process is a multiprocessing child made by fork (an isolated convert + verify, a plan worker).

    Native thread pools do not survive a fork. ncnn's OpenMP regions bind to torch's ``libgomp`` and a forked child
    inherits its pool bookkeeping without the threads (measured: hangs in ``gomp_team_barrier_wait_end``); an ONNX
    Runtime session made in a forked child of a process that had run ORT sessions hung in its destructor (a futex
    in ``InferenceSession`` teardown, joining its intra-op pool: a CI run stopped for 20 minutes) and once aborted
    with "Resource deadlock avoided". One thread never starts a pool, so children run these runtimes on one.
    """
    return mp.parent_process() is not None and mp.get_start_method(allow_none=True) not in ("spawn", "forkserver")


def child_threads(threads: int | None) -> int | None:
    """The thread count a native runtime session should ask for here: 1 in a forked child (see
    ``in_forked_child``; verification numerics do not depend on it), else ``threads`` as given."""
    return 1 if in_forked_child() else threads


def _child(conn: Any, func: Callable[..., Any], args: tuple, kwargs: dict, forked: bool,
           setup: Callable[[], None] | None = None, output: tuple[str, str] | None = None) -> None:
    if setup is not None:
        setup()
    if output is not None:
        from edgeconv.core.console import divert_native_output

        divert_native_output(Path(output[0]), output[1])
    if forked and "torch" in sys.modules:
        with contextlib.suppress(Exception):  # best effort; a torch without the call still runs
            sys.modules["torch"].set_num_threads(1)
    try:
        result = func(*args, **kwargs)
        conn.send(("ok", result))
    except BaseException as e:  # noqa: BLE001 - every failure goes back to the parent with its kind
        extra = {k: getattr(e, k) for k in ("task", "drift") if getattr(e, k, None) is not None}
        conn.send(("err", type(e).__name__, str(getattr(e, "message", e)), getattr(e, "hint", None),
                   getattr(e, "stage", None), getattr(e, "target", None), traceback.format_exc(), extra))
    finally:
        conn.close()


def _signal_name(code: int | None) -> str:
    if code is None or code >= 0:
        return f"exit code {code}"
    try:
        return f"signal {signal.Signals(-code).name}"
    except ValueError:
        return f"signal {-code}"


def _start(func: Callable[..., Any], args: tuple, kwargs: dict, start: str | None,
           child_setup: Callable[[], None] | None = None, daemon: bool = True,
           output: tuple[str, str] | None = None) -> tuple[Any, Any]:
    method = start or ("fork" if "fork" in mp.get_all_start_methods() else "spawn")
    ctx = mp.get_context(method)
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(child, func, args, kwargs, method == "fork", child_setup, output),
                       daemon=daemon)
    proc.start()
    child.close()
    return proc, parent


def _finish(proc: Any, parent: Any, *, timeout: float, what: str, target: str | None,
            error: type[E.EdgeconvError], stage: str | None, limit: float | None = None) -> Any:
    """Wait for one child (at most ``timeout`` seconds) and return its result or raise its error with its kind."""
    try:
        if not parent.poll(timeout):
            proc.kill()
            proc.join(5)
            if proc.exitcode is not None and proc.exitcode not in (0, -signal.SIGKILL):
                raise error(f"{what} crashed ({_signal_name(proc.exitcode)})", target=target, stage=stage)
            raise error(f"{what} did not finish within {limit or timeout:.0f} s and was stopped", target=target,
                        stage=stage, hint="raise the time limit (--option timeout_s=...) or simplify the model")
        try:
            msg = parent.recv()
        except (EOFError, OSError):
            proc.join(5)
            raise error(f"{what} crashed ({_signal_name(proc.exitcode)})", target=target, stage=stage,
                        hint="a native library failed; --verbose shows the log, another route may work") from None
    finally:
        parent.close()
        proc.join(10)
        if proc.is_alive():
            proc.kill()
            proc.join(5)
    if msg[0] == "ok":
        return msg[1]
    _, name, message, hint, stg, tgt, tb, extra = msg
    if name == "KeyboardInterrupt":
        raise KeyboardInterrupt
    cls = getattr(E, name, None)
    if isinstance(cls, type) and issubclass(cls, E.EdgeconvError):
        err = cls(message, hint=hint, stage=stg or stage, target=tgt or target)
    else:
        err = error(f"{what} failed: {name}: {message}", target=target, stage=stage)
    err.child_traceback = tb  # type: ignore[attr-defined]
    for k, v in extra.items():
        setattr(err, k, v)
    raise err


def run_isolated(func: Callable[..., Any], *args: Any, timeout: float, what: str, target: str | None = None,
                 start: str | None = None, error: type[E.EdgeconvError] = E.ConversionError,
                 stage: str | None = None, **kwargs: Any) -> Any:
    """Call ``func(*args, **kwargs)`` in a child process; errors keep their edgeconv kind, a crash or a hang
    becomes ``error`` (ConversionError by default) naming ``what`` and the signal."""
    proc, parent = _start(func, args, kwargs, start)
    return _finish(proc, parent, timeout=timeout, what=what, target=target, error=error, stage=stage)


@dataclass
class Call:
    """One unit of work for :func:`iter_many`."""

    func: Callable[..., Any]
    args: tuple = ()
    kwargs: dict = field(default_factory=dict)
    what: str = "task"
    target: str | None = None
    timeout: float = 3600.0


def iter_many(calls: list[Call], jobs: int, *, error: type[E.EdgeconvError] = E.ConversionError,
              stage: str | None = None, child_setup: Callable[[], None] | None = None,
              output_dir: Path | None = None) -> Iterator[tuple[int, Any]]:
    """Run ``calls`` in up to ``jobs`` forked children at once, yielding ``(index, result or error)`` as each one
    ends (so a caller can show progress).

    Children are started from the calling thread only (no thread pool: forking a multi-threaded parent can
    deadlock the child on a lock another thread held), each with its own time limit; one child's crash or hang is
    that call's error and the others go on. The children are not daemonic (their own work may isolate itself in
    grandchildren); every one still running is killed when the iteration ends or is abandoned. ``child_setup`` runs
    first in each child (e.g. plain progress output, so several children do not draw spinners over each other).
    ``output_dir``: each child's third-party output goes to ``output_dir/<index>.log`` (``divert_native_output``);
    a failed call's error carries that path as ``output_log``, a successful call's file is removed.
    """
    from multiprocessing.connection import wait

    pending = list(range(len(calls)))
    running: dict[Any, tuple[int, Any, float]] = {}  # pipe -> (index, process, deadline)
    try:
        while pending or running:
            while pending and len(running) < max(1, jobs):
                i = pending.pop(0)
                c = calls[i]
                output = (str(output_dir / f"{i:02d}.log"), c.what) if output_dir is not None else None
                proc, parent = _start(c.func, c.args, c.kwargs, "fork", child_setup, daemon=False, output=output)
                running[parent] = (i, proc, time.monotonic() + c.timeout)
            soonest = min(d for _, _, d in running.values())
            ready = wait(list(running), timeout=max(0.0, soonest - time.monotonic()))
            expired = [p for p, (_, _, d) in running.items() if d <= time.monotonic()]
            for p in dict.fromkeys([*ready, *expired]):
                i, proc, deadline = running.pop(p)
                c = calls[i]
                try:
                    res = _finish(proc, p, timeout=max(0.0, deadline - time.monotonic()), what=c.what,
                                  target=c.target, error=error, stage=stage, limit=c.timeout)
                except E.EdgeconvError as e:
                    res = e
                if output_dir is not None:
                    log_path = output_dir / f"{i:02d}.log"
                    if isinstance(res, E.EdgeconvError):
                        res.output_log = log_path  # type: ignore[attr-defined]
                    else:
                        log_path.unlink(missing_ok=True)
                yield i, res
    finally:
        for _, proc, _ in running.values():
            proc.kill()
            proc.join(5)
