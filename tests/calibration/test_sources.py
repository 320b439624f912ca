"""Data sources: every supported layout is discovered, sorted, and nothing unexpected is read."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from edgeconv.calibration.sources import discover, list_eval_files
from edgeconv.core.errors import CalibrationError


def test_image_folder_is_recursive_and_takes_all_suffixes(make_images, tmp_path: Path) -> None:
    make_images(tmp_path / "a", 2, suffix=".png")
    make_images(tmp_path / "a" / "deeper", 2, seed=1, suffix=".jpg")
    make_images(tmp_path / "b", 1, seed=2, suffix=".bmp")
    make_images(tmp_path / "b", 1, seed=3, suffix=".webp")
    make_images(tmp_path, 1, seed=4, suffix=".jpeg")
    (tmp_path / "notes.txt").write_text("not an image")
    kind, samples = discover(tmp_path)
    assert kind == "image-folder"
    assert len(samples) == 7
    assert {s.path.suffix for s in samples} == {".png", ".jpg", ".jpeg", ".bmp", ".webp"}
    assert samples == sorted(samples)


def test_class_folders_kind(make_images, tmp_path: Path) -> None:
    for c in ("cat", "dog"):
        make_images(tmp_path / c, 3, seed=len(c) + ord(c[0]))
    kind, samples = discover(tmp_path)
    assert kind == "class-folders"
    assert len(samples) == 6


def test_yolo_reads_images_only(make_images, tmp_path: Path) -> None:
    make_images(tmp_path / "images", 4)
    (tmp_path / "labels").mkdir()
    for i in range(4):
        (tmp_path / "labels" / f"img_0_{i:04d}.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    make_images(tmp_path / "vis", 3, seed=9)  # stray visualisations beside the split are not calibration data
    kind, samples = discover(tmp_path)
    assert kind == "yolo"
    assert len(samples) == 4 and all(s.path.parent.name == "images" for s in samples)


def test_coco_json(make_images, tmp_path: Path) -> None:
    files = make_images(tmp_path / "images", 5)
    coco = {"images": [{"id": i, "file_name": p.name} for i, p in enumerate(files[:3])], "annotations": []}
    (tmp_path / "instances.json").write_text(json.dumps(coco))
    kind, samples = discover(tmp_path / "instances.json")
    assert kind == "coco"
    assert [s.path for s in samples] == sorted(files[:3])


def test_batched_npy_and_npz_split_into_rows(tmp_path: Path) -> None:
    np.save(tmp_path / "batch.npy", np.zeros((5, 3, 8, 8), np.float32))
    np.savez(tmp_path / "one.npz", images=np.zeros((3, 8, 8), np.float32))
    kind, samples = discover(tmp_path, sample_ndim=4)
    assert kind == "tensors"
    assert sum(s.row is not None for s in samples) == 5 and len(samples) == 6


def test_missing_and_empty_are_clear(tmp_path: Path) -> None:
    with pytest.raises(CalibrationError, match="does not exist"):
        discover(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.md").write_text("x")
    with pytest.raises(CalibrationError, match="holds no images"):
        discover(tmp_path / "empty")
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(CalibrationError, match="not COCO"):
        discover(tmp_path / "bad.json")


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="permissions do not apply to root")
def test_unreadable_folder(make_images, tmp_path: Path) -> None:
    d = tmp_path / "locked"
    make_images(d, 2)
    d.chmod(0)
    try:
        with pytest.raises(CalibrationError, match="not readable"):
            discover(d)
    finally:
        d.chmod(0o755)


def test_list_eval_files(make_images, tmp_path: Path) -> None:
    make_images(tmp_path / "images", 3)
    (tmp_path / "labels").mkdir()
    assert len(list_eval_files(tmp_path)) == 3
