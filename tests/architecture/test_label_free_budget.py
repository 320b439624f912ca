"""A task named without labelled data: INT8 is held to its budget as agreement with the reference (top-1
agreement for a classifier) on calibration inputs, where the tensor tolerance alone passed artifacts that flipped
6-12 % of a CIFAR ResNet's answers at cosine 0.99."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("onnxruntime", reason="the INT8 rows run on ONNX Runtime")


def _planner(prep: Any, cal: Any, factory: Any) -> Any:
    from edgeconv.plan import Planner

    planner = Planner(prep, use_cache=False, evaluator_factory=factory)
    planner.calibration = lambda row: cal  # type: ignore[method-assign]  # the pattern's own calibration set
    return planner


def test_agreement_budget_applies_and_repairs(pattern: Any, tmp_path: Path) -> None:
    from edgeconv.api import default_evaluator
    from edgeconv.plan import make_rows

    prep, cal, _ = pattern("norm")
    (row,) = make_rows(["onnxruntime"], ["int8"], tmp_path, options={"keep_outputs_fp32": False},
                       tolerances={"int8": {"cosine": 0.0, "task_delta": 0.5}})  # only the task budget can fail
    art = _planner(prep, cal, default_evaluator(task="classification")).convert(row)
    v = art.manifest["verification"]
    assert v["status"] == "ok" and v["task"]["metric"] == "top1_agreement" and v["task"]["delta"] >= -0.5
    fb = art.manifest["int8_fallback"]
    assert fb["ok"] and fb["baseline_delta"] < -0.5 and fb["objective"] == "top1_agreement"


def test_without_a_task_nothing_is_claimed(pattern: Any, tmp_path: Path) -> None:
    from edgeconv.api import default_evaluator
    from edgeconv.plan import make_rows

    prep, cal, _ = pattern("norm")
    (row,) = make_rows(["onnxruntime"], ["int8"], tmp_path, options={"keep_outputs_fp32": False,
                                                                      "int8_fallback": False},
                       tolerances={"int8": {"cosine": 0.0, "task_delta": 0.5}})
    art = _planner(prep, cal, default_evaluator()).convert(row)
    assert art.manifest["verification"]["task_checked"] is False
