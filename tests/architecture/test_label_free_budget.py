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


def test_an_unlabelled_eval_folder_is_the_held_out_agreement_data(tiny_prepared: Any, tiny_calib_dir: Path,
                                                                  tmp_path: Path) -> None:
    """--eval images without labels are still inputs the calibration did not see: the label-free agreement is
    measured on them (held out), not on the calibration sample's own (in-sample)."""
    import numpy as np
    from PIL import Image

    from edgeconv.bench.budget import task_evaluator
    from edgeconv.calibration.preprocess import Preprocess
    from edgeconv.core.errors import ConfigError
    from edgeconv.pipeline import make_calibration

    pp = Preprocess(size=(64, 64))
    cal = make_calibration(tiny_prepared, tiny_calib_dir, size=8, preprocess=pp)
    ev_dir = tmp_path / "eval"
    ev_dir.mkdir()
    for i in range(6):
        img = np.random.default_rng(100 + i).integers(0, 255, (64, 64, 3), np.uint8)
        Image.fromarray(img).save(ev_dir / f"{i}.png")
    ev = task_evaluator({}, tiny_prepared.reference, pp, data=str(ev_dir), task="classification", calibration=cal,
                        exclude=cal.content_hashes())
    assert ev is not None and ev.held_out and len(ev.items) == 6 and "unlabelled held-out" in ev.meta["source"]
    with pytest.raises(ConfigError, match="also calibration inputs"):
        task_evaluator({}, tiny_prepared.reference, pp, data=str(tiny_calib_dir), task="classification",
                       calibration=cal, exclude=cal.content_hashes())
