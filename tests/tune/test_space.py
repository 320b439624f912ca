"""The tune search space: defaults first, one option varied at a time, what cannot run here excluded with why."""

from __future__ import annotations

import pytest

from edgeconv.core.errors import ConfigError
from edgeconv.profiles import load_profile
from edgeconv.tune.space import candidates, device_profiles


def test_defaults_come_first_then_one_knob_at_a_time() -> None:
    ncnn, ort = load_profile("ncnn"), load_profile("onnxruntime")
    space = candidates([ncnn, ort], precisions=["fp32", "fp16"], threads=[2, 1])
    ids = [c.id for c in space.candidates]
    assert ids[:4] == ["ncnn/fp32/t2", "ncnn/fp16/t2", "onnxruntime/fp32/t2", "onnxruntime/fp16/t2"]
    # ncnn's fp16 arithmetic is tried on fp16 only, at both thread counts; never on fp32
    assert "ncnn/fp16/fp16_arithmetic=True/t1" in ids and "ncnn/fp16/fp16_arithmetic=True/t2" in ids
    assert not any(i.startswith("ncnn/fp32/fp16_arithmetic") for i in ids)
    assert "onnxruntime/fp16/fp16_compute=half/t1" in ids and "onnxruntime/fp16/fp16_compute=float/t2" in ids
    assert not any(i.startswith("onnxruntime/fp32/fp16_compute") for i in ids)
    # (2 profiles x 2 precisions x 2 threads) + ncnn's 1 and ORT's 2 fp16 knob values at 2 thread counts
    assert len(ids) == len(set(ids)) == 2 * 2 * 2 + 2 + 4
    # runtime-only differences share one artifact; an option that changes the artifact does not
    by_id = {c.id: c for c in space.candidates}
    assert by_id["ncnn/fp16/t2"].conversion_key == by_id["ncnn/fp16/t1"].conversion_key
    assert by_id["ncnn/fp16/t2"].conversion_key != by_id["ncnn/fp16/fp16_arithmetic=True/t2"].conversion_key


def test_precisions_that_cannot_run_here_are_excluded_with_the_reason() -> None:
    ov = load_profile("intel-cpu")
    space = candidates([ov], threads=[1], knobs={},
                       skip_reason=lambda p, prec: "no bf16 units on this CPU" if prec == "bf16" else None)
    assert {c.precision for c in space.candidates} == {"fp32", "fp16", "int8"}
    assert space.excluded == [{"profile": "intel-cpu", "precision": "bf16", "reason": "no bf16 units on this CPU"}]
    space = candidates([load_profile("opencv")], precisions=["int8"], threads=[1])
    assert not space.candidates and "no int8 route" in space.excluded[0]["reason"]


def test_streams_are_a_runtime_variant() -> None:
    space = candidates([load_profile("openvino")], precisions=["fp32"], threads=[1], streams=[0, 2], knobs={})
    assert [c.id for c in space.candidates] == ["openvino/fp32/t1", "openvino/fp32/t1/s2"]


def test_throughput_hint_is_tried_only_with_streams() -> None:
    """One request at a time under THROUGHPUT runs on a share of the cores: not a latency candidate."""
    ids = [c.id for c in candidates([load_profile("openvino")], precisions=["int8"], threads=[1]).candidates]
    assert ids == ["openvino/int8/t1"]
    ids = [c.id for c in candidates([load_profile("openvino")], precisions=["int8"], threads=[1],
                                    streams=[0, 2]).candidates]
    assert ids == ["openvino/int8/t1", "openvino/int8/t1/s2", "openvino/int8/performance_hint=THROUGHPUT/t1/s2"]


def test_a_knob_the_backend_does_not_declare_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="fp16_arith"):
        candidates([load_profile("ncnn")], threads=[1], knobs={"ncnn": {"fp16_arith": ((True,), ())}})


def test_host_means_every_installed_generic_cpu_profile() -> None:
    names = [p.name for p in device_profiles(["host"])]
    assert "onnxruntime" in names and all(load_profile(n).backend == n for n in names)
    assert [p.name for p in device_profiles(["intel-cpu", "intel-cpu"])] == ["intel-cpu"]
