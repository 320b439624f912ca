"""``edgeconv run --farm``: the argument handling (fast), and a real matrix through the CLI on a local multi-node Ray
cluster (``ray.cluster_utils.Cluster``: two worker nodes advertising different devices), where one node is lost
mid-row and only its row fails."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
FAST = {"min_iters": 5, "min_seconds": 0.05, "warmup_min_iters": 1, "warmup_max_seconds": 0.2, "threads": 1,
        "timeout": 120}


def _suite(tmp: Path, onnx: Path, targets: list[dict]) -> Path:
    """A run config as a user writes it (TOML), next to the device files it names."""
    lines = [f'[model]\nmodel = "{onnx}"\nname = "tiny"\n', "[data]\nlimit = 2\n", "[bench]"]
    lines += [f"{k} = {json.dumps(v)}" for k, v in FAST.items()]
    for t in targets:
        lines.append("\n[[targets]]")
        lines += [f"{k} = {json.dumps(v)}" for k, v in t.items()]
    p = tmp / "suite.toml"
    p.write_text("\n".join(lines) + "\n")
    return p


def _run(args: list[str]):
    from edgeconv.cli import main

    return CliRunner().invoke(main, ["run", *args])


@pytest.mark.parametrize("value", ["ray:/head", "http://head:10001", "head:99999", "", "ray://:10001"])
def test_bad_farm_value_is_a_one_line_config_error(tmp_path, value):
    suite = _suite(tmp_path, tmp_path / "missing.onnx", [{"profile": "onnxruntime", "device": "local"}])
    res = _run([str(suite), "--out", str(tmp_path / "r"), "--farm", value])
    assert res.exit_code == 2, res.output
    err = res.stderr.strip().splitlines()
    assert err[0].startswith("config error: --farm") and "is not a Ray farm address" in err[0]
    assert "ray://" in err[1]  # the hint shows the accepted forms
    assert not (tmp_path / "r").exists()  # nothing was converted


def test_farm_without_ray_installed_exits_7(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError, as on a machine without it
    suite = _suite(tmp_path, tmp_path / "missing.onnx", [{"profile": "onnxruntime", "device": "local"}])
    res = _run([str(suite), "--out", str(tmp_path / "r"), "--farm", "local"])
    assert res.exit_code == 7, res.output
    assert "'ray' is not installed" in res.stderr and "edgeconv[devices]" in res.stderr


@pytest.mark.parametrize("value", ["local", "auto", "ray://head.example:10001", "10.0.0.5:6379", "[::1]:6379"])
def test_good_farm_values_are_accepted(value):
    pytest.importorskip("ray", reason="the farm runs on Ray")
    from edgeconv.devices.farm import check_farm

    assert check_farm(f" {value} ") == value


# --- a real farm -----------------------------------------------------------------------------------------------------


@pytest.fixture(params=["gcs", "client"])
def cluster(request):
    """A head (no device) and two worker nodes; joined by its GCS address or through Ray Client (``ray://``)."""
    ray = pytest.importorskip("ray", reason="the farm runs on Ray (pip install 'edgeconv[devices]')")
    from ray.cluster_utils import Cluster

    head: dict = {"num_cpus": 0, "include_dashboard": False}
    if request.param == "client":
        pytest.importorskip("grpc", reason="Ray Client needs pip install 'ray[client]'")
        import socket

        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            head["ray_client_server_port"] = sock.getsockname()[1]
    c = Cluster(initialize_head=True, head_node_args=head)
    nodes = {n: c.add_node(num_cpus=1, resources={f"device:{n}": 1}) for n in ("farm-a", "farm-b")}
    c.wait_for_nodes()
    address = f"ray://127.0.0.1:{head['ray_client_server_port']}" if request.param == "client" else c.address
    try:
        yield c, nodes, address
    finally:
        if ray.is_initialized():
            ray.shutdown()
        c.shutdown()


@pytest.mark.slow
def test_cli_farm_runs_each_row_on_its_device_node_and_a_lost_node_fails_only_its_row(cluster, tiny_onnx, tmp_path):
    import ray

    c, nodes, address = cluster
    # farm-b's Python sleeps before a benchmark job (a verification on the device, were one run, skips latency): its
    # node is removed while that row runs on the farm
    slow = tmp_path / "slowpython"
    slow.write_text(f"#!/bin/sh\nif grep -q '\"skip_latency\": false' \"$2\"; then\n"
                    f"  echo $$ > {tmp_path / 'slow.pid'}; sleep 20\nfi\nexec {sys.executable} \"$@\"\n")
    slow.chmod(0o755)
    for n, extra in (("farm-a", ""), ("farm-b", f'python = "{slow}"\n')):
        (tmp_path / f"{n}.toml").write_text(f'name = "{n}"\ntransport = "local"\nworkdir = "{tmp_path / n}"\n'
                                            + extra)
    for prof in ("ort-b", "ort-host"):
        (tmp_path / f"{prof}.toml").write_text('backend = "onnxruntime"\nprecision = "fp32"\n')
    targets = [{"profile": "onnxruntime", "precisions": ["fp32"], "device": str(tmp_path / "farm-a.toml")},
               {"profile": str(tmp_path / "ort-b.toml"), "device": str(tmp_path / "farm-b.toml")},
               {"profile": str(tmp_path / "ort-host.toml")}]  # no device: measured on the host, as without
    suite = _suite(tmp_path, tiny_onnx, targets)

    def lose_b_mid_row() -> None:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            if (tmp_path / "slow.pid").is_file():  # farm-b's row is running on farm-b's node
                c.remove_node(nodes["farm-b"])
                return
            time.sleep(0.2)

    killer = threading.Thread(target=lose_b_mid_row, daemon=True)
    killer.start()
    try:
        res = _run([str(suite), "--out", str(tmp_path / "r"), "--farm", address, "--json"])
    finally:
        killer.join(5)
        if (tmp_path / "slow.pid").is_file():  # the lost node's orphaned job: its own session, so its group
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.killpg(int((tmp_path / "slow.pid").read_text()), signal.SIGKILL)
    assert not ray.is_initialized()  # the CLI joined the cluster and left it
    assert res.exit_code == 0, res.output  # a failed row is in the report; no --fail-on gate asked
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    rows = {(r["profile"], r["precision"]): r for r in report["results"]}
    a, b, host = rows[("onnxruntime", "fp32")], rows[("ort-b", "fp32")], rows[("ort-host", "fp32")]
    assert a["status"] == "ok" and a["device"] == "farm-a" and a["drift"]["pass"], a.get("error")
    assert a["latency_ms"]["n"] >= 5 and a["farm"]["node"] and a["farm"]["address"] == address
    assert a["wall_seconds"]["bench"] > 0
    assert a["farm"]["node"] == nodes["farm-a"].node_id  # placed on the node advertising its device
    assert b["status"] == "failed" and "lost" in b["error"] and "\n" not in b["error"] and b["stage"] == "bench"
    assert host["status"] == "ok" and "farm" not in host and "device" not in host
    # the same form as a row measured directly on a device (no farm): every field of one is in the other
    direct = _run([str(_suite(tmp_path, tiny_onnx, targets[:1])), "--out", str(tmp_path / "direct"), "--json"])
    assert direct.exit_code == 0, direct.output
    d = json.loads((tmp_path / "direct" / "report.json").read_text())["results"][0]
    assert set(a) - {"farm"} == set(d) and d["device"] == "farm-a"



def test_a_farm_measurement_is_scored_not_run_again(tmp_path):
    """Within ``measured``, the device seam bench_artifact calls returns the farm's record for that row, once."""
    from edgeconv.devices import run_device_worker
    from edgeconv.devices.config import device_from_dict
    from edgeconv.devices.farm import measured

    dev = device_from_dict({"name": "nowhere", "transport": "local", "python": "/nonexistent/python3",
                            "workdir": str(tmp_path / "d")})
    art = tmp_path / "art"
    art.mkdir()
    rec = ({"ok": True, "latency_ms": {"p50": 1.0}}, [{"out": None}])
    kw = {"device": dev, "threads": None, "latency": {}, "timeout": 5}
    with measured("nowhere", art, rec):
        assert run_device_worker(art, tmp_path / "feeds.npz", tmp_path, **kw) is rec
        again, outs = run_device_worker(art, tmp_path / "feeds.npz", tmp_path, **kw)  # taken once: runs now
    assert again["ok"] is False and outs is None and "\n" not in again["error"]
    other = device_from_dict({**dev.to_dict(), "name": "elsewhere"})
    with measured("nowhere", art, rec):
        assert run_device_worker(art, tmp_path / "feeds.npz", tmp_path, **{**kw, "device": other})[1] is None
