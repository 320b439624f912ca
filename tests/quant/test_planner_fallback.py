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


def test_a_cache_hit_of_the_repaired_artifact_carries_the_search(pattern: Any, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    import json

    from edgeconv.core import cache
    from edgeconv.plan import Planner, make_rows

    monkeypatch.setenv("EDGECONV_CACHE", str(tmp_path / "cache"))
    prep, cal, ev = pattern("concat")
    (row,) = make_rows(["onnxruntime"], ["int8"], tmp_path / "a", options={"keep_outputs_fp32": False},
                       tolerances={"int8": {"task_delta": 0.5, "cosine": 0.0}})
    planner = Planner(prep, use_cache=True, evaluator_factory=lambda *_: ev)
    planner.calibration = lambda row: cal  # type: ignore[method-assign]
    art = planner.convert(row)
    cached = cache.lookup("artifacts", art.manifest["cache_key"])
    assert cached is not None
    assert json.loads((cached / "manifest.json").read_text())["int8_fallback"] == art.manifest["int8_fallback"]


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
    assert art.manifest["adopted"]["from"].startswith("attempt ")  # the measured attempt, through the isolated child
    conv = art.manifest["conversion"]
    assert conv["int8"]["kept_fp32"] == [conv["node_layers"]["/inner/conv2/Conv"]]


def _counting_convert(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    from edgeconv.targets.onnxruntime import OnnxRuntimeTarget

    calls: list[int] = []
    real = OnnxRuntimeTarget.convert

    def convert(self: Any, ctx: Any) -> Any:
        calls.append(1)
        return real(self, ctx)

    monkeypatch.setattr(OnnxRuntimeTarget, "convert", convert)
    return calls


def test_the_chosen_attempt_is_shipped_not_converted_again(pattern: Any, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """A converter that is not deterministic (MNN's int8 tool) must ship the artifact the search measured: the
    chosen attempt's files are verified again under the row's tolerances instead of being converted a second time."""
    from edgeconv.plan import make_rows

    calls = _counting_convert(monkeypatch)
    prep, cal, ev = pattern("concat")
    (row,) = make_rows(["onnxruntime"], ["int8"], tmp_path, options={"keep_outputs_fp32": False},
                       tolerances={"int8": {"task_delta": 0.5, "cosine": 0.0}})
    art = _planner(prep, cal, ev).convert(row)
    fb, adopted = art.manifest["int8_fallback"], art.manifest["adopted"]
    assert len(calls) == 1 + len(fb["attempts"])  # the row's own conversion, then one per attempt; none after
    chosen = next(i for i, a in enumerate(fb["attempts"], 1) if a["artifact"] == fb["artifact"])
    assert adopted["from"] == f"attempt {chosen}" and adopted["conversion_key"] == art.manifest["conversion_key"]
    chosen = fb["attempts"][chosen - 1]
    assert chosen["passed"] and chosen["delta"] == pytest.approx(art.manifest["verification"]["task"]["delta"])


def test_another_conversion_or_a_changed_file_is_converted_anew(pattern: Any, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from edgeconv.pipeline import convert_reference

    prep, cal, _ = pattern("concat")
    kw: dict[str, Any] = {"precision": "int8", "calibration": cal, "use_cache": False}
    first = convert_reference(prep, "onnxruntime", out=tmp_path / "a", options={"keep_outputs_fp32": True}, **kw)
    calls = _counting_convert(monkeypatch)
    other = convert_reference(prep, "onnxruntime", out=tmp_path / "b", options={"keep_outputs_fp32": False},
                              adopt=first, **kw)
    assert "adopted" not in other.manifest and len(calls) == 1
    same = convert_reference(prep, "onnxruntime", out=tmp_path / "c", options={"keep_outputs_fp32": True},
                             adopt=first, **kw)
    assert same.manifest["adopted"]["from"] == str(first.path) and len(calls) == 1
    model = next(f for f in first.manifest["files"] if f.endswith(".onnx"))
    (first.path / model).write_bytes((first.path / model).read_bytes() + b"\0")
    again = convert_reference(prep, "onnxruntime", out=tmp_path / "d", options={"keep_outputs_fp32": True},
                              adopt=first, **kw)
    assert "adopted" not in again.manifest and len(calls) == 2
