"""``edgeconv run``: a matrix config end to end (tiny model), the failed-target row, the gate; plus the pieces
of evaluation that need no backend (task metric, input-statistics warning)."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from edgeconv.bench.drift import compute_drift, input_stats, stats_shift
from edgeconv.bench.evaluate import EvalData, task_metric
from edgeconv.bench.report import FILES

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
FAST = {"min_iters": 10, "min_seconds": 0.05, "warmup_max_seconds": 0.5, "threads": 1, "timeout": 120}


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny net as an ONNX file (legacy exporter: fast), so the run needs no slow torch export."""
    import sys

    import torch

    sys.path.insert(0, str(FIXTURES))
    import tiny_model

    p = tmp_path_factory.mktemp("onnx") / "tiny.onnx"
    torch.onnx.export(tiny_model.build().eval(), (torch.rand(1, 3, 32, 32),), str(p), input_names=["images"],
                      output_names=["out"], opset_version=17, dynamo=False)
    return p


def _config(tmp: Path, onnx: Path) -> dict:
    (tmp / "no-fp16.toml").write_text('backend = "onnxruntime"\nprecision = "bf16"\nprecisions = ["bf16"]\n')
    return {"_base_dir": str(tmp), "model": {"model": str(onnx), "name": "tiny"}, "data": {"limit": 4},
            "targets": [{"profile": "onnxruntime", "precisions": ["fp32"]}, {"profile": "no-fp16.toml"}],
            "bench": FAST}


def test_run_matrix_writes_four_files_and_records_the_failed_target(tmp_path: Path, tiny_onnx: Path) -> None:
    from edgeconv.bench.matrix import run_matrix
    from edgeconv.cli import main

    out = tmp_path / "out"
    rep = run_matrix(_config(tmp_path, tiny_onnx), out)
    assert all((out / f).is_file() for f in FILES)
    rows = {r["profile"]: r for r in rep["results"]}
    ok, bad = rows["onnxruntime"], rows["no-fp16"]
    assert ok["status"] == "ok" and ok["latency_ms"]["n"] >= 10 and ok["drift"]["pass"]
    assert ok["latency_ms"]["p50_ci"][0] <= ok["latency_ms"]["p50"] <= ok["latency_ms"]["p50_ci"][1]
    assert ok["artifact"]["bytes"] > 0 and len(ok["artifact"]["sha256"]) == 64
    assert ok["peak_rss_mb"] > 0 and ok["cold_start_ms"]["total"] > 0
    assert ok["reference"].startswith("reference.onnx")  # only ONNX was given
    assert bad["status"] == "failed" and "bf16" in bad["error"] and "\n" not in bad["error"]
    assert json.loads((out / "report.json").read_text())["schema"] == "edgeconv.report/1"
    root = ET.parse(out / "junit.xml").getroot()
    assert len(list(root.iter("testcase"))) == 8

    runner = CliRunner()
    same = runner.invoke(main, ["compare", str(out / "report.json"), str(out / "report.json"),
                                "--fail-on", "regression"])
    assert same.exit_code == 0, same.output
    half = json.loads((out / "report.json").read_text())
    for r in half["results"]:
        if r["latency_ms"]:
            r["latency_ms"]["p50"] /= 2
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "report.json").write_text(json.dumps(half))
    worse = runner.invoke(main, ["compare", str(out / "report.json"), str(tmp_path / "half" / "report.json"),
                                 "--fail-on", "regression"])
    assert worse.exit_code == 1 and "onnxruntime/fp32" in worse.output

    # the same gate in one go: edgeconv run --baseline. The new run is a fresh measurement (warmer caches may make
    # it faster than the first), so its baseline is a tenth of the first run's p50s: a regression by any noise.
    tenth = json.loads((out / "report.json").read_text())
    for r in tenth["results"]:
        if r["latency_ms"]:
            for k in ("p50", "p90", "p99", "mean", "min"):
                r["latency_ms"][k] /= 10
            r["latency_ms"]["p50_ci"] = [v / 10 for v in r["latency_ms"]["p50_ci"]]
    (tmp_path / "tenth").mkdir()
    (tmp_path / "tenth" / "report.json").write_text(json.dumps(tenth))
    cfg = tmp_path / "run.toml"
    cfg.write_text(f'[model]\nmodel = "{tiny_onnx}"\n[data]\nlimit = 2\n[[targets]]\nprofile = "onnxruntime"\n'
                   "[bench]\n" + "\n".join(f"{k} = {v}" for k, v in FAST.items()) + "\n")
    gated = runner.invoke(main, ["run", str(cfg), "--out", str(tmp_path / "out2"), "--baseline",
                                 str(tmp_path / "tenth"), "--fail-on", "regression"])
    assert gated.exit_code == 1, gated.output
    assert "regression" in json.loads((tmp_path / "out2" / "report.json").read_text())["comparison"]["conditions"]


def test_config_validation_names_the_problem(tmp_path: Path) -> None:
    from edgeconv.bench.matrix import load_config
    from edgeconv.core.errors import ConfigError

    p = tmp_path / "c.toml"
    p.write_text('[model]\nsource = "zoo:yolo"\n[[targets]]\nprofile = "onnxruntime"\nprecision = "fp32"\n')
    with pytest.raises(ConfigError, match="precision"):
        load_config(p)
    p.write_text('[model]\nsource = "zoo:yolo"\n')
    with pytest.raises(ConfigError, match="targets"):
        load_config(p)


def test_classification_task_metric_with_labels() -> None:
    from edgeconv.bench.metrics import softmax

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 5, 40)
    ref = [{"logits": np.eye(5)[[lab]] * 5 + rng.normal(0, 0.1, (1, 5))} for lab in labels]
    got = [dict(r) for r in ref]
    for i in range(4):  # the "converted" model flips 4 predictions
        got[i] = {"logits": np.roll(ref[i]["logits"], 1, axis=1)}
    data = EvalData([{}] * 40, [{}] * 40, list(labels), "classification", "test")
    block, post_ms = task_metric("classification", softmax, ref, got, data, {"task_delta": 5.0})
    assert block["metric"] == "top1" and block["reference"] == pytest.approx(100.0)
    assert block["value"] == pytest.approx(90.0) and block["delta"] == pytest.approx(-10.0)
    assert block["pass"] is False and block["extra"]["top1_agreement"] == pytest.approx(90.0)
    assert post_ms["n"] == 40


def test_detection_task_metric_maps_boxes_back_to_the_image() -> None:
    from edgeconv.bench.detection import Detections

    def post(o: dict) -> list:
        return [Detections(o["boxes"][0], o["scores"][0], o["classes"][0])]

    # model input is the image scaled ×2: boxes in input pixels are twice the label boxes
    gt_boxes = np.array([[10, 10, 30, 40], [50, 50, 60, 70]], np.float32)
    out = {"boxes": (gt_boxes * 2)[None], "scores": np.array([[0.9, 0.8]]), "classes": np.array([[0, 1]])}
    data = EvalData([{}], [{"scale_x": 2.0, "scale_y": 2.0, "pad_x": 0.0, "pad_y": 0.0}],
                    [(gt_boxes, np.array([0, 1]))], "detection", "test")
    block, _ = task_metric("detection", post, [out], [out], data, {"task_delta": 1.0})
    assert block["metric"] == "map50_95" and block["value"] == pytest.approx(100.0) and block["pass"]
    unlabelled = EvalData([{}], data.metas, None, "detection", "test")
    block, _ = task_metric("detection", post, [out], [out], unlabelled, {})
    assert block["metric"] == "label_free_map50" and block["value"] == pytest.approx(100.0)


def test_drift_checks_and_input_shift_warning() -> None:
    rng = np.random.default_rng(0)
    refs = [{"y": rng.normal(size=(1, 8))} for _ in range(3)]
    gots = [{"y": r["y"] + 0.05} for r in refs]
    d = compute_drift(refs, gots, {"max_abs": 1e-4, "cosine": 0.9})
    checks = {c["name"]: c["pass"] for c in d["checks"]}
    assert checks == {"max_abs": False, "cosine": True} and d["pass"] is False
    exact = compute_drift(refs, refs, {"snr_db": 40})
    assert exact["pass"] and exact["snr_db"] is None  # inf is not JSON: null
    calib = input_stats([{"x": rng.uniform(0, 1, (1, 3, 8, 8))} for _ in range(8)])
    same = input_stats([{"x": rng.uniform(0, 1, (1, 3, 8, 8))} for _ in range(8)])
    raw = input_stats([{"x": rng.uniform(0, 255, (1, 3, 8, 8))} for _ in range(8)])  # forgot the /255
    assert stats_shift(calib, same) == []
    reasons = stats_shift(calib, raw)
    assert reasons and any("range" in r for r in reasons)


def test_bundled_suite_config_is_valid() -> None:
    from edgeconv.bench.matrix import load_config

    cfg = load_config(Path(__file__).resolve().parents[2] / "benchmarks" / "suite.toml")
    assert [t["profile"] for t in cfg["targets"]] == ["onnxruntime", "openvino"]
    assert cfg["bench"]["threads"] == 1


def test_two_pass_matrix_times_each_row_alone(tmp_path: Path, tiny_onnx: Path, monkeypatch) -> None:
    """With two jobs the accuracy passes run side by side, and each row's latency worker runs with nothing else
    running; the rows carry the same fields and the same drift as a one-at-a-time run."""
    import threading
    import time

    from edgeconv.bench import evaluate
    from edgeconv.bench.matrix import run_matrix

    spans: list[tuple[str, float, float]] = []
    lock = threading.Lock()
    real = evaluate.run_worker

    def recording(*a, **kw):
        t0 = time.perf_counter()
        try:
            return real(*a, **kw)
        finally:
            with lock:
                spans.append(("latency" if kw.get("latency_only") else "accuracy" if kw.get("skip_latency")
                              else "both", t0, time.perf_counter()))

    monkeypatch.setattr(evaluate, "run_worker", recording)
    cfg = {"_base_dir": str(tmp_path), "model": {"model": str(tiny_onnx), "name": "tiny"}, "data": {"limit": 4},
           "targets": [{"profile": "onnxruntime", "precisions": ["fp32", "fp16"]}], "bench": FAST}
    two = {r["precision"]: r for r in run_matrix(cfg, tmp_path / "two", jobs=2)["results"]}
    kinds = sorted(k for k, _, _ in spans)
    assert kinds == ["accuracy", "accuracy", "latency", "latency"]
    for kind, t0, t1 in spans:
        if kind == "latency":
            assert all(b1 <= t0 or b0 >= t1 for k, b0, b1 in spans if (k, b0, b1) != (kind, t0, t1))
    spans.clear()
    one = {r["precision"]: r for r in run_matrix(cfg, tmp_path / "one", jobs=1)["results"]}
    assert sorted(k for k, _, _ in spans) == ["both", "both"]
    for p in ("fp32", "fp16"):
        a, b = two[p], one[p]
        assert a["status"] == b["status"] == "ok" and a["latency_ms"]["n"] >= 10 and a["cold_start_ms"]["total"] > 0
        assert set(a) == set(b) and a["stages_ms"].keys() == b["stages_ms"].keys()
        assert a["drift"]["max_abs"] == pytest.approx(b["drift"]["max_abs"], rel=1e-3, abs=1e-6)
        assert a["wall_seconds"]["bench"] > 0


def test_a_proxy_row_gets_no_latency_worker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A row run on a stand-in runtime (TensorRT's Q/DQ ONNX on ONNX Runtime) has no latency to report: the latency
    pass leaves it as its accuracy pass scored it instead of starting a worker to learn that again."""
    from edgeconv.bench import evaluate
    from edgeconv.bench.evaluate import BenchOptions, add_latency

    def no_worker(*_a: object, **_k: object) -> None:
        raise AssertionError("a latency worker was started for a proxy row")

    monkeypatch.setattr(evaluate, "run_worker", no_worker)
    row = {"status": "ok", "proxy": True, "latency_ms": None, "latency_note": "proxy runner"}
    assert add_latency(dict(row), None, tmp_path / "f.npz", tmp_path, options=BenchOptions()) == row  # type: ignore[arg-type]


def test_a_detection_metric_without_ground_truth_is_no_data_not_a_number() -> None:
    """pycocotools' -1 (no box in the labels) and a label-free reference with nothing above 0.25 (tiny class scores)
    are no data: value, reference and delta None, no pass or fail, the reason in ``extra`` — never -100 (Δ -200)."""
    from edgeconv.bench.compare import compare_reports
    from edgeconv.bench.detection import Detections

    n = 10
    outs = [{"x": np.zeros(1)} for _ in range(n)]

    def faint(_o: object) -> list[Detections]:
        return [Detections(np.array([[1, 1, 20, 20]], np.float32), np.array([0.01], np.float32), np.array([0]))]

    empty = [(np.zeros((0, 4)), np.zeros(0, np.int64)) for _ in range(n)]
    for labels in (None, empty):
        data = EvalData([{"x": np.zeros(1)}] * n, [{}] * n, labels, "detection", "t")
        block, _ = task_metric("detection", faint, outs, outs, data, {"task_delta": 1.5})
        assert block is not None
        assert block["value"] is None and block["reference"] is None and block["delta"] is None
        assert block["pass"] is None and block["extra"]["no_data"]
        row = {"target": "onnxruntime", "profile": "onnxruntime", "precision": "int8", "status": "ok", "task": block}
        rep = {"results": [row]}
        assert not compare_reports(rep, rep).conditions.get("drift")  # a baseline without numbers compares quietly


def test_a_budget_on_labels_without_boxes_is_not_checked_as_if_it_were(tmp_path: Path, tiny_prepared) -> None:
    """Labelled detection data holding no box would score the reference and every artifact -100 (pycocotools' -1):
    a delta of 0, a budget 'checked' on nothing. It is treated as unlabelled instead (agreement with the reference
    where a calibration set is given, else no conversion-time task check)."""
    from PIL import Image

    from edgeconv.bench.budget import task_evaluator
    from edgeconv.calibration.preprocess import Preprocess

    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    for i in range(4):
        Image.new("RGB", (64, 64), (90, 120, 150)).save(tmp_path / "images" / f"{i}.jpg")
        (tmp_path / "labels" / f"{i}.txt").write_text("")
    info = {"task": "detection", "postprocess": "edgeconv.bench.detection:decode_yolo"}
    ev = task_evaluator(info, tiny_prepared.reference, Preprocess(size=(64, 64)), data=str(tmp_path))
    assert ev is None
