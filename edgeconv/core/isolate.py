"""Run code that can crash or hang (native converters, runtimes) in a child process with a time limit.

A segfault in pnnx or a hung runtime then becomes that target's failure, not the whole run's.  The function must be
importable at module level (spawn start method: the child does not inherit torch's threads or locks).
"""

from __future__ import annotations

import multiprocessing as mp
import traceback
from collections.abc import Callable
from typing import Any

from edgeconv.core import errors as E


def _child(conn: Any, func: Callable[..., Any], args: tuple, kwargs: dict) -> None:
    try:
        conn.send(("ok", func(*args, **kwargs)))
    except BaseException as e:
        conn.send(("err", type(e).__name__, str(getattr(e, "message", e)), getattr(e, "hint", None),
                   getattr(e, "stage", None), getattr(e, "target", None), traceback.format_exc()))
    finally:
        conn.close()


def run_isolated(func: Callable[..., Any], *args: Any, timeout: float, what: str, target: str | None = None,
                 **kwargs: Any) -> Any:
    """Call ``func(*args, **kwargs)`` in a spawned process; errors keep their edgeconv kind, crashes become
    ConversionError naming ``what``."""
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(child, func, args, kwargs), daemon=True)
    proc.start()
    child.close()
    try:
        if not parent.poll(timeout):
            proc.kill()
            proc.join(5)
            if proc.exitcode is not None and proc.exitcode != 0 and proc.exitcode != -9:
                raise E.ConversionError(f"{what} crashed (exit code {proc.exitcode})", target=target)
            raise E.ConversionError(f"{what} did not finish within {timeout:.0f} s and was stopped", target=target,
                                    hint="raise the time limit or simplify the model")
        try:
            msg = parent.recv()
        except EOFError:
            proc.join(5)
            raise E.ConversionError(f"{what} crashed (exit code {proc.exitcode})", target=target) from None
    finally:
        parent.close()
        proc.join(10)
        if proc.is_alive():
            proc.kill()
    if msg[0] == "ok":
        return msg[1]
    _, name, message, hint, stage, tgt, tb = msg
    cls = getattr(E, name, None)
    if isinstance(cls, type) and issubclass(cls, E.EdgeconvError):
        err = cls(message, hint=hint, stage=stage, target=tgt or target)
    else:
        err = E.ConversionError(f"{what} failed: {name}: {message}", target=target)
    err.child_traceback = tb  # type: ignore[attr-defined]
    raise err
