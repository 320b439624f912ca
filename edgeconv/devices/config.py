"""Devices as data: ``devices/*.toml`` (or a user's own file), validated on load.

A device says how to reach a machine (transport and its address), which Python runs the worker there, the
architecture, threads/affinity, a working folder, the runtimes installed, and which target profiles it serves
(``serves = ["raspberry-pi-5"]``: verification and benchmarks of that profile may run there).  Validation is by hand
against one table of keys and types, as ``edgeconv/profiles.py`` does for profiles: a typo is a ConfigError naming
the valid keys, never a silently ignored setting.
"""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeconv.core.errors import ConfigError, EdgeconvError
from edgeconv.core.files import read_structured


class DeviceError(EdgeconvError):
    """A device could not run a job: unreachable, refused the key, lacks the runtime, the worker crashed or hung,
    or its result was malformed.  One line for that row; the rest of a run goes on."""

    exit_code = 8
    kind = "device"


class DeviceUnreachable(DeviceError):
    """The device did not answer (connection refused, timed out, no adb device): worth a retry elsewhere/later."""


TRANSPORTS = ("local", "ssh", "adb", "qemu")
#: key -> (types, default, help). One table: validation, `edgeconv devices list --json` and docs/devices.md.
KEYS: dict[str, tuple[tuple[type, ...], Any, str]] = {
    "name": ((str,), None, "device name (default: the file's stem)"),
    "description": ((str,), "", "one line"),
    "transport": ((str,), None, "local | ssh | adb | qemu"),
    "host": ((str,), None, "ssh: host name or address"),
    "user": ((str,), None, "ssh: login user"),
    "port": ((int,), 22, "ssh: port"),
    "key": ((str,), None, "ssh: private key file (key authentication only)"),
    "known_hosts": ((str,), None, "ssh: known_hosts file (default ~/.ssh/known_hosts); \"none\" skips the check"),
    "connect_timeout": ((int, float), 10.0, "seconds to wait for a connection"),
    "serial": ((str,), None, "adb: device serial (default: the only device attached)"),
    "board": ((str,), None, "qemu: emulated board name (built by `edgeconv devices create-emulated`)"),
    "cpu": ((str,), "max", "qemu: -cpu model (cortex-a76 for a Raspberry Pi 5)"),
    "python": ((str,), None, "Python on the device (default: python3; local: this interpreter)"),
    "arch": ((str,), None, "aarch64, x86_64, ... (checked by `edgeconv devices check`)"),
    "threads": ((int,), 0, "worker threads when the row does not say (0: the runtime's default)"),
    "affinity": ((list,), None, "CPU numbers the worker is pinned to (sched_setaffinity)"),
    "workdir": ((str,), None, "working folder on the device: the artifact cache and per-job folders live there"),
    "runtimes": ((list,), None, "Python modules expected to import there (numpy, ncnn, onnxruntime, ai_edge_litert)"),
    "serves": ((list,), None, "target profile names whose artifacts this device verifies and benchmarks"),
    "env": ((dict,), None, "extra environment variables for the worker"),
    "emulated": ((bool,), None, "latency is not the hardware's (default: true for qemu)"),
}
_REQUIRED = {"ssh": ("host",), "qemu": ("board",)}


@dataclass(frozen=True)
class Device:
    """One validated device definition."""

    name: str
    transport: str
    description: str = ""
    host: str | None = None
    user: str | None = None
    port: int = 22
    key: str | None = None
    known_hosts: str | None = None
    connect_timeout: float = 10.0
    serial: str | None = None
    board: str | None = None
    cpu: str = "max"
    python: str | None = None
    arch: str | None = None
    threads: int = 0
    affinity: tuple[int, ...] = ()
    workdir: str | None = None
    runtimes: tuple[str, ...] = ()
    serves: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    emulated: bool = False
    path: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain data (what a Ray task receives to rebuild the device on its node)."""
        d = {k: getattr(self, k) for k in KEYS if k != "emulated"}
        d.update(emulated=self.emulated, affinity=list(self.affinity), runtimes=list(self.runtimes),
                 serves=list(self.serves), env=dict(self.env))
        return {k: v for k, v in d.items() if v is not None}

    @property
    def address(self) -> str:
        """Where it is, in words (for messages)."""
        if self.transport == "ssh":
            return f"{self.user + '@' if self.user else ''}{self.host}:{self.port}"
        if self.transport == "adb":
            return f"adb:{self.serial or 'default'}"
        if self.transport == "qemu":
            return f"qemu-user {self.board} (-cpu {self.cpu})"
        return "this machine"


def device_from_dict(data: dict[str, Any], source: str = "<dict>") -> Device:
    """Validate ``data`` (a parsed TOML table) into a Device; every mistake is a ConfigError naming the key."""
    unknown = [k for k in data if k not in KEYS and k != "path"]
    if unknown:
        close = {k: difflib.get_close_matches(k, list(KEYS), n=1) for k in unknown}
        sug = "; ".join(f"{k} → {c[0]}?" for k, c in close.items() if c)
        raise ConfigError(f"device {source}: unknown key(s) {sorted(unknown)}",
                          hint=(sug + "; " if sug else "") + f"known keys: {', '.join(KEYS)}")
    for k, v in data.items():
        if k == "path":
            continue
        types = KEYS[k][0]
        if float in types and isinstance(v, int) and not isinstance(v, bool):
            continue
        if not isinstance(v, types) or (isinstance(v, bool) and bool not in types):
            raise ConfigError(f"device {source}: '{k}' must be {'/'.join(t.__name__ for t in types)}, "
                              f"not {type(v).__name__} ({v!r})", hint=f"{k}: {KEYS[k][2]}")
    transport = data.get("transport")
    if transport not in TRANSPORTS:
        raise ConfigError(f"device {source}: transport must be one of {', '.join(TRANSPORTS)}, not {transport!r}")
    missing = [k for k in _REQUIRED.get(transport, ()) if not data.get(k)]
    if missing:
        raise ConfigError(f"device {source}: a {transport} device needs {', '.join(missing)}",
                          hint=f"{missing[0]}: {KEYS[missing[0]][2]}")
    for k in ("affinity",):
        if data.get(k) is not None and not all(isinstance(c, int) and c >= 0 for c in data[k]):
            raise ConfigError(f"device {source}: '{k}' must be a list of CPU numbers")
    for k in ("runtimes", "serves"):
        if data.get(k) is not None and not all(isinstance(c, str) for c in data[k]):
            raise ConfigError(f"device {source}: '{k}' must be a list of names")
    if data.get("threads", 0) < 0 or not 0 < data.get("port", 22) < 65536:
        raise ConfigError(f"device {source}: threads must be >= 0 and port in 1..65535")
    env = {str(k): str(v) for k, v in (data.get("env") or {}).items()}
    name = data.get("name") or Path(source).stem
    return Device(name=name, transport=transport, description=data.get("description", ""), host=data.get("host"),
                  user=data.get("user"), port=int(data.get("port", 22)), key=data.get("key"),
                  known_hosts=data.get("known_hosts"), connect_timeout=float(data.get("connect_timeout", 10.0)),
                  serial=data.get("serial"), board=data.get("board"), cpu=data.get("cpu", "max"),
                  python=data.get("python"), arch=data.get("arch"), threads=int(data.get("threads", 0)),
                  affinity=tuple(data.get("affinity") or ()), workdir=data.get("workdir"),
                  runtimes=tuple(data.get("runtimes") or ()), serves=tuple(data.get("serves") or ()), env=env,
                  emulated=bool(data.get("emulated", transport == "qemu")), path=data.get("path", source))


def device_dirs() -> list[Path]:
    """Where named devices are looked up: $EDGECONV_DEVICES (os.pathsep list), then the bundled ``devices/``."""
    dirs = [Path(p).expanduser() for p in os.environ.get("EDGECONV_DEVICES", "").split(os.pathsep) if p]
    dirs.append(Path(__file__).resolve().parent.parent.parent / "devices")
    return dirs


def load_device_file(path: str | Path) -> Device:
    path = Path(path)
    data = read_structured(path, "device")
    return device_from_dict({**data, "path": str(path)}, str(path))


def list_devices() -> dict[str, Device]:
    """Every named device; an earlier folder in ``device_dirs()`` wins over a later one."""
    found: dict[str, Device] = {}
    for d in reversed(device_dirs()):
        if d.is_dir():
            for f in sorted(d.glob("*.toml")):
                dev = load_device_file(f)
                found[dev.name] = dev
    return dict(sorted(found.items()))


def load_device(name_or_path: str | Device) -> Device:
    """A device by name (``arm64-emulated``) or by path to a TOML file (``--device NAME|PATH``)."""
    if isinstance(name_or_path, Device):
        return name_or_path
    p = Path(name_or_path).expanduser()
    if p.suffix == ".toml" or os.sep in name_or_path:
        if not p.is_file():
            raise ConfigError(f"device file {name_or_path} does not exist")
        return load_device_file(p)
    devices = list_devices()
    if name_or_path in devices:
        return devices[name_or_path]
    raise ConfigError(f"unknown device '{name_or_path}'",
                      hint=f"known devices: {', '.join(devices) or 'none'}; or pass a device .toml path")


def devices_serving(profile: str) -> list[Device]:
    """The devices whose ``serves`` names ``profile`` (a real device listed before an emulated one)."""
    return sorted((d for d in list_devices().values() if profile in d.serves), key=lambda d: (d.emulated, d.name))
