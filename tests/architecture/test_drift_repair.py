"""Without a task metric, an INT8 row over its cosine tolerance is repaired by the same float-fallback search with
the worst-case cosine on real inputs as the objective; the failure hint names INT8 remedies, not converter ones."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("onnxruntime", reason="the INT8 rows run on ONNX Runtime")


def _planner(prep: Any, cal: Any) -> Any:
    from edgeconv.plan import Planner

    planner = Planner(prep, use_cache=False)  # no evaluator: no labelled data, no task metric
    planner.calibration = lambda row: cal  # type: ignore[method-assign]  # the pattern's own calibration set
    return planner


def test_cosine_failure_is_repaired_without_a_task_metric(pattern: Any, tmp_path: Path) -> None:
    from edgeconv.plan import make_rows

    prep, cal, _ = pattern("norm")  # whole-tensor normalisation: INT8 cosine ~0.62 on its real inputs
    (row,) = make_rows(["onnxruntime"], ["int8"], tmp_path, options={"keep_outputs_fp32": False},
                       tolerances={"int8": {"cosine": 0.98}})
    art = _planner(prep, cal).convert(row)
    fb = art.manifest["int8_fallback"]
    assert fb["ok"] and fb["objective"] == "worst_cosine" and fb["budget"] == pytest.approx(2.0)
    assert fb["keep_fp32_nodes"] and set(fb["keep_fp32_nodes"]) <= set(art.manifest["keep_fp32_nodes"])
    assert fb["keep_fp32_modules"] and "?" not in fb["keep_fp32_modules"]  # named by PyTorch module
    v = art.manifest["verification"]
    assert v["status"] == "ok" and v["drift"]["cosine"] >= 0.98
    assert art.manifest["lint"] and art.manifest["lint"][0]["rule"] == "whole-tensor-norm"


def test_unrepaired_int8_drift_names_int8_remedies(pattern: Any, tmp_path: Path) -> None:
    from edgeconv.core.errors import VerificationError
    from edgeconv.plan import make_rows

    prep, cal, _ = pattern("norm")
    (row,) = make_rows(["onnxruntime"], ["int8"], tmp_path, options={"keep_outputs_fp32": False,
                                                                      "int8_fallback": False},
                       tolerances={"int8": {"cosine": 0.98}})
    with pytest.raises(VerificationError, match="cosine") as e:
        _planner(prep, cal).convert(row)
    assert "--keep-fp32" in e.value.hint and "--calib-method" in e.value.hint and "--route" not in e.value.hint
