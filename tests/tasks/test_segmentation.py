"""Segmentation: mIoU / pixel accuracy against a direct per-class computation, masks brought to the output's geometry
(PIL's nearest resize for a stretch, padding excluded for a letterbox), mask files and folders."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edgeconv import tasks
from edgeconv.bench.datasets import load_segmentation, read_mask
from edgeconv.calibration.preprocess import Preprocess
from edgeconv.core.errors import ConfigError
from edgeconv.tasks.segmentation import PAD, confusion, mask_to_output


def _direct(preds: list[np.ndarray], targets: list[np.ndarray], k: int, ignore: int) -> tuple[float, float]:
    """Per class over all pixels with python sets of positions: the definition, no confusion matrix."""
    p = np.concatenate([x.ravel() for x in preds])
    t = np.concatenate([x.ravel() for x in targets])
    keep = t != ignore
    p, t = p[keep], t[keep]
    ious = []
    for c in range(k):
        pc, tc = set(np.nonzero(p == c)[0]), set(np.nonzero(t == c)[0])
        if pc | tc:
            ious.append(len(pc & tc) / len(pc | tc))
    return 100 * float(np.mean(ious)), 100 * float(np.mean(p == t))


def test_miou_and_pixel_accuracy_against_direct_computation() -> None:
    rng = np.random.default_rng(0)
    k = 5
    preds = [rng.integers(0, k - 1, (7, 9)) for _ in range(4)]  # class 4 never predicted
    targets = [np.where(rng.random((7, 9)) < 0.1, 255, np.where(rng.random((7, 9)) < 0.6, p, rng.integers(0, 3,
                                                                                                           (7, 9))))
               for p in preds]
    t = tasks.parse("segmentation:classes=5")
    m = t.summarize(t.sample_stats([[p] for p in preds], [[x] for x in targets]))
    miou, acc = _direct(preds, targets, k, 255)
    assert m["miou"] == pytest.approx(miou) and m["pixel_accuracy"] == pytest.approx(acc)
    cm = confusion(preds[0], targets[0], k, 255)
    assert cm.sum() == int((targets[0] != 255).sum()) and cm[4].sum() == 0
    with pytest.raises(ConfigError, match="class 7 is outside the 5 classes"):
        confusion(preds[0], np.full((7, 9), 7), k, 255)


def test_stretched_mask_matches_pil_nearest() -> None:
    rng = np.random.default_rng(1)
    mask = rng.integers(0, 6, (37, 53)).astype(np.uint8)
    pp = Preprocess(size=(24, 32))
    _, meta = pp.apply_with_meta(np.zeros((37, 53, 3), np.uint8))
    meta = {**meta, "input_height": 24, "input_width": 32}
    for out_hw in ((24, 32), (12, 16)):  # at the input's resolution and a stride-2 head's
        want = np.array(Image.fromarray(mask).resize(out_hw[::-1], Image.NEAREST))
        assert np.array_equal(mask_to_output(mask, meta, out_hw), want)


def test_letterbox_padding_is_not_scored() -> None:
    mask = np.ones((20, 40), np.int64)
    pp = Preprocess(size=(32, 32), resize="letterbox")
    _, meta = pp.apply_with_meta(np.zeros((20, 40, 3), np.uint8))
    out = mask_to_output(mask, {**meta, "input_height": 32, "input_width": 32}, (32, 32))
    assert (out[:8] == PAD).all() and (out[-8:] == PAD).all() and (out[8:24] == 1).all()  # 40x20 -> 32x16 + 8+8 pad
    t = tasks.parse("segmentation")
    pred = np.zeros((32, 32), np.int64)  # wrong only where the padding is
    pred[8:24] = 1
    assert t.summarize(t.sample_stats([[pred]], [[out]]))["pixel_accuracy"] == 100.0


def test_predict_shapes_and_label_free_score() -> None:
    t = tasks.parse("segmentation")
    rng = np.random.default_rng(2)
    logits = rng.normal(size=(1, 4, 6, 6)).astype(np.float32)
    assert np.array_equal(t.predict({"out": logits})[0], logits[0].argmax(0))
    assert np.array_equal(tasks.parse("segmentation").predict(np.array([[[0, 2], [1, 1]]]))[0], [[0, 2], [1, 1]])
    assert np.array_equal(tasks.parse("segmentation:threshold=0.5").predict(np.full((1, 1, 2, 2), 0.7))[0],
                          np.ones((2, 2)))
    other = logits.copy()
    other[0, :, 0, 0] = -logits[0, :, 0, 0]  # flips (at most) one pixel
    b = tasks.score(t, [{"out": logits}] * 3, [{"out": logits}, {"out": other}, {"out": logits}])
    assert b["metric"] == "label_free_miou" and b["reference"] == 100.0
    assert b["extra"]["label_free_pixel_accuracy"] == pytest.approx(100 * (1 - 1 / 108))
    lo, hi = b["delta_ci95"]
    assert lo <= b["delta"] <= hi <= 0
    with pytest.raises(ConfigError, match="output 'seg' is not among"):
        tasks.parse("segmentation:output=seg").predict({"out": logits})


def test_mask_files_and_folders(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    m = np.array([[0, 1], [2, 255]], np.uint8)
    for i in range(2):
        Image.fromarray(np.zeros((2, 2, 3), np.uint8)).save(tmp_path / "images" / f"a{i}.jpg")
    Image.fromarray(m, mode="L").save(tmp_path / "masks" / "a0.png")
    pal = Image.fromarray(m, mode="P")
    pal.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0] + [0] * (256 * 3 - 9))
    pal.save(tmp_path / "masks" / "a1.png")
    images, masks = load_segmentation(tmp_path)
    assert [p.name for p in images] == ["a0.jpg", "a1.jpg"] and [p.name for p in masks] == ["a0.png", "a1.png"]
    assert np.array_equal(read_mask(masks[0]), m) and np.array_equal(read_mask(masks[1]), m)
    Image.fromarray(np.zeros((2, 2, 3), np.uint8)).save(tmp_path / "rgb.png")
    with pytest.raises(ConfigError, match="RGB image, not class indices"):
        read_mask(tmp_path / "rgb.png")
    (tmp_path / "masks" / "a1.png").unlink()
    with pytest.raises(ConfigError, match="1 of 2 images have no mask"):
        load_segmentation(tmp_path)
    assert load_segmentation(tmp_path / "images")[1] is None  # no masks folder: label-free
    np.save(tmp_path / "masks" / "a1.npy", m.astype(np.int64))
    assert load_segmentation(tmp_path, masks=str(tmp_path / "masks"))[1][1].name == "a1.npy"
