"""Loaders for labelled evaluation sets (bundled or the user's own) and image preprocessing.

Detection: YOLO-txt (``images/`` + ``labels/`` with ``cls cx cy w h`` normalised) or COCO JSON
(``instances.json`` / ``annotations/*.json``).  Classification: ImageFolder (``<class>/*.jpg``).
Everything is returned as plain numpy / paths, with boxes in xyxy *pixels of the original image*,
so metric code never needs to know which format a dataset came from.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from edgeconv.core.errors import ConfigError

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


class DatasetFormatError(ConfigError, ValueError):
    """The folder does not hold labels in a known layout.  Also a ``ValueError`` so callers that treat
    "no labels" as "unlabelled images" can catch it without importing edgeconv's error hierarchy."""


DetectionSample = tuple[Path, np.ndarray, np.ndarray]  # (image path, boxes (N,4) xyxy px float32, classes (N,) int64)


def list_images(root: str | Path) -> list[Path]:
    """All images under ``root`` (recursive), sorted for a deterministic order."""
    root = Path(root)
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTS and p.is_file())


def _image_size(path: Path) -> tuple[int, int]:
    from PIL import Image

    with Image.open(path) as im:  # reads only the header
        return im.size  # (w, h)


def _find_coco_json(root: Path) -> Path | None:
    for cand in (root / "instances.json", *sorted((root / "annotations").glob("*.json"))):
        if cand.is_file():
            return cand
    return None


def load_coco_labels(
    json_path: str | Path, image_root: str | Path | None = None
) -> tuple[list[DetectionSample], list[str]]:
    """COCO JSON -> samples + class names.  Category ids are mapped to contiguous indices in id order;
    crowd annotations are skipped (the metrics treat every GT box as non-crowd)."""
    json_path = Path(json_path)
    image_root = Path(image_root) if image_root is not None else json_path.parent
    coco = json.loads(json_path.read_text())
    cats = sorted(coco.get("categories", []), key=lambda c: c["id"])
    cat_to_idx = {c["id"]: i for i, c in enumerate(cats)}
    by_image: dict[Any, list[dict]] = {}
    for a in coco.get("annotations", []):
        if not a.get("iscrowd", 0):
            by_image.setdefault(a["image_id"], []).append(a)
    samples = []
    for im in sorted(coco["images"], key=lambda i: i["file_name"]):
        anns = by_image.get(im["id"], [])
        boxes = np.array([[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in anns)], np.float32).reshape(-1, 4)
        classes = np.array([cat_to_idx[a["category_id"]] for a in anns], np.int64)
        path = image_root / im["file_name"]
        if not path.exists() and (image_root / "images" / Path(im["file_name"]).name).exists():
            path = image_root / "images" / Path(im["file_name"]).name
        samples.append((path, boxes, classes))
    return samples, [c["name"] for c in cats]


def load_yolo_labels(root: str | Path) -> list[DetectionSample]:
    """YOLO layout -> samples.  An image without a label file is a valid image with no objects."""
    root = Path(root)
    img_dir = root / "images" if (root / "images").is_dir() else root
    lbl_dir = root / "labels" if (root / "labels").is_dir() else root
    samples = []
    for img in list_images(img_dir):
        rel = img.relative_to(img_dir).with_suffix(".txt")
        lbl = lbl_dir / rel
        rows = np.zeros((0, 5), np.float64)
        if lbl.is_file():
            text = lbl.read_text().strip()
            if text:
                rows = np.array([[float(v) for v in line.split()[:5]] for line in text.splitlines() if line.strip()])
        w, h = _image_size(img)
        cx, cy, bw, bh = rows[:, 1] * w, rows[:, 2] * h, rows[:, 3] * w, rows[:, 4] * h
        boxes = np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], 1).astype(np.float32)
        samples.append((img, boxes.reshape(-1, 4), rows[:, 0].astype(np.int64)))
    return samples


def load_detection_labels(root: str | Path, fmt: str = "auto") -> list[DetectionSample]:
    """Load a labelled detection set; ``fmt`` is ``"auto"`` (COCO JSON if present, else YOLO), ``"coco"``
    or ``"yolo"``.  ``root`` may also be a COCO ``.json`` file."""
    root = Path(root)
    if root.is_file() and root.suffix == ".json":
        return load_coco_labels(root)[0]
    coco_json = _find_coco_json(root)
    if fmt == "coco" or (fmt == "auto" and coco_json is not None):
        if coco_json is None:
            raise DatasetFormatError(f"no COCO JSON (instances.json or annotations/*.json) under {root}")
        return load_coco_labels(coco_json, root)[0]
    if fmt not in ("auto", "yolo"):
        raise DatasetFormatError(f"unknown detection label format {fmt!r}", hint="use 'auto', 'yolo' or 'coco'")
    if not (root / "labels").is_dir() and not any(root.glob("*.txt")):
        raise DatasetFormatError(
            f"no YOLO labels/ or COCO JSON found under {root}",
            hint="expected images/ + labels/*.txt (YOLO) or instances.json / annotations/*.json (COCO)",
        )
    return load_yolo_labels(root)


def load_imagefolder(root: str | Path) -> tuple[list[tuple[Path, int]], list[str]]:
    """ImageFolder layout -> ``([(path, class_index)], class_names)``; classes are sorted folder names
    unless a ``manifest.json`` with ``class_names`` fixes the order (as the bundled splits do)."""
    root = Path(root)
    names = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    manifest = root / "manifest.json"
    if manifest.is_file():
        declared = json.loads(manifest.read_text()).get("class_names")
        if declared and set(names) <= set(declared):
            names = list(declared)
    samples = [(p, i) for i, n in enumerate(names) if (root / n).is_dir() for p in list_images(root / n)]
    return samples, names


def preprocess_image(path_or_array: str | Path | np.ndarray, pre: Mapping[str, Any]) -> np.ndarray:
    """Apply a model's ``preprocess`` dict (see ``edgeconv.zoo.BundledModel``) -> (1, C, H, W) or NHWC.

    A thin door onto the one preprocessing contract (``edgeconv.calibration.preprocess.Preprocess``), so the FP32
    quality of the bundled models is measured with exactly the code calibration and benchmarking use. An array is
    taken as HxWxC RGB uint8.
    """
    from edgeconv.calibration.preprocess import Preprocess

    pp = Preprocess.from_dict(dict(pre))
    if isinstance(path_or_array, np.ndarray):
        img = path_or_array[..., ::-1] if pp.color == "BGR" else path_or_array
        return pp.apply(np.ascontiguousarray(img))
    return pp.apply(pp.load(path_or_array))
