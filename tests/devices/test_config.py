"""Device definitions, the CLI group, adb command construction and the shared latency method (no device needed)."""

from __future__ import annotations

import json
import shlex

import numpy as np
import pytest
from click.testing import CliRunner

from edgeconv.core.errors import ConfigError
from edgeconv.devices import devices_serving, list_devices, load_device
from edgeconv.devices.adb import AdbTransport
from edgeconv.devices.config import device_from_dict


def test_bundled_devices_load_and_the_pi_profile_has_a_device():
    devs = list_devices()
    assert {"local", "arm64-emulated"} <= set(devs)
    emu = devs["arm64-emulated"]
    assert emu.transport == "qemu" and emu.emulated and emu.cpu == "cortex-a76"
    assert next(d.name for d in devices_serving("raspberry-pi-5")) == "arm64-emulated"


def test_user_device_dir_wins(tmp_path, monkeypatch):
    (tmp_path / "pi.toml").write_text('transport = "ssh"\nhost = "pi.local"\nuser = "pi"\n'
                                      'serves = ["raspberry-pi-5"]\n')
    monkeypatch.setenv("EDGECONV_DEVICES", str(tmp_path))
    assert load_device("pi").address == "pi@pi.local:22"
    assert next(d.name for d in devices_serving("raspberry-pi-5")) == "pi"  # real hardware before emulation
    assert load_device(str(tmp_path / "pi.toml")).name == "pi"


@pytest.mark.parametrize(("data", "msg"), [
    ({"transport": "ssh"}, "needs host"),
    ({"transport": "serial"}, "transport must be one of"),
    ({"transport": "local", "thread": 2}, "unknown key"),
    ({"transport": "local", "threads": "4"}, "'threads' must be int"),
    ({"transport": "local", "affinity": [0, -1]}, "CPU numbers"),
    ({"transport": "qemu"}, "needs board"),
])
def test_bad_definitions_are_config_errors(data, msg):
    with pytest.raises(ConfigError, match=msg):
        device_from_dict(data, "bad.toml")


def test_unknown_key_suggests_the_right_one():
    with pytest.raises(ConfigError) as e:
        device_from_dict({"transport": "local", "thread": 2}, "x.toml")
    assert "threads" in e.value.hint


def test_unknown_device_names_the_known_ones():
    with pytest.raises(ConfigError) as e:
        load_device("no-such-device")
    assert "arm64-emulated" in e.value.hint


def test_adb_command_construction():
    """No phone is reachable here: the adb transport is tested by the command lines it builds."""
    cmd = AdbTransport.command(["/data/data/com.termux/files/usr/bin/python", "/data/local/tmp/edgeconv/w.py",
                                "job dir/job.json"], {"PYTHONUNBUFFERED": "1", "LD_LIBRARY_PATH": "/x y"},
                               cwd="/data/local/tmp/edgeconv")
    assert cmd.startswith("cd /data/local/tmp/edgeconv && env ")
    words = shlex.split(cmd.split(" && ", 1)[1])
    assert words[:3] == ["env", "PYTHONUNBUFFERED=1", "LD_LIBRARY_PATH=/x y"]
    assert words[-1] == "job dir/job.json"  # quoted, one word
    assert AdbTransport.command(["ls"]) == "ls"
    dev = device_from_dict({"name": "phone", "transport": "adb", "serial": "R58M", "python": "/p/python"})
    t = AdbTransport(dev)
    assert t.workdir() == "/data/local/tmp/edgeconv" and t.python_argv() == ["/p/python"]
    assert dev.address == "adb:R58M"


def test_latency_core_is_the_bench_method():
    """The device worker's copy of the method gives the host harness's numbers on the same samples."""
    from edgeconv.bench import latency as host
    from edgeconv.devices import latency_core as dev

    for n in (1, 5, 6, 7, 50, 101, 1000):
        assert dev.median_ci_ranks(n) == host.median_ci_ranks(n)
    x = np.random.default_rng(0).lognormal(1.0, 0.4, 257)
    assert dev.summarize(x) == host.summarize(x)
    assert dev.config({}) == host.LatencyConfig().to_dict()
    assert dev.config({"min_iters": 7, "junk": 1})["min_iters"] == 7


def test_cli_list_and_check_local(tmp_path, monkeypatch):
    from edgeconv.devices.cli import COMMANDS

    (group,) = COMMANDS
    r = CliRunner().invoke(group, ["list", "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["arm64-emulated"]["transport"] == "qemu"
    (tmp_path / "here.toml").write_text(f'transport = "local"\nworkdir = "{tmp_path / "w"}"\n'
                                        'runtimes = ["numpy", "no_such_runtime_xyz"]\n')
    r = CliRunner().invoke(group, ["check", str(tmp_path / "here.toml"), "--json"])
    assert r.exit_code == 8  # a listed runtime is missing
    rec = json.loads(r.output)[0]
    assert rec["reachable"] and rec["probe"]["runtimes"]["numpy"]["ok"]
    assert any("no_such_runtime_xyz" in p for p in rec["problems"])
