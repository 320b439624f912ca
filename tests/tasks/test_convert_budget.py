"""The conversion-time task budget for OCR (CTC) and segmentation: ``api.convert`` to ORT INT8 with labelled held-out
data checks exact match / mIoU on it, and repairs (float fallback) an artifact whose class margins INT8 destroys."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("onnxruntime", reason="the INT8 rows run on ONNX Runtime")

import task_models as tm  # noqa: E402  (tests/tasks/conftest.py puts it on the path)

from edgeconv import api  # noqa: E402
from edgeconv.core.errors import VerificationError  # noqa: E402

HERE = Path(__file__).parent
CTC = "ctc:alphabet=0123456789,blank=0,labels=prefix"


def _convert(tmp: Path, factory: str, inputs: str, preprocess: str, task: str, calib: str = "calib",
             **kw: Any) -> Any:
    (oc,) = api.convert(f"{HERE / 'task_models.py'}:{factory}", targets=["onnxruntime"], precisions=["int8"],
                        out=tmp / "out", inputs=[inputs], calib=str(tmp / calib), calib_size=40,
                        preprocess=preprocess, eval_data=str(tmp / "test"), task=task, use_cache=False,
                        exporters=("legacy",), simplify=False, **kw)
    return oc


@pytest.mark.parametrize("fragile", [False, True])
def test_ctc_int8_is_checked_on_exact_match(fragile: bool, tmp_path: Path) -> None:
    lo, hi = (0.4, 0.6) if fragile else (0.05, 0.95)
    tm.write_ctc_images(tmp_path / "calib", 40, seed=1, lo=lo, hi=hi)
    tm.write_ctc_images(tmp_path / "test", 30, seed=2, lo=lo, hi=hi)
    oc = _convert(tmp_path, "build_ctc", "images:1x3x8x64", "size=8x64", CTC, model_args={"lo": lo, "hi": hi})
    assert oc.error is None, oc.error
    m = oc.artifact.manifest
    task = m["verification"]["task"]
    assert m["verification"]["task_checked"] and task["metric"] == "exact_match" and task["task"] == "ctc"
    assert task["samples"] == 30 and task["reference"] == 100.0 and task["delta"] >= -task["budget"]
    assert m["verification"]["inputs"] == {"held-out": 16}  # drift judged on the labelled data, not on --calib
    assert m["task"]["task"] == CTC  # the user's task is recorded, so bench measures it without repeating it
    fb = m.get("int8_fallback")
    if fragile:  # plain INT8 decodes nothing right; the plan keeps the head in float to stay in budget
        assert fb["baseline_delta"] < -50 and fb["ok"] and any("head" in n for n in fb["keep_fp32_nodes"])
    else:
        assert fb is None and task["delta"] == 0.0


def test_segmentation_int8_is_checked_on_miou(tmp_path: Path) -> None:
    tm.write_seg_data(tmp_path / "calib", 40, seed=1, fragile=True)
    tm.write_seg_data(tmp_path / "test", 20, seed=2, fragile=True)
    oc = _convert(tmp_path, "build_seg", "images:1x3x32x32", "size=32x32", "segmentation:ignore=255",
                  calib="calib/images", model_args={"fragile": True})  # the images, not their masks
    assert oc.artifact.manifest["calibration"]["used"] == 40
    assert oc.error is None, oc.error
    m = oc.artifact.manifest
    task = m["verification"]["task"]
    assert task["metric"] == "miou" and task["task"] == "segmentation" and task["samples"] == 20
    assert 80.0 < task["reference"] < 100.0  # boundaries blur in the resize: a real mIoU, not a tautology
    assert task["delta"] >= -task["budget"]
    fb = m.get("int8_fallback")
    assert fb is not None and fb["baseline_delta"] < -task["budget"] and fb["ok"]


def test_over_budget_without_repair_is_refused(tmp_path: Path) -> None:
    tm.write_ctc_images(tmp_path / "calib", 40, seed=1, lo=0.4, hi=0.6)
    tm.write_ctc_images(tmp_path / "test", 30, seed=2, lo=0.4, hi=0.6)
    with pytest.raises(VerificationError, match=r"task exact_match drops .* > budget 1\.0000 on 30 held-out inputs"):
        _convert(tmp_path, "build_ctc", "images:1x3x8x64", "size=8x64", CTC, model_args={"lo": 0.4, "hi": 0.6},
                 options={"int8_fallback": False})


def test_bench_reuses_the_task_given_at_conversion_and_its_alphabet_file(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from edgeconv.bench.evaluate import BenchOptions, evaluate_artifact
    from edgeconv.bench.latency import LatencyConfig

    tm.write_ctc_images(tmp_path / "calib", 40, seed=1)
    tm.write_ctc_images(tmp_path / "test", 30, seed=2)
    (tmp_path / "chars.txt").write_text("\n".join("0123456789"))
    monkeypatch.chdir(tmp_path)  # @chars.txt relative to where convert ran
    oc = _convert(tmp_path, "build_ctc", "images:1x3x8x64", "size=8x64", "ctc:alphabet=@chars.txt,blank=0,"
                  "labels=prefix")
    assert oc.error is None, oc.error
    assert oc.artifact.manifest["task"]["task"] == f"ctc:alphabet=@{tmp_path / 'chars.txt'},blank=0,labels=prefix"
    monkeypatch.chdir(HERE)  # bench from elsewhere: the recorded path is absolute
    quick = BenchOptions(latency=LatencyConfig(min_iters=2, min_seconds=0.0, warmup_min_iters=1))
    row = evaluate_artifact(oc.artifact.path, str(tmp_path / "test"), options=quick)
    assert row["task"]["metric"] == "exact_match" and row["task"]["labelled"], row.get("task")
