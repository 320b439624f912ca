"""Create, find and check backend environments: ``$EDGECONV_CACHE/envs/<name>-<sha256 of the spec>``.

An environment is made once, on first use or by ``edgeconv env create NAME``, with a one-line notice and pip's own
progress, and reused afterwards without touching the network.  It is never the main environment: a fresh venv
from the base interpreter, so nothing we pin is disturbed (the main environment's ``pip check`` stays clean).
A folder counts as an environment only once its record (``edgeconv-env.json``) is written, as the last step; a
half-made folder from an interrupted creation is removed and made again.  Creation is serialized by a file lock,
so two conversions starting together build it once.

Offline or unusual machines: ``EDGECONV_WHEELHOUSE`` (folders, ``os.pathsep``-separated) is passed to pip as
``--find-links``; pip's own ``PIP_*`` settings (``PIP_NO_INDEX=1``, ``PIP_INDEX_URL``) apply as usual.
``EDGECONV_ENVS`` moves the environments out of the cache; ``EDGECONV_ENV_PYTHON`` picks the interpreter the venv
is made from; ``EDGECONV_ENV_AUTO=0`` refuses to create one
implicitly during a conversion (then ``edgeconv env create NAME`` does it).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

from edgeconv.core.cache import cache_root
from edgeconv.core.console import console, log
from edgeconv.core.errors import ConfigError, MissingDependencyError
from edgeconv.envs.spec import EnvSpec
from edgeconv.envs.transport import LocalTransport

RECORD = "edgeconv-env.json"
CREATE_TIMEOUT_S = 1800.0
CHECK_TIMEOUT_S = 300.0
_CHECK = """
import importlib, importlib.metadata, json, sys
mods, dists = json.loads(sys.argv[1]), json.loads(sys.argv[2])
bad = {}
for m in mods:
    try:
        importlib.import_module(m)
    except BaseException as e:
        bad[m] = f"{type(e).__name__}: {e}"
vers = {}
for d in dists:
    try:
        vers[d] = importlib.metadata.version(d)
    except importlib.metadata.PackageNotFoundError:
        vers[d] = None
print(json.dumps({"python": sys.version.split()[0], "failed": bad, "versions": vers}))
"""


def envs_root() -> Path:
    """``$EDGECONV_ENVS``, else ``<cache>/envs``: environments are large and slow to make, so they may live apart
    from the artifact cache (and survive clearing it)."""
    root = os.environ.get("EDGECONV_ENVS")
    return Path(root).expanduser() if root else cache_root() / "envs"


def wheelhouses(find_links: Sequence[str] = ()) -> list[str]:
    return [*find_links, *[p for p in os.environ.get("EDGECONV_WHEELHOUSE", "").split(os.pathsep) if p]]


def pip_argv(python: str, pip_log: Path, *, find_links: Sequence[str] = (), no_index: bool = False,
             quiet: bool = False) -> list[str]:
    """``pip install`` in the environment: its own interpreter, our log file, the wheelhouses, no prompts."""
    return [python, "-m", "pip", "install", "--disable-pip-version-check", "--no-input", "--log", str(pip_log),
            *(["--no-index"] if no_index else []), *[a for f in wheelhouses(find_links) for a in ("--find-links", f)],
            *(["-q"] if quiet else [])]


def base_python(python: str | None = None) -> str:
    """The interpreter a new venv is made from: ``python``, ``$EDGECONV_ENV_PYTHON``, else the one running us
    (its base installation when we run inside a venv: a venv made from a venv works, but chains their fates)."""
    chosen = python or os.environ.get("EDGECONV_ENV_PYTHON")
    if chosen:
        return chosen
    base = getattr(sys, "_base_executable", None)
    return base if base and Path(base).exists() else sys.executable


@lru_cache(maxsize=8)
def python_info(python: str) -> tuple[str, str]:
    """(``3.11``, machine) of an interpreter, asked once."""
    if python in (sys.executable, getattr(sys, "_base_executable", None)):
        import platform

        return f"{sys.version_info[0]}.{sys.version_info[1]}", platform.machine()
    try:
        out = subprocess.run([python, "-c", "import sys,platform;print(f'{sys.version_info[0]}.{sys.version_info[1]}',"
                              "platform.machine())"], capture_output=True, text=True, timeout=60, check=True)
    except (OSError, subprocess.SubprocessError) as e:
        raise ConfigError(f"cannot run the interpreter {python!r} for backend environments: {e}",
                          hint="set EDGECONV_ENV_PYTHON to a working python3") from e
    ver, machine = out.stdout.split()
    return ver, machine


@dataclass
class BackendEnv:
    """A finished environment: where it is, its interpreter and what was recorded when it was made."""

    spec: EnvSpec
    path: Path
    record: dict[str, Any]

    @property
    def python(self) -> str:
        exe = self.path / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
        return str(exe)

    def transport(self) -> LocalTransport:
        """The worker transport for this environment: this machine, the venv's interpreter."""
        return LocalTransport(python=self.python, name=f"env:{self.spec.name}")

    @property
    def versions(self) -> dict[str, str | None]:
        return dict(self.record.get("versions") or {})


def env_path(spec: EnvSpec, python: str | None = None) -> Path:
    ver, machine = python_info(base_python(python))
    return envs_root() / f"{spec.name}-{spec.key(ver, machine)}"


def locate(spec: EnvSpec, python: str | None = None) -> BackendEnv | None:
    """The finished environment for ``spec`` on this interpreter, or None (never creates anything)."""
    path = env_path(spec, python)
    rec = _read_record(path)
    env = BackendEnv(spec, path, rec) if rec is not None else None
    return env if env is not None and Path(env.python).exists() else None


def _read_record(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads((path / RECORD).read_text())
    except (OSError, ValueError):
        return None


def ensure(spec: EnvSpec, *, find_links: Sequence[str] = (), no_index: bool = False, python: str | None = None,
           quiet: bool = False, implicit: bool = True) -> BackendEnv:
    """The environment for ``spec``: found, or created now (with a notice).  ``implicit``: asked for by a
    conversion rather than by ``edgeconv env create`` (``EDGECONV_ENV_AUTO=0`` then refuses)."""
    env = locate(spec, python)
    if env is not None:
        return env
    if implicit and os.environ.get("EDGECONV_ENV_AUTO", "1").lower() in ("0", "no", "false", "off"):
        raise MissingDependencyError(f"backend environment '{spec.name}' does not exist and EDGECONV_ENV_AUTO=0",
                                     hint=f"create it with: edgeconv env create {spec.name}")
    return create(spec, find_links=find_links, no_index=no_index, python=python, quiet=quiet)


@contextlib.contextmanager
def _lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as f:
        try:
            import fcntl
        except ImportError:  # not POSIX: no cross-process lock, creation still completes or is redone
            yield
            return
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _check_supported(spec: EnvSpec, ver: str, machine: str) -> None:
    if spec.python_versions and ver not in spec.python_versions:
        raise MissingDependencyError(
            f"backend environment '{spec.name}' needs Python {'/'.join(spec.python_versions)} "
            f"({spec.no_deps[0] if spec.no_deps else spec.requirements[0]} has no wheel for Python {ver})",
            hint="point EDGECONV_ENV_PYTHON at a supported python3 (e.g. from pyenv/uv/deadsnakes)")
    if spec.platforms and machine not in spec.platforms:
        raise MissingDependencyError(
            f"backend environment '{spec.name}' has no wheels for {machine} (only {', '.join(spec.platforms)})",
            hint="convert on a supported machine and copy the artifact")


def create(spec: EnvSpec, *, find_links: Sequence[str] = (), no_index: bool = False, python: str | None = None,
           quiet: bool = False) -> BackendEnv:
    """Make the environment now (or return it if another process just did)."""
    py = base_python(python)
    ver, machine = python_info(py)
    _check_supported(spec, ver, machine)
    path = env_path(spec, python)
    with _lock(path.with_name(path.name + ".lock")):
        env = locate(spec, python)
        if env is not None:
            return env
        if path.exists():
            log.warning("removing the unfinished backend environment %s (an earlier creation was interrupted)", path)
            shutil.rmtree(path, ignore_errors=True)
        pip_log = path.with_name(path.name + ".pip.log")
        pip_log.unlink(missing_ok=True)
        pins = ", ".join(spec.no_deps or spec.requirements[:1])
        console.print(f"edgeconv: creating backend environment '{spec.name}' for {pins} (first use"
                      f"{'; ' + spec.size_hint if spec.size_hint else ''}; reused afterwards) in {path}",
                      markup=False, highlight=False, soft_wrap=True)
        t0 = time.perf_counter()
        try:
            bare = not spec.all_requirements()  # nothing to install: no pip needed either
            _run_step(spec, [py, "-m", "venv", *(["--without-pip"] if bare else []), str(path)], "python -m venv",
                      quiet, pip_log)
            exe = str(path / "bin" / "python")
            pip = pip_argv(exe, pip_log, find_links=find_links, no_index=no_index, quiet=quiet)
            if spec.requirements:
                _run_step(spec, [*pip, *spec.requirements], "pip install", quiet, pip_log)
            if spec.no_deps:
                _run_step(spec, [*pip, "--no-deps", *spec.no_deps], "pip install --no-deps", quiet, pip_log)
            checked = check_python(exe, spec)
            if checked["failed"]:
                mod, why = next(iter(checked["failed"].items()))
                raise MissingDependencyError(
                    f"backend environment '{spec.name}' was installed but '{mod}' does not import: {why[:200]}",
                    hint=f"pip's log: {pip_log}; report the platform with `edgeconv doctor`")
            seconds = time.perf_counter() - t0
            record = {"name": spec.name, "key": path.name.rsplit("-", 1)[-1], "spec": spec.to_dict(),
                      "python": checked["python"], "base_python": py, "machine": machine,
                      "created": datetime.now(UTC).isoformat(timespec="seconds"),
                      "create_seconds": round(seconds, 1), "bytes": tree_bytes(path), "versions": checked["versions"],
                      "pip_log": str(pip_log)}
            tmp = path / (RECORD + ".tmp")
            tmp.write_text(json.dumps(record, indent=1))
            os.replace(tmp, path / RECORD)
        except BaseException:
            shutil.rmtree(path, ignore_errors=True)
            raise
    console.print(f"edgeconv: backend environment '{spec.name}' ready in {seconds:.0f} s "
                  f"({record['bytes'] / 2**30:.2f} GiB)", markup=False, highlight=False, soft_wrap=True)
    return BackendEnv(spec, path, record)


def _stream_target(quiet: bool) -> Any:
    """pip's output goes to our stderr (stdout stays machine-readable), so a terminal shows its progress bars."""
    if quiet:
        return subprocess.DEVNULL
    try:
        return sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):
        return subprocess.DEVNULL


def _run_step(spec: EnvSpec, argv: list[str], what: str, quiet: bool, pip_log: Path) -> None:
    target = _stream_target(quiet)
    try:
        done = subprocess.run(argv, stdout=target, stderr=subprocess.PIPE, text=True, timeout=CREATE_TIMEOUT_S,
                              check=False)
    except subprocess.TimeoutExpired as e:
        raise MissingDependencyError(f"backend environment '{spec.name}': {what} did not finish in "
                                     f"{CREATE_TIMEOUT_S:.0f} s", hint=f"pip's log: {pip_log}") from e
    except OSError as e:
        raise MissingDependencyError(f"backend environment '{spec.name}': cannot run {argv[0]}: {e}",
                                     hint="set EDGECONV_ENV_PYTHON to a working python3") from e
    if done.returncode == 0:
        return
    if not quiet and done.stderr and target != subprocess.DEVNULL:
        sys.stderr.write(done.stderr)
    text = done.stderr + (pip_log.read_text(errors="replace") if pip_log.is_file() else "")
    if what.startswith("python -m venv"):
        raise MissingDependencyError(
            f"backend environment '{spec.name}': `python -m venv` failed: {_last_error(done.stderr)}",
            hint="install the interpreter's venv module (Debian/Ubuntu: apt-get install python3-venv) "
                 "or set EDGECONV_ENV_PYTHON")
    package, reason = pip_failure(text)
    raise MissingDependencyError(
        f"backend environment '{spec.name}' could not be created: {package or 'pip'}: {reason}",
        hint=f"provide the wheels: pip download -d DIR {' '.join(spec.all_requirements())} (on a connected machine "
             f"with the same Python/OS), then EDGECONV_WHEELHOUSE=DIR or `edgeconv env create {spec.name} "
             f"--find-links DIR`; pip's log: {pip_log}")


_NO_DIST = re.compile(r"(?:No matching distribution found for|Could not find a version that satisfies the "
                      r"requirement)\s+(\S+)")
_NETWORK = ("Failed to establish a new connection", "Temporary failure in name resolution", "Network is unreachable",
            "NewConnectionError", "Max retries exceeded", "ConnectTimeoutError", "ProxyError")


def pip_failure(text: str) -> tuple[str | None, str]:
    """(the requirement pip failed on, why) from pip's output and log, in words a user can act on."""
    m = _NO_DIST.search(text)
    offline = any(s in text for s in _NETWORK)
    if m:
        pkg = m.group(1).rstrip(")")
        why = ("no network and no local wheel" if offline else
               "no wheel or version that fits this Python/platform was found (offline, or none published)")
        return pkg, why
    if offline:
        return None, "the package index is unreachable (offline?)"
    m = re.search(r"ERROR: Could not install packages due to an? (\w+Error): ?(.*)", text)
    if m:
        return None, f"{m.group(1)}: {m.group(2)[:160]}"
    return None, _last_error(text)


def _last_error(text: str) -> str:
    lines = [x.strip() for x in text.splitlines() if x.strip()]
    errs = [x for x in lines if x.startswith("ERROR")]
    return ((errs or lines or ["failed without output"])[-1])[:240]


def check_python(python: str, spec: EnvSpec) -> dict[str, Any]:
    """Import ``spec.imports`` with the environment's interpreter; report its versions of ``spec.versions_of``."""
    argv = [python, "-c", _CHECK, json.dumps(list(spec.imports)), json.dumps(list(spec.versions_of))]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=CHECK_TIMEOUT_S, check=False,
                              env={**os.environ, "PYTHONNOUSERSITE": "1"})
    except (OSError, subprocess.SubprocessError) as e:
        return {"python": None, "failed": {"python": f"{type(e).__name__}: {e}"}, "versions": {}}
    try:
        return json.loads(done.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return {"python": None, "failed": {"python": _last_error(done.stderr)}, "versions": {}}


def tree_bytes(path: Path) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(root, f)).st_size
    return total


def status(spec: EnvSpec, *, deep: bool = False, python: str | None = None) -> dict[str, Any]:
    """What doctor shows: exists, where, size, versions; ``deep`` also imports the toolkit in it (seconds)."""
    try:
        path = env_path(spec, python)
    except ConfigError as e:
        return {"name": spec.name, "exists": False, "ok": False, "problem": e.message, "path": None}
    env = locate(spec, python)
    out: dict[str, Any] = {"name": spec.name, "path": str(path), "exists": env is not None,
                           "requirements": spec.all_requirements()}
    if env is None:
        out.update(ok=False, problem=f"not created yet (edgeconv env create {spec.name}; made on first use)")
        return out
    rec = env.record
    out.update(ok=True, problem=None, python=rec.get("python"), created=rec.get("created"),
               create_seconds=rec.get("create_seconds"), bytes=rec.get("bytes"), versions=rec.get("versions"))
    if deep:
        checked = check_python(env.python, spec)
        if checked["failed"]:
            mod, why = next(iter(checked["failed"].items()))
            out.update(ok=False, problem=f"'{mod}' no longer imports: {why[:200]} (edgeconv env create "
                                         f"{spec.name} --force rebuilds it)")
        else:
            out["versions"] = checked["versions"]
    return out


def remove(spec: EnvSpec, python: str | None = None) -> Path | None:
    path = env_path(spec, python)
    if not path.exists():
        return None
    with _lock(path.with_name(path.name + ".lock")):
        shutil.rmtree(path, ignore_errors=True)
    return path
