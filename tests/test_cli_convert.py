"""End-to-end CLI tests of the spine: convert to ONNX Runtime, cache hit, and the bad inputs' clear errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from edgeconv.cli import main

FIX = Path(__file__).parent / "fixtures" / "tiny_model.py"


def run(*args: str) -> tuple[int, str]:
    res = CliRunner().invoke(main, list(args), catch_exceptions=False)
    return res.exit_code, res.output + (res.stderr if res.stderr_bytes is not None else "")


def test_convert_onnxruntime_fp32_then_cache_hit(tmp_path: Path, tiny_weights: Path) -> None:
    args = ["convert", "--model", f"{FIX}:build", "--weights", str(tiny_weights), "--input", "images:1x3x64x64",
            "--target", "onnxruntime", "--out", str(tmp_path / "out")]
    code, out = run(*args)
    assert code == 0, out
    art = tmp_path / "out" / "onnxruntime-fp32"
    m = json.loads((art / "manifest.json").read_text())
    assert m["verification"]["status"] == "ok"
    assert m["verification"]["drift"]["max_abs"] <= 1e-4
    assert m["source"]["weights_sha256"] and m["reference"]["sha256"]
    assert m["export"]["route"] in ("dynamo", "legacy")
    assert m["simplify"]["nodes_after"] <= m["simplify"]["nodes_before"]
    assert m["inputs"][0] == {"name": "images", "shape": [1, 3, 64, 64], "dtype": "float32", "layout": "NCHW",
                              "dynamic": {}}
    assert set(m["files"]) == {"model.onnx"} and len(m["files"]["model.onnx"]["sha256"]) == 64
    assert len(m["cache_key"]) == 64
    first = (art / "model.onnx").read_bytes()
    code, out = run(*args)
    assert code == 0, out
    assert "cache hit" in out
    assert (art / "model.onnx").read_bytes() == first


def test_an_unnamed_input_takes_the_forward_parameters_name(tmp_path: Path, tiny_weights: Path) -> None:
    code, out = run("convert", "--model", f"{FIX}:build", "--weights", str(tiny_weights), "--input", "1x3x64x64",
                    "-t", "onnxruntime", "--out", str(tmp_path / "out"))
    assert code == 0, out
    m = json.loads((tmp_path / "out" / "onnxruntime-fp32" / "manifest.json").read_text())
    assert m["inputs"][0]["name"] == "x" and m["inputs"][0]["shape"] == [1, 3, 64, 64]  # tiny_model's forward(x)


@pytest.mark.parametrize(
    ("extra", "code", "needle"),
    [
        (["--model", "nope.py:build"], 3, "does not exist"),
        (["--model", f"{FIX}:missing"], 3, "not a callable"),
        (["--model", f"{FIX}:not_a_module"], 3, "not a torch.nn.Module"),
        (["--model", f"{FIX}:build", "--model-arg", "num_classes=7"], 3, "shape mismatch"),
        (["--model", f"{FIX}:build", "--model-arg", "bogus=1"], 3, "--model-arg"),
        (["--model", f"{FIX}:build", "--target", "no-such-target"], 2, "unknown target"),
        (["--model", f"{FIX}:build", "--input", "images:1xAx64"], 2, "--input"),
        (["--model", f"{FIX}:build", "--tol", "int8.cosnie=0.9"], 2, "--tol"),
        (["--model", f"{FIX}:build", "--tol", "int8.cosine=high"], 2, "not a number"),
    ],
)
def test_bad_inputs_give_one_line_errors(tmp_path: Path, tiny_weights: Path, extra: list[str], code: int,
                                         needle: str) -> None:
    base = {"--weights": str(tiny_weights), "--input": "images:1x3x64x64", "--target": "onnxruntime"}
    args = ["convert", "--out", str(tmp_path / "o"), *extra]
    for k, v in base.items():
        if k not in extra:
            args += [k, v]
    got, out = run(*args)
    assert got == code, out
    assert needle in out
    assert "Traceback" not in out
    assert not (tmp_path / "o" / "onnxruntime-fp32").exists()  # nothing half written


def test_precision_the_profile_lacks_is_a_config_error(tmp_path: Path, tiny_weights: Path) -> None:
    prof = tmp_path / "ort-fp32-only.toml"
    prof.write_text('backend = "onnxruntime"\nprecisions = ["fp32"]\n')
    code, out = run("convert", "--model", f"{FIX}:build", "--weights", str(tiny_weights), "--input",
                    "images:1x3x64x64", "--target", str(prof), "-p", "int8", "--out", str(tmp_path / "o"))
    assert code == 2 and "no int8 route" in out, out


def test_unsafe_checkpoint_refused_without_trust(tmp_path: Path) -> None:
    import tiny_model
    import torch

    p = tmp_path / "full.pt"
    torch.save({"model": tiny_model.build(), "epoch": 3}, p)  # a pickled module, like YOLOv5 checkpoints
    base = ["convert", "--model", f"{FIX}:build", "--weights", str(p), "--input", "images:1x3x64x64",
            "--target", "onnxruntime", "--out", str(tmp_path / "o")]
    code, out = run(*base)
    assert code == 3 and "--trust-checkpoint" in out
    code, out = run(*base, "--trust-checkpoint")
    assert code == 0, out


def test_targets_and_doctor_tell_the_truth() -> None:
    import importlib.util

    code, out = run("targets", "--json")
    assert code == 0
    rows = {r["profile"]: r for r in json.loads(out)}
    assert rows["onnxruntime"]["installed"] is True and rows["onnxruntime"]["runs_here"] is True
    for r in rows.values():
        if r["backend"] == "tensorrt":
            assert r["runs_here"] == (importlib.util.find_spec("tensorrt") is not None and r["runs_here"])
    code, out = run("doctor", "--json")
    assert code == 0
    d = json.loads(out)
    assert d["environment"]["cores"] >= 1
    assert d["backends"]["onnxruntime"]["runs_here"] is True
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    assert ("avx2" in d["environment"]["cpu_flags"]) == (" avx2" in flags)


def test_console_script_help_runs() -> None:
    res = subprocess.run([sys.executable, "-m", "edgeconv.cli", "convert", "--help"], capture_output=True, text=True,
                         check=False)
    assert res.returncode == 0 and "--target" in res.stdout


def test_json_failure_of_a_one_row_command_still_prints_the_row(tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "edgeconv.cli", "convert", "--model", str(tmp_path / "missing.py:build"),
           "--target", "onnxruntime", "-p", "fp32", "--out", str(tmp_path / "o"), "--json"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert res.returncode == 3, res.stderr
    (row,) = json.loads(res.stdout)
    assert row["status"] == "failed" and row["profile"] == "onnxruntime" and row["precision"] == "fp32"
    assert row["error"]["kind"] == "model-load" and row["error"]["exit_code"] == 3 and row["error"]["hint"]
    assert "does not exist" in res.stderr  # the one-line error still goes to stderr


def test_bad_task_spec_and_missing_eval_data_fail_before_the_model_loads(tmp_path: Path) -> None:
    base = ["convert", "--model", str(tmp_path / "missing.py:build"), "--target", "onnxruntime", "--out",
            str(tmp_path / "o")]
    code, out = run(*base, "--task", "ctc:alphabet=0123456789,blnk=0")
    assert code == 2 and "blnk" in out and "blank" in out, out  # names the bad key and the valid one
    code, out = run(*base, "--eval", str(tmp_path / "nowhere"), "--task", "classification")
    assert code == 2 and "nowhere" in out, out


def test_a_product_skips_the_combinations_a_target_has_no_route_for(tmp_path: Path, tiny_weights: Path) -> None:
    """``-t A -t B -p fp32 -p int8`` where A has no int8: A int8 is a skipped row with the reason, everything else
    is converted, exit 0 (one such combination refused the whole run before)."""
    prof = tmp_path / "ort-fp32-only.toml"
    prof.write_text('backend = "onnxruntime"\nprecisions = ["fp32"]\n')
    code, out = run("convert", "--model", f"{FIX}:build", "--weights", str(tiny_weights), "--input",
                    "images:1x3x64x64", "--target", str(prof), "--target", "onnxruntime", "-p", "fp32", "-p", "fp16",
                    "--out", str(tmp_path / "o"), "--no-cache")
    assert code == 0, out
    assert "skipped ort-fp32-only" in out and "no fp16 route" in out and "3 of 3 ok; 1 skipped (no route)" in out
    assert {p.name for p in (tmp_path / "o").iterdir()} == {"ort-fp32-only-fp32", "onnxruntime-fp32",
                                                             "onnxruntime-fp16"}


def test_an_int8_row_made_another_way_says_so_on_its_line() -> None:
    from types import SimpleNamespace

    from edgeconv.api import ConvertOutcome
    from edgeconv.cli.convert import _outcome_dict

    art = SimpleNamespace(manifest={"verification": {"status": "ok", "drift": {"max_abs": 0.1, "cosine": 0.99}},
                                    "conversion": {"int8_route": "dynamic-range (full-integer did not convert)"}})
    d = _outcome_dict(ConvertOutcome("tflite", "int8", Path("o"), artifact=art))
    assert d["status"] == "ok" and d["route_note"] == "dynamic-range (full-integer did not convert)"
    art.manifest["conversion"] = {}
    assert _outcome_dict(ConvertOutcome("tflite", "int8", Path("o"), artifact=art))["route_note"] is None
    art.manifest["int8_fallback"] = {"ok": True, "keep_fp32_nodes": ["/head/0/Conv", "/head/1/Conv"]}
    note = _outcome_dict(ConvertOutcome("onnxruntime", "int8", Path("o"), artifact=art))["route_note"]
    assert note == "float fallback: 2 layer(s) kept in float"


def test_a_decode_that_cannot_be_derived_fails_the_request_once(tmp_path: Path) -> None:
    import torch

    onnx_path = tmp_path / "m.onnx"
    torch.onnx.export(torch.nn.Conv2d(3, 4, 1), (torch.rand(1, 3, 8, 8),), str(onnx_path), dynamo=False,
                      input_names=["x"], output_names=["y"])
    res = CliRunner().invoke(main, ["convert", "--model", str(onnx_path), "-t", "onnxruntime", "-t", "openvino",
                                    "--postprocess", "end2end", "--out", str(tmp_path / "o"), "--no-cache"])
    assert res.exit_code == 2 and res.stderr.count("no PyTorch module and no head= option") == 1, res.stderr
    assert not (tmp_path / "o" / "onnxruntime-fp32").exists()


def test_the_ok_line_shows_the_scaled_max_abs_the_bar_judged() -> None:
    from edgeconv.cli.convert import _ok_line

    row = {"profile": "mnn", "precision": "fp32", "out": "o", "task": None, "route_note": None,
           "verification": {"max_abs": 2.76e-3, "max_abs_scaled": 9.86e-5, "cosine": 1.0}}
    assert "max_abs 2.76e-03, scaled 9.86e-05, cosine 1.000000" in _ok_line(row)
    row["verification"] = {"max_abs": 5e-5, "max_abs_scaled": 5e-5, "cosine": 1.0}  # outputs within [-1, 1]
    assert "scaled" not in _ok_line(row)


def test_torch_route_targets_are_skipped_for_an_onnx_model_beside_the_rows_that_convert(tmp_path: Path) -> None:
    import onnx
    from onnx import TensorProto, helper

    from edgeconv import api

    g = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 8, 8])])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(tmp_path / "m.onnx"))
    outs = api.convert(str(tmp_path / "m.onnx"), targets=["onnxruntime", "tflite"], precisions=["fp32"],
                       out=tmp_path / "out", use_cache=False)
    by = {o.profile: o for o in outs}
    assert by["onnxruntime"].ok and by["tflite"].error is None
    assert "an .onnx model has none" in (by["tflite"].skipped or "")
