"""Artifacts: a folder with ``manifest.json`` saying what went in, how it was made and what comes out.

Writes are atomic: everything is produced in a hidden temporary folder next to the destination and renamed into
place only once conversion *and verification* succeeded, so a failure never leaves a half-written artifact.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeconv.core.errors import ConfigError
from edgeconv.core.hashing import sha256_file
from edgeconv.core.tensors import TensorSpec

MANIFEST = "manifest.json"
SCHEMA = "edgeconv.artifact/1"


@dataclass
class Artifact:
    """A converted model on disk. ``manifest`` is the parsed manifest.json."""

    path: Path
    manifest: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def load(cls, path: str | Path) -> Artifact:
        path = Path(path)
        mf = path / MANIFEST
        if not mf.is_file():
            raise ConfigError(f"{path} is not an edgeconv artifact (no {MANIFEST})",
                              hint="point at a folder written by `edgeconv convert`")
        try:
            manifest = json.loads(mf.read_text())
        except json.JSONDecodeError as e:
            raise ConfigError(f"{mf} is not valid JSON: {e}") from e
        return cls(path, manifest)

    @property
    def target(self) -> str:
        return self.manifest["target"]

    @property
    def precision(self) -> str:
        return self.manifest["precision"]

    @property
    def inputs(self) -> list[TensorSpec]:
        return [TensorSpec.from_dict(d) for d in self.manifest["inputs"]]

    @property
    def outputs(self) -> list[TensorSpec]:
        return [TensorSpec.from_dict(d) for d in self.manifest["outputs"]]

    def file(self, role: str) -> Path:
        """Path of the file recorded under ``manifest['roles'][role]`` (e.g. 'model', 'weights')."""
        return self.path / self.manifest["roles"][role]

    @property
    def reference_onnx(self) -> Path:
        return self.path / self.manifest["reference"]["file"]

    def deploy_bytes(self) -> int:
        """Size of the files a user deploys (not the bundled reference)."""
        return sum((self.path / f).stat().st_size for f in self.manifest.get("files", {}))


def file_table(root: Path, names: list[str]) -> dict[str, dict[str, Any]]:
    return {n: {"sha256": sha256_file(root / n), "bytes": (root / n).stat().st_size} for n in names}


def write_manifest(root: Path, manifest: dict[str, Any]) -> None:
    manifest = {"schema": SCHEMA, "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"), **manifest}
    tmp = root / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=2, default=str))
    os.replace(tmp, root / MANIFEST)


@contextlib.contextmanager
def atomic_dir(dest: str | Path) -> Iterator[Path]:
    """Yield a fresh temp folder beside ``dest``; on success it replaces ``dest``, on error it is removed."""
    dest = Path(dest).absolute()
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.tmp-", dir=dest.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    replace_dir(tmp, dest)


def replace_dir(src: Path, dest: Path) -> None:
    """Rename ``src`` onto ``dest``; an existing ``dest`` is moved aside first and deleted after."""
    old = None
    if dest.exists():
        old = dest.with_name(f".{dest.name}.old-{os.getpid()}")
        if old.exists():
            shutil.rmtree(old)
        os.replace(dest, old)
    os.replace(src, dest)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
