"""What a backend environment is: a pinned set of requirements, installed into a venv of its own.

Why a separate environment at all: some toolkits pin what this project cannot share (rknn-toolkit2 wants
numpy <= 1.26 and torch <= 2.4 beside our numpy 2 / torch 2.13).  The spec is data, so its hash names the folder:
changing one pin makes a new environment instead of mutating one that artifacts were built with.
"""

from __future__ import annotations

import platform
import sys
from dataclasses import asdict, dataclass, field
from typing import Any

from edgeconv.core.hashing import sha256_json

#: Bumped when the way an environment is built changes (so old folders are not reused by a new layout).
LAYOUT_VERSION = 1


@dataclass(frozen=True)
class EnvSpec:
    """A backend environment: ``requirements`` are resolved with their dependencies; ``no_deps`` are installed
    with ``--no-deps`` afterwards (for a toolkit whose metadata over-pins, e.g. a CUDA-sized torch it does not
    need at that version); ``imports`` must import in the finished environment (its health check)."""

    name: str
    requirements: tuple[str, ...]
    no_deps: tuple[str, ...] = ()
    imports: tuple[str, ...] = ()
    versions_of: tuple[str, ...] = ()  # distributions whose versions the environment reports (doctor, manifests)
    python_versions: tuple[str, ...] = ()  # "3.11"-style minor versions with wheels; empty: any
    platforms: tuple[str, ...] = ()  # platform.machine() values with wheels; empty: any
    size_hint: str = ""  # shown in the creation notice ("about 1.5 GB")
    notes: tuple[str, ...] = field(default_factory=tuple)

    def key(self, python_version: str | None = None, machine: str | None = None) -> str:
        """Full sha256 of everything that determines the installed environment (pins, interpreter, platform)."""
        return sha256_json({
            "layout": LAYOUT_VERSION, "name": self.name, "requirements": list(self.requirements),
            "no_deps": list(self.no_deps), "python": python_version or python_minor(),
            "machine": machine or platform.machine(), "os": sys.platform,
        })

    def all_requirements(self) -> list[str]:
        return [*self.requirements, *self.no_deps]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


def python_minor(version: tuple[int, ...] | None = None) -> str:
    v = version or sys.version_info[:2]
    return f"{v[0]}.{v[1]}"
