"""Device profiles: data files (TOML) in the top-level ``targets/`` folder, validated on load.

A profile names a backend, a default precision, threads, layout, tolerances and backend options.  ``--target`` takes
a profile name (file stem) or a path to a user's own TOML file; a user copies one and edits it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeconv.core.errors import ConfigError
from edgeconv.core.files import read_structured

PRECISIONS = ("fp32", "fp16", "int8")
# Defaults used when a profile does not set a tolerance. fp32 is the 1e-4 bar; low precisions are judged
# mainly by cosine similarity of outputs (tensor verification) and by the task metric (benchmark).
DEFAULT_TOLERANCES: dict[str, dict[str, float]] = {
    "fp32": {"max_abs": 1e-4, "cosine": 0.99999},
    "fp16": {"cosine": 0.999, "task_delta": 0.3},
    "int8": {"cosine": 0.98, "task_delta": 1.5},
}
_KNOWN_KEYS = {"name", "backend", "description", "precision", "precisions", "device", "threads", "layout",
               "tolerance", "options", "notes", "preprocess", "runs_here"}


@dataclass(frozen=True)
class Profile:
    name: str
    backend: str
    description: str = ""
    precision: str = "fp32"
    precisions: tuple[str, ...] = PRECISIONS
    device: str = "CPU"
    threads: int = 0  # 0: the backend's default / all cores
    layout: str = "NCHW"
    tolerance: dict[str, dict[str, float]] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    notes: str = ""
    preprocess: dict[str, Any] = field(default_factory=dict)  # a user's own copy may pin its model's contract
    path: str | None = None

    def tol(self, precision: str) -> dict[str, float]:
        return {**DEFAULT_TOLERANCES.get(precision, {}), **self.tolerance.get(precision, {})}

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "backend": self.backend, "description": self.description,
                "precision": self.precision, "precisions": list(self.precisions), "device": self.device,
                "threads": self.threads, "layout": self.layout, "tolerance": self.tolerance,
                "options": self.options, "notes": self.notes, "preprocess": self.preprocess}


def profile_dirs() -> list[Path]:
    """Where named profiles are looked up: $EDGECONV_PROFILES (os.pathsep list), then the bundled folder.

    The bundled folder is package data (``edgeconv/_data/targets``) read through importlib.resources, so an installed
    wheel finds its profiles wherever it runs; in a checkout that folder is a symlink to the top-level ``targets/``,
    the copy users open and edit.
    """
    from importlib.resources import files

    dirs = [Path(p) for p in os.environ.get("EDGECONV_PROFILES", "").split(os.pathsep) if p]
    bundled = files("edgeconv") / "_data" / "targets"
    dirs.append(Path(str(bundled)))  # a plain folder: edgeconv is never imported from a zip (its data must be files)
    return dirs


def _validate(data: dict[str, Any], source: str) -> Profile:
    unknown = set(data) - _KNOWN_KEYS
    if unknown:
        raise ConfigError(f"profile {source}: unknown key(s) {sorted(unknown)}",
                          hint=f"known keys: {sorted(_KNOWN_KEYS)}")
    if "backend" not in data or not isinstance(data["backend"], str):
        raise ConfigError(f"profile {source}: 'backend' (a string) is required")
    precs = tuple(data.get("precisions", PRECISIONS))
    bad = [p for p in precs if p not in PRECISIONS]
    if bad:
        raise ConfigError(f"profile {source}: unknown precision(s) {bad}", hint=f"use {list(PRECISIONS)}")
    prec = data.get("precision", precs[0])
    if prec not in precs:
        raise ConfigError(f"profile {source}: default precision '{prec}' is not in precisions {list(precs)}")
    threads = data.get("threads", 0)
    if not isinstance(threads, int) or threads < 0:
        raise ConfigError(f"profile {source}: 'threads' must be a non-negative integer")
    layout = data.get("layout", "NCHW")
    if layout not in ("NCHW", "NHWC"):
        raise ConfigError(f"profile {source}: layout must be NCHW or NHWC, not {layout!r}")
    tol = data.get("tolerance", {})
    if not isinstance(tol, dict) or any(k not in PRECISIONS or not isinstance(v, dict) for k, v in tol.items()):
        raise ConfigError(f"profile {source}: [tolerance.<precision>] tables expected")
    return Profile(name=data.get("name", Path(source).stem), backend=data["backend"],
                   description=data.get("description", ""), precision=prec, precisions=precs,
                   device=data.get("device", "CPU"), threads=threads, layout=layout, tolerance=tol,
                   options=dict(data.get("options", {})), notes=data.get("notes", ""),
                   preprocess=dict(data.get("preprocess", {})), path=source)


def load_profile_file(path: str | Path) -> Profile:
    path = Path(path)
    data = read_structured(path, "profile")
    data.setdefault("name", path.stem)
    return _validate(data, str(path))


def list_profiles() -> dict[str, Profile]:
    found: dict[str, Profile] = {}
    for d in reversed(profile_dirs()):
        if d.is_dir():
            for f in sorted(d.glob("*.toml")):
                found[f.stem] = load_profile_file(f)
    return dict(sorted(found.items()))


def load_profile(name_or_path: str) -> Profile:
    """A profile by name (``openvino``, ``intel-cpu``) or by path to a TOML file."""
    p = Path(name_or_path)
    if p.suffix == ".toml" or os.sep in name_or_path:
        if not p.is_file():
            raise ConfigError(f"profile file {name_or_path} does not exist")
        return load_profile_file(p)
    for d in profile_dirs():
        f = d / f"{name_or_path}.toml"
        if f.is_file():
            return load_profile_file(f)
    names = ", ".join(list_profiles())
    raise ConfigError(f"unknown target '{name_or_path}'", hint=f"known targets: {names}; or pass a .toml profile path")
