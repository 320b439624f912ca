"""Target registry fed by the ``edgeconv.targets`` entry-point group (built-ins register the same way).

Registration is loud: a target whose module fails to import stays listed, marked broken with its one-line import
error (``edgeconv targets``, ``doctor``), and asking for it raises a MissingDependencyError naming that error —
never "no backend named". If edgeconv runs from a source tree that was never pip-installed (no entry points), the
built-ins are found by scanning ``edgeconv/targets/*/`` for sub-packages, so nothing outside a backend's own folder
names it.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import pkgutil
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from edgeconv.core.errors import ConfigError, MissingDependencyError
from edgeconv.targets.base import Target

GROUP = "edgeconv.targets"


@dataclass(frozen=True)
class Registration:
    """One registered target: where it lives, and the class or the one-line reason it cannot be loaded."""

    name: str
    ref: str
    cls: type[Target] | None
    error: str | None

    @property
    def broken(self) -> bool:
        return self.cls is None


def _load(ref: str) -> type[Target]:
    mod, _, attr = ref.partition(":")
    obj = getattr(importlib.import_module(mod), attr)
    if not (isinstance(obj, type) and issubclass(obj, Target)):
        raise TypeError(f"{ref} is not a Target subclass")
    return obj


def _builtin_refs() -> dict[str, str]:
    """Sub-packages of ``edgeconv.targets`` that define exactly one Target (for un-installed checkouts)."""
    here = Path(__file__).parent
    refs: dict[str, str] = {}
    for info in pkgutil.iter_modules([str(here)]):
        if not info.ispkg:
            continue
        init = here / info.name / "__init__.py"
        text = init.read_text(errors="replace") if init.is_file() else ""
        for line in text.splitlines():
            if line.startswith("class ") and "(Target)" in line:
                refs[info.name] = f"edgeconv.targets.{info.name}:{line[6:].split('(')[0].strip()}"
                break
    return refs


@lru_cache(maxsize=1)
def registrations() -> dict[str, Registration]:
    """Every registered target, importable or not (imports only edgeconv's light target modules)."""
    refs = _builtin_refs()
    for ep in importlib.metadata.entry_points(group=GROUP):
        refs[ep.name] = ep.value
    out: dict[str, Registration] = {}
    for name, ref in sorted(refs.items()):
        try:
            out[name] = Registration(name, ref, _load(ref), None)
        except Exception as e:  # noqa: BLE001 - any failure to import a plug-in is that plug-in's, reported
            msg = " ".join(f"{type(e).__name__}: {e}".split())[:200]
            out[name] = Registration(name, ref, None, msg)
    return out


def all_targets() -> dict[str, Target]:
    """Every registered target that could be loaded (broken ones: see ``registrations()``)."""
    return {n: r.cls() for n, r in registrations().items() if r.cls is not None}


def broken_targets() -> dict[str, str]:
    """name -> one-line import error of each registered target that cannot be loaded."""
    return {n: r.error or "" for n, r in registrations().items() if r.cls is None}


def get_target(name: str) -> Target:
    regs = registrations()
    if name not in regs:
        raise ConfigError(f"no backend named '{name}'", hint=f"registered backends: {', '.join(sorted(regs))}")
    reg = regs[name]
    if reg.cls is None:
        raise MissingDependencyError(f"backend '{name}' ({reg.ref}) cannot be loaded: {reg.error}",
                                     hint="reinstall the package that provides it, or see `edgeconv targets`")
    return reg.cls()
