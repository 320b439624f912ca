"""The emulated ARM64 board: a Debian bookworm arm64 root with Python 3.11 and the aarch64 wheels, run under qemu-user.

Why this shape:

- The root is made by ``debootstrap --foreign --arch=arm64`` (download + first unpack, done on the host) and
  finished by unpacking every fetched package with the host's ``dpkg-deb``; maintainer scripts are not run.  The
  usual second stage runs *inside* the root, which needs a registered qemu binfmt handler: that takes root, a
  mounted ``binfmt_misc`` and changes a kernel-global table for everyone on the machine.  Python needs none of
  what the maintainer scripts do, so the board is built and run without binfmt.
- The worker runs as ``qemu-aarch64-static -cpu MODEL -L ROOT ROOT/usr/bin/python3.11``: ``-L`` makes the dynamic
  loader, libc and every library resolve inside the root.  ``-cpu`` picks the emulated CPU's features (the
  kernels ncnn/XNNPACK/ORT dispatch on): ``cortex-a76`` is a Raspberry Pi 5 (fp16 arithmetic, dot product, no
  i8mm); ``max`` adds i8mm/bf16/SVE.
- The wheels (PyPI's manylinux aarch64 builds, the versions installed on the host where they work under this
  qemu) are installed by the host's pip with ``--platform``/``--target`` into ``ROOT/opt/edgeconv/site``: the same
  files ``pip install`` on a Pi would fetch, without running pip under emulation.
- ``/proc/cpuinfo`` under qemu-user is the *host's* (x86) text, and pytorch/cpuinfo (inside onnxruntime >= 1.28 and
  LiteRT's XNNPACK) dereferences NULL on it: ORT 1.32 segfaults at import, LiteRT at ``allocate_tensors``.
  debootstrap leaves ``ROOT/proc`` as a symlink to the host's ``/proc``; the build replaces it with a folder holding
  a synthetic ARM ``cpuinfo`` (Cortex-A76 MIDR, one entry per host CPU, which is what ``-L`` serves to the guest).
  The ISA features those libraries dispatch on still come from ``-cpu`` through AT_HWCAP, not from this text.
  Should a runtime still not import, the build falls back to older versions listed in the spec and records which
  it used and why in ``board.json``.

Built once into ``$EDGECONV_BOARDS`` (default ``~/.cache/edgeconv-boards``; outside the artifact cache, which tests
and users wipe, because the board is ~550 MB and independent of every model), atomically, reused afterwards.
Latency measured on it is emulated: it says nothing about hardware.
"""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeconv.core.console import log, status
from edgeconv.core.errors import MissingDependencyError
from edgeconv.core.lazy import version
from edgeconv.devices.config import DeviceError


@dataclass(frozen=True)
class BoardSpec:
    name: str
    debian_arch: str
    qemu: str
    suite: str
    python: str  # inside the root
    packages: tuple[str, ...]
    wheel_platforms: tuple[str, ...]
    #: pip distribution -> import name (smoke-tested under qemu after install)
    runtimes: dict[str, str]
    #: distribution -> versions to try, newest first, when the host's version does not import under qemu
    fallbacks: dict[str, tuple[str, ...]]


_GLIBC_TAGS = ("2_17", "2_24", "2_26", "2_27", "2_28", "2_31", "2_34", "2_35", "2_36")  # bookworm: glibc 2.36
SPECS = {
    "arm64": BoardSpec(
        name="arm64", debian_arch="arm64", qemu="qemu-aarch64-static", suite="bookworm", python="/usr/bin/python3.11",
        packages=("python3",),
        wheel_platforms=("manylinux2014_aarch64", *(f"manylinux_{t}_aarch64" for t in _GLIBC_TAGS)),
        runtimes={"numpy": "numpy", "ncnn": "ncnn", "onnxruntime": "onnxruntime", "ai-edge-litert": "ai_edge_litert",
                  "mnn": "MNN"},
        fallbacks={"onnxruntime": ("1.27.0", "1.26.0", "1.23.2")},
    ),
}
SITE = "opt/edgeconv/site"
META = "board.json"


def boards_root() -> Path:
    root = os.environ.get("EDGECONV_BOARDS")
    return Path(root).expanduser() if root else Path.home() / ".cache" / "edgeconv-boards"


@dataclass(frozen=True)
class Board:
    """A built board on disk: ``<boards_root>/<name>/root`` plus ``board.json``."""

    name: str
    home: Path

    @property
    def root(self) -> Path:
        return self.home / "root"

    @property
    def spec(self) -> BoardSpec:
        return SPECS[self.name]

    @property
    def meta(self) -> dict[str, Any]:
        try:
            return json.loads((self.home / META).read_text())
        except (OSError, json.JSONDecodeError):
            return {}

    @property
    def built(self) -> bool:
        return bool(self.meta.get("complete"))

    def qemu(self) -> str:
        exe = shutil.which(self.spec.qemu)
        if exe is None:
            raise MissingDependencyError(f"{self.spec.qemu} is not installed (needed to run the emulated board)",
                                         hint="apt-get install qemu-user-static (scripts/ci-system-deps.sh)")
        return exe

    def python_argv(self, cpu: str = "max", python: str | None = None) -> list[str]:
        return [self.qemu(), "-cpu", cpu, "-L", str(self.root), str(self.root) + (python or self.spec.python)]

    def env(self) -> dict[str, str]:
        """A clean environment: nothing of the host's Python (PYTHONPATH, venv) may leak into the board's."""
        return {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(self.root / "root"), "LANG": "C.UTF-8",
                "PYTHONPATH": str(self.root / SITE), "PYTHONNOUSERSITE": "1", "PYTHONDONTWRITEBYTECODE": "1"}


CPUINFO_FEATURES = "fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp"


def host_cpu_count() -> int:
    """CPUs as the guest's libraries count them (/sys/devices/system/cpu/possible is the host's under qemu-user)."""
    try:
        n = 0
        for part in Path("/sys/devices/system/cpu/possible").read_text().strip().split(","):
            lo, _, hi = part.partition("-")
            n += int(hi or lo) - int(lo) + 1
        return n
    except (OSError, ValueError):
        return os.cpu_count() or 1


def synthetic_cpuinfo(n: int) -> str:
    """An aarch64 /proc/cpuinfo (Cortex-A76 r4p1, as on a Raspberry Pi 5) with ``n`` processors."""
    entry = ("processor\t: {i}\nBogoMIPS\t: 108.00\nFeatures\t: " + CPUINFO_FEATURES + "\nCPU implementer\t: 0x41\n"
             "CPU architecture: 8\nCPU variant\t: 0x4\nCPU part\t: 0xd0b\nCPU revision\t: 1\n\n")
    return "".join(entry.format(i=i) for i in range(n))


def ensure_cpuinfo(root: Path) -> None:
    """Make ``ROOT/proc/cpuinfo`` the synthetic listing for this host's CPU count (atomic; a no-op when current)."""
    proc = root / "proc"
    if proc.is_symlink():
        proc.unlink()
    proc.mkdir(exist_ok=True)
    text = synthetic_cpuinfo(host_cpu_count())
    f = proc / "cpuinfo"
    try:
        if f.read_text() == text:
            return
    except OSError:
        pass
    tmp = proc / f".cpuinfo.{os.getpid()}"
    tmp.write_text(text)
    os.replace(tmp, f)


def board_for(name: str) -> Board:
    """The built board ``name``; a DeviceError saying how to build it when it is not there."""
    if name not in SPECS:
        raise DeviceError(f"no emulated board '{name}'", hint=f"boards: {', '.join(SPECS)}")
    b = Board(name, boards_root() / name)
    if not b.built:
        raise DeviceError(f"the emulated {name} board is not built (looked in {b.home})",
                          hint=f"edgeconv devices create-emulated {name} (about a minute; root needed for debootstrap)")
    return b


def debian_mirror() -> str | None:
    """The Debian mirror this machine's apt uses ($EDGECONV_DEBIAN_MIRROR first); None: debootstrap's default."""
    if os.environ.get("EDGECONV_DEBIAN_MIRROR"):
        return os.environ["EDGECONV_DEBIAN_MIRROR"]
    texts = []
    for p in [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]:
        try:
            texts.append(p.read_text())
        except OSError:
            continue
    for text in texts:
        for m in re.finditer(r"^\s*(?:URIs:\s*|deb\s+(?:\[[^\]]*\]\s+)?)(\S+)", text, re.M):
            uri = m.group(1)
            if uri.rstrip("/").endswith("/debian"):
                return uri
    return None


def _run(argv: list[str], what: str, timeout: float, env: dict[str, str] | None = None) -> str:
    try:
        p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env, check=False)
    except subprocess.TimeoutExpired as e:
        raise DeviceError(f"board build: {what} did not finish within {timeout:.0f} s") from e
    if p.returncode != 0:
        tail = " ".join((p.stderr or p.stdout).strip().splitlines()[-1:])[:300]
        raise DeviceError(f"board build: {what} failed (exit {p.returncode}): {tail}")
    return p.stdout


def _preflight(spec: BoardSpec) -> None:
    missing = [t for t in ("debootstrap", spec.qemu, "dpkg-deb", "tar") if shutil.which(t) is None]
    if missing:
        raise MissingDependencyError(f"building the emulated board needs {', '.join(missing)}",
                                     hint="apt-get install debootstrap qemu-user-static (scripts/ci-system-deps.sh)")
    if hasattr(os, "geteuid") and os.geteuid() != 0:
        raise DeviceError("building the emulated board needs root (debootstrap creates device nodes and owners)",
                          hint="run `edgeconv devices create-emulated` as root once; running the board needs no root")


def smoke(board: Board, modules: list[str], cpu: str = "max") -> dict[str, str | None]:
    """Import each module under qemu; module -> None when it imports, else the one-line reason."""
    out: dict[str, str | None] = {}
    for m in modules:
        try:
            p = subprocess.run([*board.python_argv(cpu), "-c", f"import {m}"], capture_output=True, text=True,
                               timeout=300, env=board.env(), check=False)
            lines = (p.stderr or "").strip().splitlines()
            out[m] = None if p.returncode == 0 else (lines[-1] if lines else f"exit code {p.returncode}")[:200]
        except subprocess.TimeoutExpired:
            out[m] = "import did not finish within 300 s"
    return out


def _pip_target(spec: BoardSpec, site: Path, reqs: list[str], *, no_deps: bool = False) -> None:
    argv = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-warn-conflicts",
            "--upgrade", "--target", str(site), "--only-binary=:all:", "--python-version", "3.11",
            "--implementation", "cp", "--abi", "cp311", "--abi", "abi3", "--abi", "none"]
    for p in spec.wheel_platforms:
        argv += ["--platform", p]
    if no_deps:
        argv.append("--no-deps")
    _run(argv + reqs, f"pip install {' '.join(reqs)}", 1800)


def create_board(name: str = "arm64", *, force: bool = False, mirror: str | None = None) -> Board:
    """Build the board (or return the built one): debootstrap, unpack, aarch64 wheels, smoke test, board.json."""
    if name not in SPECS:
        raise DeviceError(f"no emulated board '{name}'", hint=f"boards: {', '.join(SPECS)}")
    spec = SPECS[name]
    board = Board(name, boards_root() / name)
    if board.built and not force:
        log.info("emulated %s board already built in %s (built %s; --force rebuilds)", name, board.home,
                 board.meta.get("built"))
        return board
    _preflight(spec)
    board.home.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=board.home.parent))
    work = Board(name, tmp)
    timings: dict[str, float] = {}
    t_all = time.perf_counter()
    log.warning("building the emulated %s board in %s (first time only; about a minute plus downloads)", name,
                board.home)
    try:
        mirror = mirror or debian_mirror()
        t0 = time.perf_counter()
        with status(f"debootstrap {spec.suite} {spec.debian_arch} (download + first stage)"):
            _run(["debootstrap", "--foreign", f"--arch={spec.debian_arch}", "--variant=minbase",
                  f"--include={','.join(spec.packages)}", spec.suite, str(work.root), *([mirror] if mirror else [])],
                 "debootstrap", 1800)
        timings["debootstrap"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        debs = sorted((work.root / "var/cache/apt/archives").glob("*.deb"))
        with status(f"unpacking {len(debs)} packages"):
            for deb in debs:
                try:
                    data = subprocess.run(["dpkg-deb", "--fsys-tarfile", str(deb)], capture_output=True,
                                          check=True).stdout
                    subprocess.run(["tar", "-x", "--keep-directory-symlink", "-C", str(work.root), "-f", "-"],
                                   input=data, capture_output=True, check=True)
                except subprocess.CalledProcessError as e:
                    why = (e.stderr or b"").decode(errors="replace").strip().splitlines()[-1:] or [str(e)]
                    raise DeviceError(f"board build: unpacking {deb.name} failed: {why[0][:200]}") from e
                deb.unlink()
        timings["unpack"] = time.perf_counter() - t0
        ensure_cpuinfo(work.root)
        if not (work.root / spec.python.lstrip("/")).is_file():
            raise DeviceError(f"board build: {spec.python} is missing from the unpacked root")
        t0 = time.perf_counter()
        site = work.root / SITE
        reqs = [f"{d}=={version(d)}" if version(d) else d for d in spec.runtimes]
        with status(f"installing aarch64 wheels: {', '.join(reqs)}"):
            _pip_target(spec, site, reqs)
        timings["wheels"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        with status("smoke-testing the runtimes under qemu"):
            failed = smoke(work, list(spec.runtimes.values()))
            notes: dict[str, str] = {}
            for dist, mod in spec.runtimes.items():
                if failed.get(mod) is None or dist not in spec.fallbacks:
                    continue
                for v in spec.fallbacks[dist]:
                    _pip_target(spec, site, [f"{dist}=={v}"], no_deps=True)
                    if smoke(work, [mod])[mod] is None:
                        notes[dist] = (f"{dist} {version(dist)} does not import under this qemu ({failed[mod]}); "
                                       f"using {v}")
                        log.warning("%s", notes[dist])
                        failed[mod] = None
                        break
        timings["smoke"] = time.perf_counter() - t0
        installed = {d: _site_version(site, d) for d in spec.runtimes}
        meta = {"complete": True, "name": name, "suite": spec.suite, "arch": spec.debian_arch, "python": spec.python,
                "built": time.strftime("%Y-%m-%dT%H:%M:%S"), "host": platform.node(),
                "qemu": _run([shutil.which(spec.qemu) or spec.qemu, "--version"], "qemu --version", 30).split("\n")[0],
                "wheels": installed, "host_versions": {d: version(d) for d in spec.runtimes},
                "unusable": {m: why for m, why in failed.items() if why}, "notes": notes,
                "seconds": {k: round(v, 1) for k, v in {**timings, "total": time.perf_counter() - t_all}.items()},
                "bytes": sum(f.stat().st_size for f in work.root.rglob("*") if f.is_file() and not f.is_symlink())}
        (tmp / META).write_text(json.dumps(meta, indent=2))
        if board.home.exists():
            shutil.rmtree(board.home)
        os.replace(tmp, board.home)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("emulated %s board built in %.0f s (%s)", name, meta["seconds"]["total"],
             ", ".join(f"{d} {v}" for d, v in installed.items()))
    for m, why in meta["unusable"].items():
        log.warning("runtime %s does not work on the board: %s", m, why)
    return board


def _site_version(site: Path, dist: str) -> str | None:
    norm = dist.replace("-", "_").lower()
    for d in site.glob("*.dist-info"):
        n, _, v = d.name[: -len(".dist-info")].rpartition("-")
        if n.lower() == norm:
            return v
    return None
