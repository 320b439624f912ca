"""Device profiles: data files (TOML) in the top-level ``targets/`` folder, validated on load.

A profile names a backend, a default precision, threads, layout, tolerances and backend options.  ``--target`` takes
a profile name (file stem) or a path to a user's own TOML file; a user copies one and edits it.

Validation is a pydantic model (strict: ``precisions = "fp32"`` is not a list of four letters, ``threads = "2"`` is
not a number); every error names the file and the key. ``profile_json_schema()`` publishes the same model for
editors and for users writing their own. A profile's ``name`` becomes a folder under ``--out``, so it must be one
safe path component (``edgeconv.core.artifact.check_name``); a name taken from the file's stem is made safe instead.
pydantic is imported on first use, so ``import edgeconv`` stays fast.
"""

from __future__ import annotations

import functools
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeconv.core.artifact import check_name
from edgeconv.core.errors import ConfigError
from edgeconv.core.files import read_structured

PRECISIONS = ("fp32", "fp16", "bf16", "int8")
TOLERANCE_KEYS = ("max_abs", "rel_l2", "cosine", "snr_db", "task_delta", "detections_matched")
# Defaults used when a profile does not set a tolerance. fp32 is the 1e-4 bar; low precisions are judged
# mainly by cosine similarity of outputs (tensor verification) and by the task metric (benchmark).
#: ``detections_matched``: of an end2end artifact's detections, the share that must match the reference's (same
#: class, IoU >= 0.5, score >= 0.01) and the share of its own that must match one. INT8 moves low-score and
#: borderline boxes (the bundled detector's ORT INT8: 0.954 matched, 7.7 % extra, at -0.42 mAP50-95), so reduced
#: precisions are held to their task budget with agreement as a sanity bar, not to fp32's.
DEFAULT_TOLERANCES: dict[str, dict[str, float]] = {
    "fp32": {"max_abs": 1e-4, "cosine": 0.99999, "detections_matched": 0.99},
    "fp16": {"cosine": 0.999, "task_delta": 0.3, "detections_matched": 0.97},
    "bf16": {"cosine": 0.999, "task_delta": 0.3, "detections_matched": 0.97},
    "int8": {"cosine": 0.98, "task_delta": 1.5, "detections_matched": 0.9},
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


@functools.cache
def _model() -> Any:
    """The pydantic model of a profile file (built on first use)."""
    from typing import Literal

    from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

    precision_t = Literal[PRECISIONS]  # type: ignore[valid-type]

    class Tolerance(BaseModel):
        """Verification and benchmark bars for one precision (absent keys: edgeconv's defaults)."""

        model_config = ConfigDict(extra="forbid", strict=True)
        max_abs: float | None = Field(None, ge=0, description="largest absolute output difference")
        rel_l2: float | None = Field(None, ge=0, description="relative L2 error of the outputs")
        cosine: float | None = Field(None, ge=-1, le=1, description="smallest cosine similarity of the outputs")
        snr_db: float | None = Field(None, description="smallest signal-to-noise ratio (dB)")
        task_delta: float | None = Field(None, ge=0, description="largest task-metric drop (points)")
        detections_matched: float | None = Field(None, ge=0, le=1, description="end2end artifacts: smallest share "
                                                 "of detections matching the reference's (and of its own matched)")

    class ProfileFile(BaseModel):
        """An edgeconv device profile (targets/*.toml)."""

        model_config = ConfigDict(extra="forbid", strict=True, title="edgeconv profile")
        name: str | None = Field(None, description="folder name under --out (default: the file's stem)")
        backend: str = Field(min_length=1, description="backend that converts for this device (edgeconv targets)")
        description: str = ""
        precision: precision_t | None = Field(None, description="default precision (default: the first listed)")
        precisions: list[precision_t] = Field(default_factory=lambda: list(PRECISIONS), min_length=1)
        device: str = "CPU"
        threads: int = Field(0, ge=0, description="0: the backend's default (all cores)")
        layout: Literal["NCHW", "NHWC"] = "NCHW"
        tolerance: dict[precision_t, Tolerance] = Field(default_factory=dict)
        options: dict[str, Any] = Field(default_factory=dict, description="backend options (edgeconv targets)")
        notes: str = ""
        preprocess: dict[str, Any] = Field(default_factory=dict, description="preprocessing contract keys")
        runs_here: bool | str | None = Field(None, description="informational; what runs on this machine is probed")

        @field_validator("name")
        @classmethod
        def _safe_name(cls, v: str | None) -> str | None:
            if v is not None:
                try:
                    check_name(v, "profile name")
                except ConfigError as e:
                    raise ValueError(e.message) from e
            return v

        @field_validator("preprocess")
        @classmethod
        def _contract(cls, v: dict[str, Any]) -> dict[str, Any]:
            if v:
                from edgeconv.calibration.preprocess import Preprocess

                try:
                    Preprocess.from_dict(v, source="[preprocess]")
                except ConfigError as e:
                    raise ValueError(e.message) from e
            return v

        @model_validator(mode="after")
        def _default_in_list(self) -> Any:
            if self.precision is not None and self.precision not in self.precisions:
                raise ValueError(f"default precision '{self.precision}' is not in precisions {self.precisions}")
            return self

    return ProfileFile


def profile_json_schema() -> dict[str, Any]:
    """JSON Schema of a profile file (for editors, and for users writing their own)."""
    return _model().model_json_schema()


def _one_line(err: Any, source: str) -> ConfigError:
    errs = err.errors(include_url=False)
    first = errs[0]
    loc = ".".join(str(x) for x in first.get("loc", ()))
    msg = str(first.get("msg", "invalid"))
    msg = msg.removeprefix("Value error, ")
    if first.get("type") == "extra_forbidden":
        bad = sorted(".".join(str(x) for x in e["loc"]) for e in errs if e.get("type") == "extra_forbidden")
        return ConfigError(f"profile {source}: unknown key(s) {bad}", hint=f"known keys: {sorted(_KNOWN_KEYS)}"
                           if all("." not in b for b in bad) else f"tolerance keys: {list(TOLERANCE_KEYS)}")
    got = f" (got {first.get('input')!r})" if loc else ""
    more = f" (+{len(errs) - 1} more)" if len(errs) > 1 else ""
    where = f"key '{loc}': " if loc else ""
    hint = ("a name is one folder: letters, digits, '.', '_', '+', '-'; not starting with '.', no '..'"
            if loc == "name" else "see `edgeconv targets` and the bundled profiles in targets/ for the expected types")
    return ConfigError(f"profile {source}: {where}{msg}{got}{more}"[:400], hint=hint)


def _stem_name(stem: str) -> str:
    name = re.sub(r"[^A-Za-z0-9._+-]+", "-", stem).strip(".-") or "profile"
    return check_name(name.replace("..", "."), "profile name")


def _validate(data: Any, source: str, default_name: str | None = None) -> Profile:
    from pydantic import ValidationError

    if not isinstance(data, dict):
        raise ConfigError(f"profile {source} must be a table of keys, not {type(data).__name__}")
    try:
        m = _model().model_validate(data)
    except ValidationError as e:
        raise _one_line(e, source) from e
    precs = tuple(m.precisions)
    tol = {p: {k: v for k, v in t.model_dump().items() if v is not None} for p, t in m.tolerance.items()}
    return Profile(name=m.name or _stem_name(default_name or Path(source).stem), backend=m.backend,
                   description=m.description, precision=m.precision or precs[0], precisions=precs, device=m.device,
                   threads=m.threads, layout=m.layout, tolerance=tol, options=dict(m.options), notes=m.notes,
                   preprocess=dict(m.preprocess), path=source)


def load_profile_file(path: str | Path) -> Profile:
    path = Path(path)
    data = read_structured(path, "profile")
    return _validate(data, str(path), path.stem)


def list_profiles() -> dict[str, Profile]:
    found: dict[str, Profile] = {}
    for d in reversed(profile_dirs()):
        if d.is_dir():
            for f in sorted(d.glob("*.toml")):
                found[f.stem] = load_profile_file(f)
    return dict(sorted(found.items()))


def load_profile(name_or_path: str) -> Profile:
    """A profile by name (``openvino``, ``intel-cpu``) or by path to a TOML file."""
    if not isinstance(name_or_path, (str, os.PathLike)):
        raise ConfigError(f"--target must be a profile name or a .toml path, not {type(name_or_path).__name__}")
    name_or_path = os.fspath(name_or_path)
    p = Path(name_or_path)
    if p.suffix == ".toml" or os.sep in name_or_path or (os.altsep and os.altsep in name_or_path):
        if not p.is_file():
            raise ConfigError(f"profile file {name_or_path} does not exist")
        return load_profile_file(p)
    if not re.match(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$", name_or_path) or ".." in name_or_path:
        raise ConfigError(f"unknown target {name_or_path!r}", hint="a profile name (see `edgeconv targets`) or a "
                          "path to a .toml profile")
    for d in profile_dirs():
        f = d / f"{name_or_path}.toml"
        if f.is_file():
            return load_profile_file(f)
    names = ", ".join(list_profiles())
    raise ConfigError(f"unknown target '{name_or_path}'", hint=f"known targets: {names}; or pass a .toml profile path")
