"""``load_eval_data`` reads OCR labels and segmentation masks for a task spec, and ``task_metric`` scores the tiny
models' real outputs from them (the report's task block)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import task_models as tm  # noqa: E402

from edgeconv.bench.evaluate import load_eval_data, task_metric  # noqa: E402
from edgeconv.calibration.preprocess import Preprocess  # noqa: E402
from edgeconv.core.errors import ConfigError  # noqa: E402
from edgeconv.core.tensors import TensorSpec  # noqa: E402


def _run(model: torch.nn.Module, feeds: list[dict[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
    with torch.no_grad():
        return [{"out": model(torch.from_numpy(f["images"])).numpy()} for f in feeds]


def test_ctc_folder_labels_and_block(tmp_path: Path) -> None:
    labels = tm.write_ctc_images(tmp_path, 12, seed=3)
    spec = TensorSpec("images", (1, 3, 8, 64), "float32")
    ev = load_eval_data(tmp_path, input_spec=spec, preprocess=Preprocess(size=(8, 64)),
                        task="ctc:alphabet=0123456789,labels=prefix")
    assert sorted(ev.labels) == sorted(labels) and ev.task.startswith("ctc:")
    refs = _run(tm.build_ctc(), ev.feeds)
    gots = [{"out": o["out"][:, ::-1].copy()} for o in refs]  # classes reversed: a broken artifact
    block, _ = task_metric(ev.task, None, refs, gots, ev, {"task_delta": 1.0})
    assert (block["metric"], block["reference"], block["value"]) == ("exact_match", 100.0, 0.0)
    assert block["pass"] is False and block["extra"]["reference_cer"] == 0.0 and block["extra"]["cer"] > 50
    assert block["delta_ci95"] == [-100.0, -100.0]
    with pytest.raises(ConfigError, match="not in the alphabet"):
        load_eval_data(tmp_path, input_spec=spec, preprocess=Preprocess(size=(8, 64)),
                       task="ctc:alphabet=0123456789,labels=stem")


def test_segmentation_folder_masks_and_block(tmp_path: Path) -> None:
    tm.write_seg_data(tmp_path, 8, seed=4)
    spec = TensorSpec("images", (1, 3, 32, 32), "float32")
    ev = load_eval_data(tmp_path, input_spec=spec, preprocess=Preprocess(size=(32, 32), resize="letterbox"),
                        task="segmentation:ignore=255")
    assert len(ev) == 8 and ev.labels[0].shape == (40, 48) and ev.metas[0]["input_width"] == 32
    assert all(p.parent.name == "images" for p in ev.files)
    refs = _run(tm.build_seg(), ev.feeds)
    block, _ = task_metric(ev.task, None, refs, refs, ev, {"task_delta": 1.0})
    assert block["metric"] == "miou" and 70.0 < block["reference"] == block["value"] < 100.0
    assert block["delta"] == 0.0 and block["pass"] is True and block["delta_ci95"] == [0.0, 0.0]
    assert block["extra"]["pixel_accuracy"] > 90.0
    unlabelled = load_eval_data(tmp_path / "images", input_spec=spec, preprocess=Preprocess(size=(32, 32)),
                                task="segmentation")
    assert unlabelled.labels is None
    free, _ = task_metric("segmentation", None, refs, refs, unlabelled, {})
    assert (free["metric"], free["value"], free["labelled"]) == ("label_free_miou", 100.0, False)
