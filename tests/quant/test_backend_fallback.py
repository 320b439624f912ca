"""The float-fallback search on backends other than ONNX Runtime: each keeps the reference nodes it is handed in
float through its own mechanism (ncnn: the ncnn layers computing them; TFLite: the traced PT2E nodes left
unannotated), so the same ORT-proxy ranking repairs the outlier pattern there too."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

BUDGET = 0.5


def _search(pattern: Any, target: str, tmp_path: Path, options: dict[str, Any] | None = None) -> Any:
    from edgeconv.calibration.stats import compute_stats
    from edgeconv.quant import pipeline_builder, rank_layers, repair

    prep, cal, ev = pattern("outlier")
    ref = prep.reference
    ranked = rank_layers(ref.onnx_path, cal.feeds(), compute_stats(ref.onnx_path, ref.sha256, cal, "minmax"))
    build = pipeline_builder(prep, target, calibration=cal, evaluator=ev, out_root=tmp_path, options=options,
                             use_cache=False, latency_runs=0)
    return repair(build, ranked, BUDGET, max_attempts=6)


def test_ncnn_fallback_keeps_the_culprit_conv_and_skips_nodes_ncnn_keeps_float(pattern: Any, tmp_path: Path) -> None:
    pytest.importorskip("ncnn", reason="ncnn is not installed")
    pytest.importorskip("pnnx", reason="pnnx is not installed")
    res = _search(pattern, "ncnn", tmp_path)
    assert res.ok and res.keep == ("/inner/conv2/Conv",), res.to_dict()
    assert res.baseline_delta is not None and res.baseline_delta < -10 * BUDGET and res.delta >= -BUDGET
    base = res.attempts[0]
    # the ORT proxy ranks the spiky Add too; ncnn runs it in float anyway, so no attempt is spent on it
    assert base.stage == "baseline" and "/inner/Add" in base.extras["already_float"]
    assert all("/inner/Add" not in a.keep for a in res.attempts) and len(res.attempts) == 2


@pytest.mark.slow
def test_tflite_fallback_keeps_the_culprit_conv(pattern: Any, tmp_path: Path) -> None:
    pytest.importorskip("litert_torch", reason="litert-torch is not installed")
    res = _search(pattern, "tflite", tmp_path, {"observer": "minmax"})
    # the spiky sum or the conv reading it: either leaves the conv's input in float on the PT2E route
    assert res.ok and len(res.keep) == 1 and set(res.keep) <= {"/inner/Add", "/inner/conv2/Conv"}, res.to_dict()
    assert res.baseline_delta is not None and res.baseline_delta < -10 * BUDGET and res.delta >= -BUDGET
