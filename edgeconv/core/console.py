"""Where output goes: results on stdout, logs and progress on stderr, so ``edgeconv X > file`` and ``| jq`` work.

- ``console`` (stderr): logging, spinners, progress bars. ``out()`` (stdout): tables and other results.
- Every string that came from a user, a file or a backend is printed through :func:`escape` (or as plain text), so
  ``pip install 'edgeconv[ncnn]'`` keeps its ``[ncnn]`` instead of being read as rich markup.
- ``-q`` silences progress and info logging; ``-v`` turns on debug; ``--log-file`` keeps a timestamped debug log.
- Progress shows an estimate of the time left; when stderr is not a terminal (CI logs) it logs a line now and then
  instead of drawing a bar, so a long step is never silent.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import sys
import time
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape as _rich_escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

console = Console(stderr=True)
log = logging.getLogger("edgeconv")
T = TypeVar("T")

_state = {"quiet": False, "verbose": False, "plain": False}
_PLAIN_EVERY_S = 15.0  # a progress line at most this often when stderr is not a terminal


def escape(text: Any) -> str:
    """``text`` made safe for rich markup (square brackets kept literally)."""
    return _rich_escape(str(text))


def out() -> Console:
    """A console on stdout for results (tables). Wide when not a terminal, so a redirected table is not wrapped."""
    return Console(file=sys.stdout, width=None if sys.stdout.isatty() else 200, soft_wrap=False,
                   highlight=False)


def print_table(table: Any) -> None:
    """Print a rich Table (or any renderable) to stdout."""
    out().print(table)


def emit_json(obj: Any) -> None:
    """Machine-readable result on stdout (non-finite floats become null, other objects their str)."""
    sys.stdout.write(json.dumps(_finite(obj), indent=2, default=str) + "\n")
    sys.stdout.flush()


def _finite(o: Any) -> Any:
    if isinstance(o, float) and not math.isfinite(o):
        return None
    if isinstance(o, dict):
        return {k: _finite(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_finite(v) for v in o]
    return o


class _Library(logging.Handler):
    """The root logger's one handler under the CLI: a backend that logs through ``logging.warning`` (ONNX Runtime's
    quantizer: "Please consider to run pre-processing before quantization", twice a row) would otherwise make
    logging print ``WARNING:root:...`` lines among edgeconv's own; they go to edgeconv's debug log (``-v``,
    ``--log-file``) with the logger's name."""

    def emit(self, record: logging.LogRecord) -> None:
        if record.name.startswith("edgeconv"):
            return
        with contextlib.suppress(Exception):  # a library's malformed log call must not break a conversion
            log.debug("[%s] %s", record.name, record.getMessage())


def setup_logging(verbose: bool = False, quiet: bool = False, log_file: str | Path | None = None) -> None:
    """Configure the ``edgeconv`` logger; safe to call again (the CLI does, as global flags are parsed)."""
    _state["quiet"], _state["verbose"] = quiet and not verbose, verbose
    if not any(isinstance(h, RichHandler) for h in log.handlers):
        log.addHandler(RichHandler(console=console, show_path=False, show_time=False, markup=False))
    for h in log.handlers:
        if isinstance(h, RichHandler):
            h.setLevel(logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO)
    if log_file is not None:
        path = str(Path(log_file).absolute())
        if not any(isinstance(h, logging.FileHandler) and h.baseFilename == path for h in log.handlers):
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            fh = logging.FileHandler(path, encoding="utf-8")
            fh.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
            fh.setLevel(logging.DEBUG)
            log.addHandler(fh)
    has_file = any(isinstance(h, logging.FileHandler) for h in log.handlers)
    log.setLevel(logging.DEBUG if verbose or has_file else logging.WARNING if quiet else logging.INFO)
    log.propagate = False
    root = logging.getLogger()
    if not any(isinstance(h, _Library) for h in root.handlers):
        root.addHandler(_Library())
    if not getattr(warnings.showwarning, "_edgeconv", False):
        warnings.showwarning = _show_warning(warnings.showwarning)


def _show_warning(shown: Any) -> Any:
    """``warnings.showwarning`` with the deprecation notices of libraries (torch's pytree FutureWarning, printed
    from copyreg.py in the middle of a conversion) sent to the debug log; other warnings are shown as before."""
    def show(message: Any, category: type[Warning], filename: str, lineno: int, file: Any = None,
             line: str | None = None) -> None:
        if issubclass(category, (DeprecationWarning, PendingDeprecationWarning, FutureWarning)):
            log.debug("[%s] %s:%s: %s", category.__name__, filename, lineno, message)
            return
        shown(message, category, filename, lineno, file, line)

    show._edgeconv = True  # type: ignore[attr-defined]
    return show


def is_quiet() -> bool:
    return _state["quiet"]


def plain_progress() -> None:
    """Progress as log lines instead of live bars/spinners: for worker processes that share the parent's
    terminal (several live displays drawn at once overwrite each other)."""
    _state["plain"] = True


def _live() -> bool:
    return console.is_terminal and not _state["plain"]


def _eta(done: int, total: int | None, elapsed: float) -> str:
    if not total or done <= 0:
        return ""
    left = elapsed / done * (total - done)
    return f", about {left:.0f} s left" if left < 120 else f", about {left / 60:.1f} min left"


def track(items: Iterable[T], description: str, total: int | None = None) -> Iterator[T]:
    """Iterate with a progress bar and an estimate of the time left on stderr.

    Not a terminal: an INFO line at the start, at most every 15 s (with the estimate) and at the end of a loop
    that took 2 s or more. ``-q``: nothing.
    """
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    if _state["quiet"]:
        yield from items
        return
    if _live():
        with Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                      TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(), console=console,
                      transient=True) as p:
            yield from p.track(items, total=total, description=escape(description))
        return
    t0 = last = time.monotonic()
    log.info("%s: 0/%s", description, total if total is not None else "?")
    done = 0
    for done, item in enumerate(items, 1):
        yield item
        now = time.monotonic()
        if now - last >= _PLAIN_EVERY_S:
            last = now
            log.info("%s: %d/%s%s", description, done, total if total is not None else "?", _eta(done, total, now - t0))
    if done and time.monotonic() - t0 >= 2.0:  # a log that stops at "0/48" reads as a hang
        log.info("%s: %d/%s done in %.0f s", description, done, total if total is not None else "?",
                 time.monotonic() - t0)


@contextlib.contextmanager
def status(message: str) -> Iterator[None]:
    """A spinner for a single slow step (export, a backend conversion); a log line when stderr is not a terminal."""
    if _state["quiet"]:
        yield
    elif _live():
        with console.status(escape(message)):
            yield
    else:
        log.debug("%s ...", message)
        yield


def _fds_to(path: Path, header: str = "") -> bool:
    """Point fd 1 and fd 2 at ``path`` (appending); False, and nothing changed, when it cannot be opened."""
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    except OSError:
        return False
    if header:
        os.write(fd, f"== {header}\n".encode())
    for std in (1, 2):
        os.dup2(fd, std)
    os.close(fd)
    return True


def divert_native_output(path: Path, header: str = "") -> bool:
    """In a worker process: what third-party code writes to fd 1 and 2 from now on (converters' progress bars,
    native libraries' logs, Python warnings) goes to ``path``, while edgeconv's own log lines and progress keep the
    terminal. Not with ``-v`` (debug shows everything where it is written). Returns whether it diverted.

    Why: a plan's workers run pnnx, litert-torch, NNCF, MNN, ExecuTorch side by side, and their chatter (dozens of
    lines a run, none actionable) buried the one line per row that is; a failed row's output stays in ``path``."""
    if _state["verbose"]:
        return False
    keep = os.dup(2)
    if not _fds_to(path, header):
        os.close(keep)
        return False
    stream = os.fdopen(keep, "w", buffering=1, encoding="utf-8", errors="replace")
    console.file = stream
    for h in [*log.handlers, *logging.getLogger().handlers]:
        if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler) and \
                getattr(h, "stream", None) in (sys.stderr, sys.__stderr__):
            h.setStream(stream)
    # Python-level writers too, whatever sys.stdout/sys.stderr were (a test runner's capture objects included)
    sys.stdout = open(1, "w", buffering=1, encoding="utf-8", errors="replace", closefd=False)  # noqa: SIM115
    sys.stderr = open(2, "w", buffering=1, encoding="utf-8", errors="replace", closefd=False)  # noqa: SIM115
    return True


@contextlib.contextmanager
def native_output_to(path: Path) -> Iterator[None]:
    """``divert_native_output`` for one step of this process, then fd 1 and 2 back as they were (edgeconv's own
    lines inside go to ``path`` too: wrap quiet steps only, such as imports)."""
    saved = [] if _state["verbose"] else [os.dup(1), os.dup(2)]
    if saved and not _fds_to(path):
        for s in saved:
            os.close(s)
        saved = []
    try:
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        for std, s in enumerate(saved, start=1):
            os.dup2(s, std)
            os.close(s)


@contextlib.contextmanager
def stdout_to_stderr() -> Iterator[None]:
    """Inside, whatever a third-party tool prints (Python ``print`` and native writes to fd 1) goes to stderr, so
    stdout carries only edgeconv's results (``--json`` stays parseable). Wrap converter and runtime calls in it."""
    sys.stdout.flush()
    try:
        out_fd, err_fd = sys.stdout.fileno(), sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):  # not real files (a test runner's capture): Python level only
        out_fd = err_fd = None
    saved = os.dup(out_fd) if out_fd is not None else None
    try:
        if saved is not None:
            os.dup2(err_fd, out_fd)
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        if saved is not None:
            os.dup2(saved, out_fd)
            os.close(saved)
