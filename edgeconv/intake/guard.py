"""Running the user's own code (imports, factories, forward passes, trusted unpickling) behind one fence.

User code can raise anything, including ``SystemExit`` (a factory calling ``sys.exit(0)`` would otherwise make
edgeconv exit 0 having done nothing) and ``BaseException`` subclasses that are not ``Exception``. Everything it
raises becomes an ``EdgeconvError`` of the stage's kind naming the user's file; only ``KeyboardInterrupt`` passes
through untouched, so Ctrl-C still ends the run with 130 and nothing half written.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from edgeconv.core.errors import EdgeconvError, ModelLoadError


def first_line(e: BaseException, limit: int = 300) -> str:
    """The first non-empty line of an exception's message (tracebacks and long dumps stay behind --verbose)."""
    if isinstance(e, SystemExit):
        return f"it called sys.exit({e.code!r})"
    for line in str(e).splitlines():
        if line.strip():
            return line.strip()[:limit]
    return type(e).__name__


def describe(e: BaseException) -> str:
    """``TypeName: first line`` (``SystemExit`` spelled out as the call it was)."""
    if isinstance(e, SystemExit):
        return first_line(e)
    return f"{type(e).__name__}: {first_line(e)}"


@contextlib.contextmanager
def user_code(what: str, *, hint: str | None = None, error: type[EdgeconvError] = ModelLoadError,
              stage: str | None = None) -> Iterator[None]:
    """Turn anything raised inside the block (but Ctrl-C and our own errors) into ``error(f"{what} failed: ...")``.

    ``what`` names the user's own file or callable (``"calling models.py:build()"``), never a temp copy.
    """
    try:
        yield
    except KeyboardInterrupt:
        raise
    except EdgeconvError:
        raise
    except MemoryError as e:
        raise error(f"{what} ran out of memory", hint=hint or "check the input sizes and the model", stage=stage) \
            from e
    except BaseException as e:  # noqa: BLE001 - SystemExit, GeneratorExit, anything user code throws
        raise error(f"{what} failed: {describe(e)}", hint=hint, stage=stage) from e
