"""Artifacts: a folder with ``manifest.json`` saying what went in, how it was made and what comes out.

Writes are atomic: everything is produced in a hidden temporary folder next to the destination and renamed into
place only once conversion *and verification* succeeded, so a failure never leaves a half-written artifact.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import re
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


# Names that become paths (profile names, precisions): one path component, a conservative character set, so a
# name can neither climb out of --out ("../x"), nor hide ("." prefix: our temp folders), nor surprise a shell.
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,127}$")
_TMP_RE = re.compile(r"^\.(?P<name>.+)\.(?:tmp|old)-(?P<pid>\d+)(?:-[A-Za-z0-9_]+)?$")


def check_name(name: str, what: str = "name") -> str:
    """``name`` if it is safe as one path component, else a ConfigError naming ``what``."""
    if not isinstance(name, str) or not _SAFE_NAME.match(name) or ".." in name:
        raise ConfigError(f"{what} {name!r} cannot be used as a folder name",
                          hint="use letters, digits, '.', '_', '+' and '-' (one path component, not starting "
                               "with '.', no '..')")
    return name


def safe_child(root: str | Path, name: str) -> Path:
    """``root / name``, proven to stay inside ``root`` (``name`` is one safe path component and, with symlinks
    resolved, the result's parent is ``root`` itself); a ConfigError otherwise.

    Every folder edgeconv writes under ``--out`` or the cache is built with this, so a hostile profile name
    (``../../x``) or a symlink planted at ``OUT/<name>`` cannot make a write, or a replace-and-delete, land
    anywhere else.
    """
    check_name(name)
    root_p = Path(root).expanduser().absolute()
    child = root_p / name
    real_root = root_p.resolve()
    # A symlink at OUT/<name> (even a dangling one) would redirect the rename and the delete of the old folder.
    if child.is_symlink():
        raise ConfigError(f"{child} is a symbolic link; edgeconv writes only real folders inside {root_p}",
                          hint="remove the link or choose another --out")
    if child.resolve().parent != real_root:
        raise ConfigError(f"{name!r} does not stay inside {root_p}", hint="choose another name")
    return child


def _umask() -> int:
    # os.umask can only be read by setting it; done once per call under the GIL, restored at once.
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _fix_mode(folder: Path) -> None:
    """mkdtemp makes 0700 folders; a published artifact gets the mode any folder the user makes would get."""
    with contextlib.suppress(OSError):
        os.chmod(folder, 0o777 & ~_umask())


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def clean_stale(parent: Path, name: str | None = None) -> list[Path]:
    """Remove ``.<name>.tmp-<pid>-*`` / ``.<name>.old-<pid>`` folders of processes that no longer run (a run
    killed by SIGKILL or a power cut cannot clean up after itself). Folders of live processes — a concurrent
    run on the same --out — are left alone. Returns what was removed."""
    removed: list[Path] = []
    try:
        entries = list(Path(parent).iterdir())
    except OSError:
        return removed
    for p in entries:
        m = _TMP_RE.match(p.name)
        if not m or (name is not None and m.group("name") != name) or p.is_symlink() or not p.is_dir():
            continue
        if not _pid_alive(int(m.group("pid"))):
            shutil.rmtree(p, ignore_errors=True)
            removed.append(p)
    return removed


def check_out_dir(path: str | Path, *, replace: str | Path | None = None) -> None:
    """Refuse, before any slow work, an output folder edgeconv could not or must not write: a file, a folder
    that cannot be created or written, or (``replace``) an existing destination that is not an edgeconv
    artifact — a user's own folder is never deleted to make room.

    ``path`` is ``--out``; ``replace`` (optional) is a destination inside it that will be replaced
    (``OUT/<profile>-<precision>``).
    """
    out = Path(path).expanduser()
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file, not a folder", hint="choose a folder for --out")
    probe_root = out
    while not probe_root.exists():
        if probe_root.parent == probe_root:
            break
        probe_root = probe_root.parent
    if not probe_root.is_dir():
        raise ConfigError(f"--out {out}: {probe_root} is not a folder", hint="choose another --out")
    if not os.access(probe_root, os.W_OK | os.X_OK):
        raise ConfigError(f"--out {out} is not writable ({probe_root} is read-only for this user)",
                          hint="choose a writable --out or fix the folder's permissions")
    if out.is_dir():
        try:
            probe = tempfile.NamedTemporaryFile(dir=out, prefix=".edgeconv-probe-", delete=True)  # noqa: SIM115
            probe.write(b"x")
            probe.flush()
            probe.close()
        except OSError as e:
            raise ConfigError(f"--out {out} cannot be written: {e.strerror}",
                              hint="free disk space, or choose another --out") from e
    if replace is not None:
        _check_replaceable(Path(replace).absolute(), MANIFEST)


@contextlib.contextmanager
def atomic_dir(dest: str | Path, *, marker: str | None = MANIFEST) -> Iterator[Path]:
    """Yield a fresh temp folder beside ``dest``; on success it replaces ``dest``, on error it is removed.

    An existing ``dest`` is replaced only if it is empty or holds ``marker`` (the artifact's manifest): a
    ConfigError otherwise, checked before the work starts and again before the rename. Stale temp folders of
    killed runs for the same ``dest`` are removed first. The published folder gets the user's umask.
    """
    dest = Path(dest).absolute()
    dest.parent.mkdir(parents=True, exist_ok=True)
    _check_replaceable(dest, marker)
    clean_stale(dest.parent, dest.name)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.tmp-{os.getpid()}-", dir=dest.parent))
    try:
        yield tmp
        _check_replaceable(dest, marker)
        _fix_mode(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    replace_dir(tmp, dest)


def _check_replaceable(dest: Path, marker: str | None) -> None:
    if dest.is_symlink() or (dest.exists() and not dest.is_dir()):
        raise ConfigError(f"{dest} exists and is not a folder edgeconv wrote",
                          hint="move it away or choose another --out")
    if marker is None or not dest.is_dir():
        return
    try:
        ok = (dest / marker).is_file() or not any(dest.iterdir())
    except OSError:
        ok = False
    if not ok:
        raise ConfigError(f"{dest} exists and is not an edgeconv artifact (no {marker}); refusing to replace it",
                          hint="move that folder away or choose another --out")


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
