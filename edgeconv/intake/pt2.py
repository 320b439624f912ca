"""Loading a ``torch.export`` ``.pt2`` archive without running anything from it unless the user trusts it.

``torch.export.load`` unpickles: pickled weight/constant payloads and sample inputs through ``torch.load``, and
when a weights-only load fails it silently retries with ``weights_only=False`` (running whatever the pickle says);
opaque constants through ``pickle.loads``; an AOTInductor package even loads compiled shared libraries. Without
``--trust-checkpoint`` we (1) inspect the archive and refuse compiled code outright, and (2) run torch's loader
with every unpickling entry point replaced: ``torch.load`` forced to ``weights_only=True`` (tensors and plain
containers only — torch's own safe unpickler) and ``pickle.loads`` / the torchbind unpickler refused. A refusal is
remembered even if torch catches it internally, so a file that needed any of it is refused by name, in one line.
torch's warnings and logged tracebacks from such attempts are kept off the terminal.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from edgeconv.core.errors import ModelLoadError
from edgeconv.core.lazy import require
from edgeconv.intake.guard import first_line, user_code

TRUST_HINT = "only if you trust its origin, pass --trust-checkpoint"
_COMPILED = (".so", ".dll", ".dylib", ".pyd", ".cubin", ".o")


class _Refused(Exception):  # noqa: N818 - internal signal, never leaves this module
    pass


def inspect_archive(path: Path) -> list[str]:
    """Entry names of a ``.pt2`` (a zip); ModelLoadError when it is not one, or when it carries compiled code."""
    try:
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
    except (zipfile.BadZipFile, OSError, ValueError) as e:
        raise ModelLoadError(f"{path} is not a torch.export .pt2 archive ({first_line(e)})",
                             hint="save it with torch.export.save(), or give an .onnx / FILE.py:FACTORY") from e
    return names


def compiled_entries(names: list[str]) -> list[str]:
    return [n for n in names if "/aotinductor/" in f"/{n}" or n.lower().endswith(_COMPILED)]


@contextlib.contextmanager
def quiet_torch() -> Iterator[None]:
    """Silence torch's loggers and warnings for the duration (its fallbacks log whole tracebacks)."""
    loggers = [logging.getLogger(n) for n in list(logging.root.manager.loggerDict) if n.split(".")[0] == "torch"]
    loggers.append(logging.getLogger("torch"))
    before = [lg.disabled for lg in loggers]
    for lg in loggers:
        lg.disabled = True
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, was in zip(loggers, before):
            lg.disabled = was


@contextlib.contextmanager
def _weights_only(refusals: list[str]) -> Iterator[None]:
    """Replace torch's unpickling entry points for the duration; each refusal is appended to ``refusals``."""
    torch = require("torch", "torch")
    from torch.export.pt2_archive import _package

    real_load = torch.load
    real_pickle = _package.pickle
    real_obj = getattr(torch._C, "_pickle_load_obj", None)

    def safe_load(f: Any, *args: Any, **kwargs: Any) -> Any:
        kwargs["weights_only"] = True
        kwargs.pop("pickle_module", None)
        try:
            return real_load(f, *args, **kwargs)
        except Exception as e:
            refusals.append("a pickled payload in it (sample inputs, a weight or a constant) needs arbitrary "
                            "unpickling, which can run code")
            raise _Refused(refusals[-1]) from e

    def refuse(what: str) -> Any:
        def fn(*_a: Any, **_k: Any) -> Any:
            refusals.append(what)
            raise _Refused(what)
        return fn

    class _NoPickle:
        loads = staticmethod(refuse("an opaque Python object is stored as a pickle"))
        load = loads

    def refuse_aoti(*_a: Any, **_k: Any) -> Any:
        refusals.append("it holds AOTInductor compiled code")
        raise _Refused(refusals[-1])

    real_aoti = _package._load_aoti
    torch.load = safe_load
    _package.pickle = _NoPickle
    _package._load_aoti = refuse_aoti
    if real_obj is not None:
        torch._C._pickle_load_obj = refuse("a TorchBind object is stored as a pickle")
    try:
        yield
    finally:
        torch.load = real_load
        _package.pickle = real_pickle
        _package._load_aoti = real_aoti
        if real_obj is not None:
            torch._C._pickle_load_obj = real_obj


def load_exported_program(path: str | Path, *, trust: bool = False) -> Any:
    """The ``ExportedProgram`` in ``path``; nothing from the file is executed unless ``trust``."""
    torch = require("torch", "torch")
    path = Path(path)
    names = inspect_archive(path)
    if trust:
        with user_code(f"loading the ExportedProgram {path}"), quiet_torch():
            return torch.export.load(str(path))
    compiled = compiled_entries(names)
    if compiled:
        raise ModelLoadError(f"{path} holds compiled code ({compiled[0]}); loading it would run that code",
                             hint=TRUST_HINT)
    refusals: list[str] = []
    try:
        with quiet_torch(), _weights_only(refusals):
            ep = torch.export.load(str(path))
    except KeyboardInterrupt:
        raise
    except BaseException as e:  # noqa: BLE001 - torch wraps our refusal in whatever it raises
        if refusals:
            raise ModelLoadError(f"{path} cannot be loaded safely: {refusals[0]}", hint=TRUST_HINT) from e
        raise ModelLoadError(f"cannot load the ExportedProgram {path}: {type(e).__name__}: {first_line(e)}",
                             hint="re-save it with torch.export.save() from this torch version") from e
    if refusals:  # torch swallowed the refusal and went on: still refused
        raise ModelLoadError(f"{path} cannot be loaded safely: {refusals[0]}", hint=TRUST_HINT)
    return ep
