"""The Ray farm on a real local multi-node cluster (ray.cluster_utils.Cluster): rows go to the node advertising
their device, one at a time per device; killing a node mid-row fails only that device's rows."""

from __future__ import annotations

import threading
import time

import pytest

ray = pytest.importorskip("ray", reason="the farm runs on Ray (pip install 'edgeconv[devices]')")

from ray.cluster_utils import Cluster  # noqa: E402

from edgeconv.bench.worker import save_feeds  # noqa: E402
from edgeconv.core.artifact import Artifact  # noqa: E402
from edgeconv.core.tensors import random_feeds  # noqa: E402
from edgeconv.devices.config import device_from_dict  # noqa: E402
from edgeconv.devices.farm import FarmRow, run_farm  # noqa: E402

FAST = {"min_iters": 3, "min_seconds": 0.05, "warmup_min_iters": 1, "warmup_max_seconds": 0.2}
LONG = {"min_iters": 3, "min_seconds": 60.0, "max_seconds": 60.0, "warmup_min_iters": 1, "warmup_max_seconds": 0.2}


@pytest.fixture
def cluster():
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
    nodes = {name: c.add_node(num_cpus=1, resources={f"device:{name}": 1}) for name in ("dev-a", "dev-b")}
    c.wait_for_nodes()
    ray.init(address=c.address, log_to_driver=False)
    try:
        yield c, nodes
    finally:
        ray.shutdown()
        c.shutdown()


@pytest.mark.slow
def test_farm_runs_rows_per_device_and_survives_a_lost_node(cluster, device_arts, tmp_path):
    c, nodes = cluster
    art = device_arts["onnxruntime"]
    feeds = tmp_path / "feeds.npz"
    save_feeds(feeds, [random_feeds(Artifact.load(art).inputs, seed=i) for i in range(2)])
    devs = {n: device_from_dict({"name": n, "transport": "local", "workdir": str(tmp_path / n)})
            for n in ("dev-a", "dev-b")}
    rows = [FarmRow("a1", devs["dev-a"], art, feeds, FAST), FarmRow("a2", devs["dev-a"], art, feeds, FAST),
            FarmRow("b1", devs["dev-b"], art, feeds, LONG), FarmRow("b2", devs["dev-b"], art, feeds, FAST)]
    killed = threading.Event()

    def kill_b_mid_row() -> None:
        jobs = tmp_path / "dev-b" / "jobs"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if jobs.is_dir() and any(jobs.iterdir()):  # b1 is running on dev-b's node
                time.sleep(1.0)
                c.remove_node(nodes["dev-b"])
                killed.set()
                return
            time.sleep(0.2)

    t = threading.Thread(target=kill_b_mid_row, daemon=True)
    t.start()
    res = run_farm(rows, farm=None, timeout=90, retries=1)
    t.join(5)
    assert killed.is_set()
    for k in ("a1", "a2"):
        rec, outs = res[k]
        assert rec["ok"], rec.get("error")
        assert rec["device"] == "dev-a" and rec["farm"]["node"] and len(outs) == 2
    assert res["a1"][0]["farm"]["node"] == res["a2"][0]["farm"]["node"]  # both on dev-a's node
    for k in ("b1", "b2"):
        rec, outs = res[k]
        assert rec["ok"] is False and outs is None and "\n" not in rec["error"]
    assert "lost" in res["b1"][0]["error"]
    assert "device:dev-b" in res["b2"][0]["error"] or "lost" in res["b2"][0]["error"]


@pytest.mark.slow
def test_a_hanging_device_fails_its_row_at_the_time_limit_and_the_other_device_goes_on(cluster, device_arts, tmp_path):
    art = device_arts["onnxruntime"]
    feeds = tmp_path / "feeds.npz"
    save_feeds(feeds, [random_feeds(Artifact.load(art).inputs, seed=0)])
    hang = tmp_path / "hangpython"  # the device's Python never starts the worker
    hang.write_text("#!/bin/sh\nexec sleep 600\n")
    hang.chmod(0o755)
    good = device_from_dict({"name": "dev-a", "transport": "local", "workdir": str(tmp_path / "dev-a")})
    stuck = device_from_dict({"name": "dev-b", "transport": "local", "workdir": str(tmp_path / "dev-b"),
                              "python": str(hang)})
    res = run_farm([FarmRow("a", good, art, feeds, FAST), FarmRow("b", stuck, art, feeds, FAST)], farm=None,
                   timeout=3, retries=0)
    assert res["a"][0]["ok"], res["a"][0].get("error")
    rec, outs = res["b"]
    assert rec["ok"] is False and outs is None and "did not finish within 3 s" in rec["error"]  # the limit ended it
    assert "\n" not in rec["error"] and rec["error"].startswith("device error")
    assert list((tmp_path / "dev-b" / "jobs").iterdir()) == []  # stopped and cleaned on the device
