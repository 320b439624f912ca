"""Fixtures for device tests: small artifacts of every worker backend, a throwaway sshd on 127.0.0.1, the board."""

from __future__ import annotations

import importlib.util
import os
import shutil
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
    if importlib.util.find_spec("MNN"):
        arts["mnn"] = convert_reference(tiny_prepared, "mnn", out=out / "mnn", precision="fp32").path
    return arts


@pytest.fixture
def local_device(tmp_path) -> Device:
    return device_from_dict({"name": "test-local", "transport": "local", "workdir": str(tmp_path / "dev")})


@pytest.fixture(scope="session")
def sshd(tmp_path_factory):
    """A real OpenSSH server (Debian's openssh-server) on 127.0.0.1 only, key auth only, stopped at the end."""
    from edgeconv.devices.loopback import loopback_sshd, sshd_path

    if sshd_path() is None or shutil.which("ssh-keygen") is None:
        pytest.skip("openssh-server is not installed (scripts/ci-system-deps.sh installs it)")
    pytest.importorskip("asyncssh", reason="the ssh transport uses asyncssh (pip install 'edgeconv[devices]')")
    with loopback_sshd(tmp_path_factory.mktemp("sshd")) as info:
        yield info


@pytest.fixture
def ssh_device(sshd, tmp_path) -> Device:
    from edgeconv.devices.loopback import loopback_device

    return loopback_device(sshd, tmp_path / "sshdev", name="test-ssh")


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
                             "runtimes": ["numpy", "ncnn", "onnxruntime", "ai_edge_litert", "MNN"]})
