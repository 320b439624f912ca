"""convert --json / --dry-run / --tol, inspect, cache info|verify|clear and bench --json on real artifacts of the tiny
model (ONNX Runtime fp32 + int8), with the manifests and the report checked against the published JSON Schemas."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from edgeconv.cli import main

ROOT = Path(__file__).resolve().parents[2]
FIX = ROOT / "tests" / "fixtures" / "tiny_model.py"


def run(*args: str) -> tuple[int, str, str]:
    res = CliRunner().invoke(main, list(args), catch_exceptions=False)
    return res.exit_code, res.stdout, res.stderr


@pytest.fixture(scope="module")
def converted(tmp_path_factory: pytest.TempPathFactory, tiny_weights: Path, tiny_calib_dir: Path) -> dict:
    mp = pytest.MonkeyPatch()
    cache = tmp_path_factory.mktemp("cache")
    mp.setenv("EDGECONV_CACHE", str(cache))
    out = tmp_path_factory.mktemp("conv")
    args = ["convert", "--model", f"{FIX}:build", "--weights", str(tiny_weights), "--input", "images:1x3x64x64",
            "--target", "onnxruntime", "-p", "fp32", "-p", "int8", "--calib", str(tiny_calib_dir), "--calib-size",
            "16", "--preprocess", "size=64x64", "--out", str(out)]
    code, stdout, stderr = run(*args, "--json")
    assert code == 0, stderr
    yield {"args": args, "out": out, "rows": json.loads(stdout), "cache": cache}
    mp.undo()


def test_convert_json_then_cache_hit_then_dry_run(converted: dict, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGECONV_CACHE", str(converted["cache"]))
    rows = converted["rows"]
    assert [(r["profile"], r["precision"], r["status"]) for r in rows] == [("onnxruntime", "fp32", "ok"),
                                                                            ("onnxruntime", "int8", "ok")]
    assert rows[0]["cache_hit"] is False and rows[0]["verification"]["max_abs"] <= 1e-4
    code, stdout, _ = run(*converted["args"], "--json")
    assert code == 0 and [r["cache_hit"] for r in json.loads(stdout)] == [True, True]
    fresh = tmp_path / "plan-out"
    args = [a if a != str(converted["out"]) else str(fresh) for a in converted["args"]]
    code, stdout, _ = run(*args, "--dry-run", "--json")
    assert code == 0
    plan = json.loads(stdout)
    assert [(r["status"], r["cache_hit"]) for r in plan] == [("planned", True), ("planned", True)]
    assert not fresh.exists() or not any(fresh.iterdir())  # a dry run writes nothing
    code, stdout, _ = run(*args, "--dry-run")
    assert code == 0 and stdout.count("plan ") == 2 and "cache hit" in stdout


def test_tol_reaches_verification(converted: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGECONV_CACHE", str(converted["cache"]))
    args = [a if a != str(converted["out"]) else str(tmp_path / "o") for a in converted["args"]]
    i = args.index("int8")
    args = args[: i - 1] + args[i + 1:]  # fp32 only
    code, _, stderr = run(*args, "--tol", "fp32.cosine=1.5", "--no-cache")
    assert code == 6 and "cosine" in stderr, stderr  # an impossible tolerance fails verification


def test_inspect_artifact_and_onnx(converted: dict) -> None:
    code, stdout, _ = run("inspect", str(converted["out"] / "onnxruntime-int8"), "--json")
    assert code == 0
    info = json.loads(stdout)
    assert info["kind"] == "artifact" and info["precision"] == "int8" and info["target"] == "onnxruntime"
    assert info["inputs"][0]["name"] == "images" and info["inputs"][0]["shape"] == [1, 3, 64, 64]
    assert info["ops"].get("QuantizeLinear", 0) > 0 and "Conv" in info["reference_ops"]
    assert info["verification"].startswith("ok on") and info["bytes"] > 0
    assert "16 inputs" in info["made"]["calibration"] and "onnxruntime" in info["made"]["tools"]
    code, stdout, _ = run("inspect", str(converted["out"] / "onnxruntime-fp32"))
    assert code == 0 and "ops:" in stdout and "Conv" in stdout and "verified:" in stdout and "float32" in stdout
    code, stdout, _ = run("inspect", str(converted["out"] / "onnxruntime-fp32" / "model.onnx"), "--json")
    info = json.loads(stdout)
    assert code == 0 and info["kind"] == "onnx" and info["weight_types"].get("float32", 0) > 0
    code, _, stderr = run("inspect", str(FIX))
    assert code != 0 and "Traceback" not in stderr


def test_manifests_match_the_published_schema(converted: dict) -> None:
    jsonschema = pytest.importorskip("jsonschema", reason="validating against the JSON Schema needs jsonschema")
    schema = json.loads((ROOT / "schemas" / "manifest.schema.json").read_text())
    for prec in ("fp32", "int8"):
        m = json.loads((converted["out"] / f"onnxruntime-{prec}" / "manifest.json").read_text())
        jsonschema.validate(m, schema)
    del m["files"]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(m, schema)


def test_bench_json_names_the_model_and_matches_the_report_schema(converted: dict, tmp_path: Path) -> None:
    code, stdout, stderr = run("bench", str(converted["out"] / "onnxruntime-fp32"), "--min-iters", "5",
                               "--min-seconds", "0.05", "--limit", "2", "--out", str(tmp_path / "b"), "--json")
    assert code == 0, stderr
    rep = json.loads(stdout)
    assert rep["model"]["name"] == "tiny_model" and rep["results"][0]["status"] == "ok"
    assert json.loads((tmp_path / "b" / "report.json").read_text())["results"][0]["status"] == "ok"
    jsonschema = pytest.importorskip("jsonschema", reason="validating against the JSON Schema needs jsonschema")
    jsonschema.validate(rep, json.loads((ROOT / "schemas" / "report.schema.json").read_text()))


def test_cache_info_verify_clear(converted: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGECONV_CACHE", str(converted["cache"]))
    code, stdout, _ = run("cache", "info", "--json")
    info = json.loads(stdout)
    assert code == 0 and info["root"] == str(converted["cache"]) and info["kinds"]["artifacts"]["entries"] >= 2
    code, stdout, _ = run("cache", "verify")
    assert code == 0 and "entries intact" in stdout
    model = next((converted["cache"] / "artifacts").glob("*/model.onnx"))
    model.write_bytes(model.read_bytes()[:-10])  # truncated behind the cache's back
    code, stdout, _ = run("cache", "verify", "--json")
    doc = json.loads(stdout)
    assert code == 1 and len(doc["damaged"]) == 1 and "model.onnx" in doc["damaged"][0]["problem"]
    code, stdout, _ = run("cache", "clear", "--kind", "artifacts", "--json")
    assert code == 0 and json.loads(stdout)["bytes_freed"] > 0
    code, stdout, _ = run("cache", "info", "--json")
    assert "artifacts" not in json.loads(stdout)["kinds"]


def test_calibrate_json(tiny_weights: Path, tiny_calib_dir: Path, tmp_path: Path) -> None:
    code, stdout, stderr = run("calibrate", "--model", f"{FIX}:build", "--weights", str(tiny_weights), "--input",
                               "images:1x3x64x64", "--calib", str(tiny_calib_dir), "--calib-size", "8",
                               "--preprocess", "size=64x64", "--out", str(tmp_path / "stats.json"), "--json")
    assert code == 0, stderr
    (rec,) = json.loads(stdout)
    assert rec["method"] == "minmax" and rec["inputs"] == 8 and rec["tensors"] > 0
    assert json.loads(Path(rec["file"]).read_text())["reference_sha256"]
