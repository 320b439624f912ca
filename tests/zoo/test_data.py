"""Shapes generator: determinism, label sanity, split writing/caching, committed calibration data."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from edgeconv.zoo import data as D


def test_render_detection_is_deterministic_and_seed_dependent() -> None:
    a = D.render_detection(D.EVAL_SEED, 17)
    b = D.render_detection(D.EVAL_SEED, 17)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    c = D.render_detection(D.CALIB_SEED, 17)
    assert not np.array_equal(a[0], c[0])
    # Independent of call order / other samples rendered in between.
    D.render_detection(D.EVAL_SEED, 3)
    np.testing.assert_array_equal(D.render_detection(D.EVAL_SEED, 17)[0], a[0])


def test_detection_labels_are_sane() -> None:
    counts = []
    for i in range(40):
        img, boxes, classes = D.render_detection(D.TRAIN_SEED, i)
        assert img.shape == (256, 256, 3) and img.dtype == np.uint8
        assert boxes.dtype == np.float32 and classes.dtype == np.int64
        assert len(boxes) == len(classes) >= 1
        assert (boxes[:, :2] >= 0).all() and (boxes[:, 2:] <= 256).all()
        wh = boxes[:, 2:] - boxes[:, :2]
        assert (wh > 8).all()
        assert set(classes.tolist()) <= set(range(D.NUM_CLASSES))
        counts.append(len(classes))
    assert max(counts) <= 6 and len(set(counts)) >= 3


def test_classification_sample() -> None:
    img, cls = D.render_classification(D.EVAL_SEED, 5, cls=2)
    assert img.shape == (D.CLS_SIZE, D.CLS_SIZE, 3) and cls == 2
    img2, _ = D.render_classification(D.EVAL_SEED, 5, cls=2)
    np.testing.assert_array_equal(img, img2)


def test_split_seeds_are_disjoint() -> None:
    assert len({D.TRAIN_SEED, D.EVAL_SEED, D.CALIB_SEED}) == 3
    # Same index, different split -> different content.
    imgs = [D.render_detection(s, 0)[0] for s in (D.TRAIN_SEED, D.EVAL_SEED, D.CALIB_SEED)]
    assert not np.array_equal(imgs[0], imgs[1]) and not np.array_equal(imgs[1], imgs[2])


def test_write_split_manifest_and_atomicity(tmp_path: Path) -> None:
    out = D.write_yolo_split(tmp_path / "s", seed=1, start=0, count=4, size=64)
    m = json.loads((out / "manifest.json").read_text())
    assert m["generator_version"] == D.GENERATOR_VERSION and m["seed"] == 1
    for rel, sha in m["files"].items():
        assert hashlib.sha256((out / rel).read_bytes()).hexdigest() == sha
    assert [p.name for p in tmp_path.iterdir()] == ["s"]  # no temp dirs left behind
    # Rewriting replaces atomically and yields identical bytes.
    D.write_yolo_split(out, seed=1, start=0, count=4, size=64)
    assert json.loads((out / "manifest.json").read_text())["files"] == m["files"]
    assert [p.name for p in tmp_path.iterdir()] == ["s"]


def test_eval_split_cache_reuse(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(D, "EVAL_COUNT", 5)
    monkeypatch.setenv("EDGECONV_CACHE", str(tmp_path / "cache"))
    root = D.eval_split("classification")
    assert root == tmp_path / "cache" / "datasets" / "shapes-cls-eval-v1"
    mtime = (root / "manifest.json").stat().st_mtime_ns
    assert D.eval_split("classification") == root
    assert (root / "manifest.json").stat().st_mtime_ns == mtime  # reused, not regenerated
    (root / "circle" / "000000.jpg").unlink()  # damaged cache -> regenerated
    D.eval_split("classification")
    assert (root / "circle" / "000000.jpg").is_file()
    det = D.eval_split("detection", root=tmp_path / "det")
    assert len(list((det / "images").glob("*.jpg"))) == 5 and (det / "instances.json").is_file()


def test_committed_calibration_data() -> None:
    root = D.CALIBRATION_DIR
    if not (root / "shapes" / "manifest.json").is_file():
        pytest.skip("calibration/ not generated")
    total = sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
    assert total <= 10 * 1024 * 1024
    det = json.loads((root / "shapes" / "manifest.json").read_text())
    assert det["seed"] == D.CALIB_SEED and len(det["indices"]) == 256 and det["size"] == 256
    assert len(list((root / "shapes" / "images").glob("*.jpg"))) == 256
    assert len(list((root / "shapes" / "labels").glob("*.txt"))) == 256
    cls = json.loads((root / "shapes-cls" / "manifest.json").read_text())
    assert len([f for f in cls["files"] if f.endswith(".jpg")]) == 256
    assert (root / "shapes" / "README.md").is_file()
    # Spot-check that a committed file still matches its recorded hash.
    rel, sha = next(iter(det["files"].items()))
    assert hashlib.sha256((root / "shapes" / rel).read_bytes()).hexdigest() == sha


def test_the_split_is_the_same_bytes_rendered_on_threads_or_on_one(tmp_path, monkeypatch) -> None:
    """Images are rendered a thread per core (numpy and Pillow release the GIL): each sample has its own seeded
    generator, so the split — images, labels, COCO JSON, manifest — is byte-identical to a one-thread render."""
    import filecmp

    from edgeconv.zoo import data as zdata

    zdata.write_yolo_split(tmp_path / "threads", 3, 0, 40, 64)
    monkeypatch.setattr(zdata.os, "cpu_count", lambda: 1)
    zdata.write_yolo_split(tmp_path / "one", 3, 0, 40, 64)
    cmp = filecmp.dircmp(tmp_path / "threads", tmp_path / "one")
    assert not cmp.diff_files and not cmp.left_only and not cmp.right_only
    for sub in ("images", "labels"):
        inner = cmp.subdirs[sub]
        assert not inner.diff_files and not inner.left_only and not inner.right_only
        assert len(inner.same_files) == 40
