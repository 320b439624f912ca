"""The self-contained worker that runs inside a backend environment (or, later, on a device).

It needs only the standard library and numpy (it never imports edgeconv), so it runs with any interpreter: a
backend environment's venv, a board's system Python.  The host ships this file and a *handler* script (the
toolkit-specific code, equally self-contained) and talks to it in one of two ways:

``python worker.py run JOB_DIR`` (the host runs it as ``run .`` inside the job folder)
    One job: ``JOB_DIR/job.json`` = ``{"handler": "handler.py", "call": "convert", "args": {...}}``; the worker
    calls ``handler.convert(args, job_dir)`` and writes ``JOB_DIR/result.json`` = ``{"ok": true, "result": ...,
    "seconds": ...}`` or ``{"ok": false, "error": {"type", "message", "kind", "hint", "traceback"}}``.  Everything
    the toolkit prints, from Python or native code (file descriptors 1 and 2), goes to ``JOB_DIR/worker.log``.

``python worker.py serve``
    A session: JSON lines on stdin, one JSON line answered on stdout per request.  ``{"op": "open", "handler",
    "call", "args", "dir"}`` calls ``handler.<call>(args, dir)``, which returns an object with ``infer(feeds) ->
    outputs`` (dicts of numpy arrays) and optionally ``close()`` and ``info``; ``{"op": "infer", "inputs": in.npz,
    "outputs": out.npz}`` runs it once (answer: ``{"ok": true, "ms": ...}``, the handler's own time, without the
    file transfer); ``{"op": "close"}`` ends the session.  Native output goes to stderr so stdout stays the protocol.

A handler signals an expected failure by raising an exception with ``kind`` ("conversion", "config",
"verification") and optionally ``hint``; anything else is reported as a crash of the toolkit.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any

PROTOCOL = "edgeconv.worker/1"


def load_handler(path: str | Path) -> Any:
    spec = importlib.util.spec_from_file_location(f"edgeconv_handler_{Path(path).stem}", str(path))
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load handler {path}")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def error_record(e: BaseException) -> dict[str, Any]:
    return {"type": type(e).__name__, "message": " ".join(str(e).split())[:2000], "kind": getattr(e, "kind", None),
            "hint": getattr(e, "hint", None), "traceback": traceback.format_exc()}


@contextlib.contextmanager
def redirect_fds(path: Path | None, *, to_stderr: bool = False) -> Any:
    """Send fds 1 and 2 (native printf included) to ``path``, or fd 1 to fd 2; restores them afterwards."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    target = os.open(str(path), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644) if path else None
    try:
        if target is not None:
            os.dup2(target, 1)
            os.dup2(target, 2)
        elif to_stderr:
            os.dup2(2, 1)
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (*saved, target):
            if fd is not None:
                os.close(fd)


def save_arrays(path: str | Path, arrays: dict[str, Any]) -> None:
    """Named arrays as ``a<j>`` plus the names (names may hold any character), as the host reads them."""
    import numpy as np

    names = list(arrays)
    np.savez(str(path), __names__=np.array(json.dumps(names)),
             **{f"a{j}": np.asarray(arrays[n]) for j, n in enumerate(names)})


def load_arrays(path: str | Path) -> dict[str, Any]:
    import numpy as np

    with np.load(str(path), allow_pickle=False) as z:
        names = json.loads(str(z["__names__"]))
        return {n: np.ascontiguousarray(z[f"a{j}"]) for j, n in enumerate(names)}


def run(job_dir: Path) -> int:
    job = json.loads((job_dir / "job.json").read_text())
    t0 = time.perf_counter()
    try:
        with redirect_fds(job_dir / "worker.log"):
            handler = load_handler(job_dir / job["handler"])
            result = getattr(handler, job["call"])(job.get("args", {}), job_dir)
        rec: dict[str, Any] = {"ok": True, "result": result}
        code = 0
    except BaseException as e:  # noqa: BLE001 - every failure must reach the host as a record
        rec = {"ok": False, "error": error_record(e)}
        code = 1
    rec.update(protocol=PROTOCOL, seconds=time.perf_counter() - t0, python=sys.version.split()[0])
    tmp = job_dir / "result.json.tmp"
    tmp.write_text(json.dumps(rec, default=_jsonable))
    os.replace(tmp, job_dir / "result.json")
    return code


def serve() -> int:
    proto = os.fdopen(os.dup(1), "w", buffering=1)  # the protocol channel: the original stdout
    session: Any = None

    def answer(rec: dict[str, Any]) -> None:
        proto.write(json.dumps(rec, default=_jsonable) + "\n")
        proto.flush()

    with redirect_fds(None, to_stderr=True):
        answer({"ok": True, "protocol": PROTOCOL, "pid": os.getpid(), "python": sys.version.split()[0]})
        for line in sys.stdin:
            if not line.strip():
                continue
            req = json.loads(line)
            op = req.get("op")
            try:
                if op == "open":
                    handler = load_handler(req["handler"])
                    t0 = time.perf_counter()
                    session = getattr(handler, req["call"])(req.get("args", {}), Path(req.get("dir") or "."))
                    answer({"ok": True, "ms": (time.perf_counter() - t0) * 1e3,
                            "info": getattr(session, "info", None)})
                elif op == "infer":
                    if session is None:
                        raise RuntimeError("infer before open")
                    feeds = load_arrays(req["inputs"])
                    t0 = time.perf_counter()
                    outs = session.infer(feeds)
                    ms = (time.perf_counter() - t0) * 1e3
                    save_arrays(req["outputs"], outs)
                    answer({"ok": True, "ms": ms})
                elif op == "close":
                    break
                else:
                    raise ValueError(f"unknown op {op!r}")
            except BaseException as e:  # noqa: BLE001 - reported to the host, which decides
                answer({"ok": False, "error": error_record(e)})
        if session is not None and hasattr(session, "close"):
            with contextlib.suppress(Exception):
                session.close()
    answer({"ok": True, "closed": True})
    return 0


def _jsonable(o: Any) -> Any:
    try:
        import numpy as np

        if isinstance(o, np.generic):
            return o.item()
        if isinstance(o, np.ndarray):
            return o.tolist()
    except ImportError:
        pass
    return str(o)


def main(argv: list[str]) -> int:
    if len(argv) == 2 and argv[0] == "run":
        return run(Path(argv[1]))
    if argv == ["serve"]:
        return serve()
    print("usage: worker.py run JOB_DIR | worker.py serve", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
