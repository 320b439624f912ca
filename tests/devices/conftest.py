"""Fixtures for device tests: small artifacts of every worker backend, a throwaway sshd on 127.0.0.1, the board."""

from __future__ import annotations

import getpass
import importlib.util
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from edgeconv.devices.config import Device, device_from_dict


@pytest.fixture(scope="session")
def device_arts(tiny_prepared, tmp_path_factory) -> dict[str, Path]:
    """One converted artifact per backend the device worker runs (whatever is installed here)."""
    from edgeconv.pipeline import convert_reference

    if importlib.util.find_spec("onnxruntime") is None:
        pytest.skip("onnxruntime runs the reference")
    out = tmp_path_factory.mktemp("device-arts")
    arts = {"onnxruntime": convert_reference(tiny_prepared, "onnxruntime", out=out / "ort", precision="fp32").path}
    # find_spec, not import: a runtime imported here would make the pipeline's forked conversion child unsafe
    if all(importlib.util.find_spec(m) for m in ("ncnn", "pnnx")):
        arts["ncnn"] = convert_reference(tiny_prepared, "ncnn", out=out / "ncnn", precision="fp16").path
    if all(importlib.util.find_spec(m) for m in ("ai_edge_litert", "litert_torch")):
        arts["tflite"] = convert_reference(tiny_prepared, "android-phone", out=out / "tflite", precision="fp32").path
    return arts


@pytest.fixture
def local_device(tmp_path) -> Device:
    return device_from_dict({"name": "test-local", "transport": "local", "workdir": str(tmp_path / "dev")})


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def sshd(tmp_path_factory):
    """A real OpenSSH server (Debian's openssh-server) on 127.0.0.1 only, key auth only, stopped at the end."""
    exe = shutil.which("sshd") or ("/usr/sbin/sshd" if os.path.exists("/usr/sbin/sshd") else None)
    if exe is None or shutil.which("ssh-keygen") is None:
        pytest.skip("openssh-server is not installed (scripts/ci-system-deps.sh installs it)")
    pytest.importorskip("asyncssh", reason="the ssh transport uses asyncssh (pip install 'edgeconv[devices]')")
    d = tmp_path_factory.mktemp("sshd")
    os.chmod(d, 0o700)
    for name in ("host_key", "client_key", "wrong_key"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / name)], check=True)
    shutil.copy(d / "client_key.pub", d / "authorized_keys")
    port = _free_port()
    (d / "sshd_config").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {d / 'host_key'}\nPidFile {d / 'sshd.pid'}\n"
        f"AuthorizedKeysFile {d / 'authorized_keys'}\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
        "PubkeyAuthentication yes\nUsePAM no\nStrictModes no\nPermitRootLogin prohibit-password\n"
        "Subsystem sftp internal-sftp\nLogLevel ERROR\nMaxStartups 50\n")
    host_pub = (d / "host_key.pub").read_text().split()
    (d / "known_hosts").write_text(f"[127.0.0.1]:{port} {host_pub[0]} {host_pub[1]}\n")
    if os.geteuid() == 0:
        os.makedirs("/run/sshd", exist_ok=True)  # privilege separation folder (the ssh service makes it at boot)
    proc = subprocess.Popen([exe, "-D", "-e", "-f", str(d / "sshd_config")], stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"sshd exited: {proc.stderr.read() if proc.stderr else ''}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            time.sleep(0.1)
    info = {"port": port, "dir": d, "user": getpass.getuser(), "key": d / "client_key",
            "wrong_key": d / "wrong_key", "known_hosts": d / "known_hosts"}
    yield info
    proc.terminate()
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.fixture
def ssh_device(sshd, tmp_path) -> Device:
    import sys

    return device_from_dict({"name": "test-ssh", "transport": "ssh", "host": "127.0.0.1", "port": sshd["port"],
                             "user": sshd["user"], "key": str(sshd["key"]), "known_hosts": str(sshd["known_hosts"]),
                             "python": sys.executable, "workdir": str(tmp_path / "sshdev"), "connect_timeout": 5})


@pytest.fixture(scope="session")
def arm64_board():
    """The emulated arm64 board, built once into $EDGECONV_BOARDS (default ~/.cache/edgeconv-boards) and reused.

    Building takes about a minute here (debootstrap download + unpack + wheels); it needs root, debootstrap and
    qemu-user-static, else the board tests skip with the reason."""
    from edgeconv.core.errors import EdgeconvError
    from edgeconv.devices.board import Board, boards_root, create_board

    b = Board("arm64", boards_root() / "arm64")
    if not b.built:
        if os.environ.get("EDGECONV_NO_BOARD_BUILD"):
            pytest.skip("the emulated board is not built and EDGECONV_NO_BOARD_BUILD is set")
        try:
            b = create_board("arm64")
        except EdgeconvError as e:
            pytest.skip(f"cannot build the emulated board here: {e.one_line()}")
    return b


@pytest.fixture
def board_device(arm64_board, tmp_path) -> Device:
    return device_from_dict({"name": "test-arm64", "transport": "qemu", "board": "arm64", "cpu": "cortex-a76",
                             "arch": "aarch64", "workdir": str(tmp_path / "boardwork"),
                             "runtimes": ["numpy", "ncnn", "onnxruntime", "ai_edge_litert"]})
