"""Metric, NMS, decoder, plug-in and loader tests (numpy only; fast)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edgeconv.bench.datasets import load_coco_labels, load_detection_labels, load_imagefolder, load_yolo_labels
from edgeconv.bench.detection import Detections, box_iou, decode_centernet, decode_yolo, nms
from edgeconv.bench.metrics import coco_map, label_free_map, map_numpy, top1_agreement, topk_accuracy
from edgeconv.bench.plugins import load_callable
from edgeconv.core.errors import ConfigError
from edgeconv.zoo import yolo as yolo_mod


def _random_boxes(rng: np.random.Generator, n: int, size: float = 256) -> np.ndarray:
    xy = rng.uniform(0, size * 0.8, size=(n, 2))
    wh = rng.uniform(4, size * 0.3, size=(n, 2))
    return np.concatenate([xy, xy + wh], 1)


def _brute_iou(a, b) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def test_box_iou_matches_bruteforce() -> None:
    rng = np.random.default_rng(0)
    a, b = _random_boxes(rng, 7), _random_boxes(rng, 5)
    got = box_iou(a, b)
    want = np.array([[_brute_iou(x, y) for y in b] for x in a])
    np.testing.assert_allclose(got, want, atol=1e-12)
    assert box_iou(np.zeros((0, 4)), b).shape == (0, 5)


def _nms_reference(boxes, scores, classes, thr):
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    keep, removed = [], set()
    for i in order:
        if i in removed:
            continue
        keep.append(i)
        for j in order:
            if j not in removed and j != i and classes[j] == classes[i] and _brute_iou(boxes[i], boxes[j]) > thr:
                removed.add(j)
    return keep


@pytest.mark.parametrize("seed", range(5))
def test_nms_matches_bruteforce(seed: int) -> None:
    rng = np.random.default_rng(seed)
    # Clustered boxes so that suppression actually happens.
    centers = _random_boxes(rng, 6)
    boxes = np.concatenate([c + rng.normal(0, 6, size=(12, 4)) for c in centers])
    boxes[:, 2:] = np.maximum(boxes[:, 2:], boxes[:, :2] + 1)
    scores = rng.random(len(boxes))
    classes = rng.integers(0, 3, len(boxes))
    got = nms(boxes, scores, classes, 0.5).tolist()
    assert got == _nms_reference(boxes, scores, classes, 0.5)
    agnostic = nms(boxes, scores, None, 0.5).tolist()
    assert agnostic == _nms_reference(boxes, scores, np.zeros_like(classes), 0.5)
    assert len(agnostic) <= len(got)


def _random_eval_set(rng: np.random.Generator, n_img: int = 40, nc: int = 4):
    gts, preds = [], []
    for i in range(n_img):
        ng = int(rng.integers(0, 6)) if i % 7 else 0  # some images without objects
        gb = _random_boxes(rng, ng)
        gc = rng.integers(0, nc, ng)
        gts.append((gb, gc))
        # True positives with jitter of varying size (spans all IoU thresholds), missed GTs, FPs, dupes.
        keep = rng.random(ng) < 0.85
        jitter = rng.normal(0, 1, size=(ng, 4)) * rng.uniform(0.5, 8, size=(ng, 1))
        tb = (gb + jitter)[keep]
        tc = np.where(rng.random(ng) < 0.9, gc, rng.integers(0, nc, ng))[keep]
        nf = int(rng.integers(0, 4))
        dup = tb[: int(rng.integers(0, len(tb) + 1))] + rng.normal(0, 3, size=(min(len(tb), 1), 4)).sum(0)
        boxes = np.concatenate([tb, _random_boxes(rng, nf), dup])
        boxes[:, 2:] = np.maximum(boxes[:, 2:], boxes[:, :2] + 1)
        classes = np.concatenate([tc, rng.integers(0, nc, nf), tc[: len(dup)]])
        scores = rng.random(len(boxes))
        preds.append(Detections(boxes, scores, classes))
    return preds, gts


@pytest.mark.parametrize("seed", range(4))
def test_map_numpy_agrees_with_pycocotools(seed: int) -> None:
    pytest.importorskip("pycocotools")
    preds, gts = _random_eval_set(np.random.default_rng(seed))
    ref = coco_map(preds, gts, use_pycocotools=True)
    own = map_numpy(preds, gts)
    assert 0.05 < ref["map50_95"] < 0.95  # non-degenerate test set
    assert own["map50"] == pytest.approx(ref["map50"], abs=1e-6)
    assert own["map50_95"] == pytest.approx(ref["map50_95"], abs=1e-6)


def test_map_numpy_max_dets_and_no_gt() -> None:
    pytest.importorskip("pycocotools")
    rng = np.random.default_rng(9)
    gb = _random_boxes(rng, 3)
    many = np.concatenate([gb, _random_boxes(rng, 150)])  # >100 dets of one class in one image
    preds = [Detections(many, np.r_[np.full(3, 0.5), rng.random(150)], np.zeros(153, int))]
    gts = [(gb, np.zeros(3, int))]
    assert map_numpy(preds, gts)["map50_95"] == pytest.approx(coco_map(preds, gts)["map50_95"], abs=1e-6)
    assert map_numpy([Detections.empty()], [(np.zeros((0, 4)), np.zeros(0, int))])["map50"] == -1.0


def test_coco_map_has_no_silent_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without pycocotools the reported mAP is an error naming the extra, not quietly the numpy copy."""
    import sys

    from edgeconv.core.errors import MissingDependencyError

    preds, gts = _random_eval_set(np.random.default_rng(3), 8)
    fast = coco_map(preds, gts, use_pycocotools=False)  # asked for explicitly: the fast path
    assert fast == map_numpy(preds, gts)
    for mod in ("pycocotools", "pycocotools.coco", "pycocotools.cocoeval"):
        monkeypatch.setitem(sys.modules, mod, None)
    with pytest.raises(MissingDependencyError, match="pycocotools"):
        coco_map(preds, gts)


def test_perfect_and_label_free_map() -> None:
    rng = np.random.default_rng(1)
    preds, gts = _random_eval_set(rng, 10)
    perfect = [Detections(b, np.ones(len(c)), c) for b, c in gts]
    assert coco_map(perfect, gts)["map50_95"] == pytest.approx(1.0)
    assert map_numpy(perfect, gts)["map50_95"] == pytest.approx(1.0)
    assert label_free_map(preds, preds, score_thr=0.0)["map50_95"] == pytest.approx(1.0)
    shifted = [Detections(p.boxes + 40, p.scores, p.classes) for p in preds]
    assert label_free_map(shifted, preds, score_thr=0.0)["map50_95"] < 0.5


def test_decode_yolo_known_box() -> None:
    nc, na = 5, yolo_mod.NUM_ANCHORS
    maps = {n: np.full((1, na * (5 + nc), 256 // s, 256 // s), -20.0, np.float32)
            for n, s in zip(yolo_mod.OUTPUT_NAMES, yolo_mod.STRIDES)}
    # p4 (stride 16), anchor 1, cell (gx=5, gy=9): xy/wh logits 0 -> centre (gx+0.5)*s, size = anchor.
    a, gx, gy, cls = 1, 5, 9, 3
    v = maps["p4"].reshape(1, na, 5 + nc, 16, 16)
    v[0, a, :4, gy, gx] = 0.0
    v[0, a, 4, gy, gx] = 10.0
    v[0, a, 5 + cls, gy, gx] = 10.0
    dets = decode_yolo(maps)
    assert len(dets) == 1 and len(dets[0]) == 1
    aw, ah = yolo_mod.ANCHORS[1][a]
    cx, cy = (gx + 0.5) * 16, (gy + 0.5) * 16
    np.testing.assert_allclose(dets[0].boxes[0], [cx - aw / 2, cy - ah / 2, cx + aw / 2, cy + ah / 2], atol=1e-3)
    assert dets[0].classes[0] == cls and dets[0].scores[0] > 0.99
    # Tuple input in any order decodes identically (strides inferred from map sizes).
    again = decode_yolo((maps["p5"], maps["p3"], maps["p4"]))
    np.testing.assert_allclose(again[0].boxes, dets[0].boxes)


def test_decode_centernet_known_box() -> None:
    hm = np.zeros((2, 5, 64, 64), np.float32)
    wh = np.zeros((2, 2, 64, 64), np.float32)
    off = np.zeros((2, 2, 64, 64), np.float32)
    hm[1, 2, 10, 20] = 0.9
    hm[1, 2, 10, 21] = 0.5  # neighbour, not a peak
    hm[1, 4, 40, 40] = 0.3
    wh[1, :, 10, 20] = (5, 6)
    off[1, :, 10, 20] = (0.25, 0.5)
    dets = decode_centernet({"heatmap": hm, "wh": wh, "offset": off}, K=10, conf=0.1)
    assert len(dets[0]) == 0 and len(dets[1]) == 2
    d = dets[1]
    assert d.classes.tolist() == [2, 4] and d.scores[0] == pytest.approx(0.9)
    np.testing.assert_allclose(d.boxes[0], [81 - 10, 42 - 12, 81 + 10, 42 + 12], atol=1e-5)


def test_topk_and_agreement() -> None:
    logits = np.array([[3, 1, 0], [0, 1, 2], [1, 3, 2], [2, 0, 1]], np.float32)
    labels = np.array([0, 1, 2, 1])
    acc = topk_accuracy(logits, labels, k=(1, 2, 5))
    assert acc == {"top1": 0.25, "top2": 0.75, "top5": 1.0}
    assert top1_agreement(logits, logits) == 1.0
    assert top1_agreement(logits[:, ::-1], logits) == 0.25


def test_load_callable(tmp_path: Path) -> None:
    assert load_callable("edgeconv.bench.detection:box_iou") is box_iou
    f = tmp_path / "my_post.py"
    f.write_text("def decode(x):\n    return x * 2\n")
    assert load_callable(f"{f}:decode")(21) == 42
    for bad in ("no_colon", "edgeconv.bench.detection:nope", "edgeconv.no_such_module:f", f"{tmp_path}/x.py:f",
                "edgeconv.zoo.yolo:STRIDES"):
        with pytest.raises(ConfigError):
            load_callable(bad)


def test_loaders_roundtrip(tmp_path: Path) -> None:
    from edgeconv.zoo import data as D

    root = D.write_yolo_split(tmp_path / "split", seed=7, start=3, count=6, size=128)
    yolo = load_yolo_labels(root)
    coco, names = load_coco_labels(root / "instances.json")
    auto = load_detection_labels(root)
    assert names == list(D.CLASS_NAMES)
    assert [p.name for p, _, _ in yolo] == [p.name for p, _, _ in coco] == [p.name for p, _, _ in auto]
    for i, ((_, yb, yc), (_, cb, cc)) in enumerate(zip(yolo, coco)):
        _, boxes, classes = D.render_detection(7, 3 + i, 128)
        np.testing.assert_array_equal(yc, classes)
        np.testing.assert_array_equal(cc, classes)
        np.testing.assert_allclose(yb, boxes, atol=1e-3)
        np.testing.assert_allclose(cb, boxes, atol=1e-2)
    assert load_detection_labels(root, fmt="yolo")[0][0] == yolo[0][0]
    manifest = json.loads((root / "manifest.json").read_text())
    assert manifest["indices"] == list(range(3, 9)) and len(manifest["files"]) == 6 * 2 + 1

    # A folder of unlabelled images is a config error, and a ValueError for callers that fall back to "unlabelled".
    unlabelled = tmp_path / "raw"
    unlabelled.mkdir()
    (unlabelled / "a.jpg").write_bytes((root / "images" / "000003.jpg").read_bytes())
    with pytest.raises(ConfigError):
        load_detection_labels(unlabelled)
    with pytest.raises(ValueError):
        load_detection_labels(unlabelled)

    cls_root = D.write_imagefolder_split(tmp_path / "cls", seed=7, start=0, count=10, size=32)
    samples, names = load_imagefolder(cls_root)
    assert names == list(D.CLASS_NAMES) and len(samples) == 10
    assert sorted(c for _, c in samples) == sorted(D.classification_label(i) for i in range(10))
    assert all(p.parent.name == names[c] for p, c in samples)


@pytest.mark.parametrize("seed", range(3))
def test_a_rows_map_and_interval_from_one_accumulation(seed: int) -> None:
    """The benchmark's per-row score: the value accumulated beside the resamples equals pycocotools' and
    ``map_numpy``'s, and the interval is ``map_delta_ci``'s (each resample against ``map_from_parts``:
    tests/tasks/test_bootstrap.py)."""
    pytest.importorskip("pycocotools")
    from edgeconv.bench import metrics

    rng = np.random.default_rng(seed)
    preds, gts = _random_eval_set(rng)
    ref_preds, _ = _random_eval_set(np.random.default_rng(seed + 10))
    ref_preds = ref_preds[: len(gts)]
    point, ci = metrics.map_and_delta_ci(preds, ref_preds, gts)
    coco = coco_map(preds, gts, use_pycocotools=True)
    assert point is not None and ci is not None
    for k in ("map50", "map50_95"):
        assert point[k] == pytest.approx(coco[k], abs=1e-9)
        assert point[k] == pytest.approx(map_numpy(preds, gts)[k], abs=1e-12)
    assert ci == metrics.map_delta_ci(preds, ref_preds, gts)
    assert metrics.map_and_delta_ci(preds[:1], ref_preds[:1], gts[:1]) == (None, None)
