"""Core pieces: drift metrics, atomic folders, isolation of crashing code, profiles."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from edgeconv.core.artifact import atomic_dir
from edgeconv.core.compare import compare_outputs, tensor_drift, within
from edgeconv.core.errors import ConfigError, ConversionError
from edgeconv.core.isolate import run_isolated
from edgeconv.profiles import list_profiles, load_profile, load_profile_file


def test_tensor_drift_values() -> None:
    a = np.array([1.0, 2.0, 3.0], np.float32)
    d = tensor_drift(a, a + np.array([0.0, 0.5, 0.0], np.float32))
    assert d["max_abs"] == pytest.approx(0.5)
    assert d["rel_l2"] == pytest.approx(0.5 / np.linalg.norm(a))
    assert d["cosine"] == pytest.approx(np.dot(a, [1, 2.5, 3]) / np.linalg.norm(a) / np.linalg.norm([1, 2.5, 3]))
    assert not tensor_drift(a, a[:2])["shape_ok"]


def test_within_reports_each_failure() -> None:
    d = compare_outputs([{"y": np.ones(4)}], [{"y": np.ones(4) * 1.1}])
    ok, fails = within(d, {"max_abs": 1e-3, "cosine": 0.5})
    assert not ok and len(fails) == 1 and fails[0].startswith("max_abs")
    bad = compare_outputs([{"y": np.ones((1, 4))}], [{"y": np.ones((1, 1, 4))}])
    ok, fails = within(bad, {})
    assert not ok and "shape mismatch" in fails[0]


def test_atomic_dir_leaves_nothing_on_error(tmp_path: Path) -> None:
    dest = tmp_path / "art"
    with pytest.raises(RuntimeError), atomic_dir(dest) as tmp:
        (tmp / "half.bin").write_bytes(b"x")
        raise RuntimeError("boom")
    assert not dest.exists() and os.listdir(tmp_path) == []
    with atomic_dir(dest) as tmp:
        (tmp / "ok.bin").write_bytes(b"y")
    assert (dest / "ok.bin").read_bytes() == b"y"


def _crash() -> None:
    os.abort()


def _hang() -> None:
    import time

    time.sleep(60)


def _fine(x: int) -> int:
    return x * 2


def test_run_isolated_turns_crashes_and_hangs_into_errors() -> None:
    assert run_isolated(_fine, 21, timeout=60, what="doubling") == 42
    with pytest.raises(ConversionError, match="crashed"):
        run_isolated(_crash, timeout=60, what="native tool")
    with pytest.raises(ConversionError, match="did not finish"):
        run_isolated(_hang, timeout=2, what="slow tool")


def test_every_bundled_profile_validates() -> None:
    profs = list_profiles()
    for backend in ("onnxruntime", "openvino", "ncnn", "tflite", "tensorrt"):
        assert profs[backend].backend == backend
    assert load_profile("jetson-orin-nano").options["trt_version"] == "10"


def test_bad_profiles_are_rejected(tmp_path: Path) -> None:
    p = tmp_path / "mine.toml"
    p.write_text('backend = "openvino"\nprecision = "int4"\n')
    with pytest.raises(ConfigError, match="int4"):
        load_profile_file(p)
    p.write_text('backend = "openvino"\nthreadz = 2\n')
    with pytest.raises(ConfigError, match="unknown key"):
        load_profile_file(p)
    p.write_text('backend = "openvino"\nthreads = 3\n')
    assert load_profile(str(p)).threads == 3


def test_an_input_spec_without_a_name_takes_the_models_names() -> None:
    from edgeconv.core.tensors import name_inputs, parse_input_spec

    bare = parse_input_spec("1x3x320x320")
    assert bare.name == "" and bare.shape == (1, 3, 320, 320) and bare.layout == "NCHW"
    assert parse_input_spec("1x3x8x8:float16").dtype == "float16"
    assert [s.name for s in name_inputs([bare], ["x"])] == ["x"]
    assert [s.name for s in name_inputs([bare], [])] == ["images"]
    two = [parse_input_spec("1x3x8x8"), parse_input_spec("1x4")]
    assert [s.name for s in name_inputs(two, [])] == ["input0", "input1"]
    assert [s.name for s in name_inputs([parse_input_spec("a:1x4"), bare], ["a", "b"])] == ["a", "b"]
    with pytest.raises(ConfigError, match="given twice"):
        name_inputs([parse_input_spec("b:1x4"), bare], ["a", "b"])
