"""The plan repairs an INT8 row over its task budget by itself: the fallback search runs, the chosen layers are kept
in float, the artifact passes the real tolerances, and the manifest records the search."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("onnxruntime", reason="the INT8 rows run on ONNX Runtime")


def _planner(prep: Any, cal: Any, ev: Any) -> Any:
    from edgeconv.plan import Planner

    planner = Planner(prep, use_cache=False, evaluator_factory=lambda *_: ev)
    planner.calibration = lambda row: cal  # type: ignore[method-assign]  # the pattern's own calibration set
    return planner


def test_int8_row_over_budget_is_repaired_by_the_plan(pattern: Any, tmp_path: Path) -> None:
    from edgeconv.plan import make_rows

    prep, cal, ev = pattern("concat")
    (row,) = make_rows(["onnxruntime"], ["int8"], tmp_path, options={"keep_outputs_fp32": False},
                       tolerances={"int8": {"task_delta": 0.5, "cosine": 0.0}})
    art = _planner(prep, cal, ev).convert(row)
    fb = art.manifest["int8_fallback"]
    assert fb["ok"] and fb["keep_fp32_nodes"] and fb["delta"] >= -0.5
    v = art.manifest["verification"]
    assert v["status"] == "ok" and v["task"]["delta"] >= -0.5
    assert set(fb["keep_fp32_nodes"]) <= set(art.manifest["keep_fp32_nodes"])


def test_fallback_can_be_turned_off(pattern: Any, tmp_path: Path) -> None:
    from edgeconv.core.errors import VerificationError
    from edgeconv.plan import make_rows

    prep, cal, ev = pattern("concat")
    (row,) = make_rows(["onnxruntime"], ["int8"], tmp_path, options={"keep_outputs_fp32": False,
                                                                      "int8_fallback": False},
                       tolerances={"int8": {"task_delta": 0.5, "cosine": 0.0}})
    with pytest.raises(VerificationError, match="budget"):
        _planner(prep, cal, ev).convert(row)


@pytest.mark.slow  # four ncnn conversions, each scored on 300 items: ~1 min on a shared 2-core machine
def test_ncnn_int8_row_over_budget_is_repaired_by_the_plan(pattern: Any, tmp_path: Path) -> None:
    """The same plan repair on ncnn: the chosen reference node reaches ncnn as the layer computing it."""
    pytest.importorskip("ncnn", reason="ncnn is not installed")
    pytest.importorskip("pnnx", reason="pnnx is not installed")
    from edgeconv.plan import make_rows

    prep, cal, ev = pattern("outlier")
    (row,) = make_rows(["ncnn"], ["int8"], tmp_path, tolerances={"int8": {"task_delta": 0.5, "cosine": 0.0}})
    art = _planner(prep, cal, ev).convert(row)
    fb = art.manifest["int8_fallback"]
    assert fb["ok"] and fb["keep_fp32_nodes"] == ["/inner/conv2/Conv"] and fb["baseline_delta"] < -5
    assert art.manifest["verification"]["task"]["delta"] >= -0.5
    conv = art.manifest["conversion"]
    assert conv["int8"]["kept_fp32"] == [conv["node_layers"]["/inner/conv2/Conv"]]
