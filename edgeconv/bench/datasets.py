"""Loaders for labelled evaluation sets (bundled or the user's own) and image preprocessing.

Detection: YOLO-txt (``images/`` + ``labels/`` with ``cls cx cy w h`` normalised) or COCO JSON
(``instances.json`` / ``annotations/*.json``).  Classification: ImageFolder (``<class>/*.jpg``).  Segmentation:
``images/`` + ``masks/<stem>.png`` (class indices).  OCR labels come from file names or a CSV (``edgeconv.tasks.ctc``).
Everything is returned as plain numpy / paths, with boxes in xyxy *pixels of the original image*,
so metric code never needs to know which format a dataset came from.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgeconv.bench.latency import summarize
from edgeconv.calibration.preprocess import Preprocess
from edgeconv.core.errors import ConfigError
from edgeconv.core.tensors import TensorSpec, random_feeds

TENSOR_SUFFIXES = (".npy", ".npz")
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


MASK_EXTS = (".png", ".npy", ".bmp", ".tif", ".tiff")


def read_mask(path: str | Path) -> np.ndarray:
    """A mask file -> [H, W] int64 class indices: an index PNG (mode P, L or 16-bit I;16/I) or a ``.npy``.

    Colour masks are refused rather than guessed: mapping a palette of RGB colours to classes is dataset-specific.
    """
    path = Path(path)
    if path.suffix.lower() == ".npy":
        m = np.load(path, allow_pickle=False)
    else:
        from PIL import Image

        with Image.open(path) as im:
            if im.mode not in ("P", "L", "I;16", "I;16B", "I;16L", "I", "1"):
                raise DatasetFormatError(f"mask {path.name} is a {im.mode} image, not class indices",
                                         hint="save masks as index PNGs (mode P or L: one class index per pixel)")
            m = np.array(im)
    m = np.asarray(m)
    if m.ndim == 3 and m.shape[-1] == 1:
        m = m[..., 0]
    if m.ndim != 2:
        raise DatasetFormatError(f"mask {path.name} has shape {list(m.shape)}, not [H, W] class indices")
    return m.astype(np.int64)


def load_segmentation(root: str | Path, masks: str | Path | None = None) -> tuple[list[Path], list[Path] | None]:
    """Images under ``root`` (``root/images`` when present; never the masks folder) and, per image, the mask with
    its stem in ``masks`` (default ``root/masks``). No masks folder: ``(images, None)`` (label-free). A masks folder
    that lacks some images' masks is an error, not a smaller evaluation."""
    root = Path(root)
    mask_dir = Path(masks).expanduser() if masks else root / "masks"
    if masks and not mask_dir.is_absolute() and not mask_dir.is_dir() and (root / mask_dir).is_dir():
        mask_dir = root / mask_dir
    if masks and not mask_dir.is_dir():
        raise DatasetFormatError(f"masks folder {mask_dir} does not exist", hint="segmentation:masks=DIR")
    img_root = root / "images" if (root / "images").is_dir() else root
    mres = mask_dir.resolve()
    images = [p for p in list_images(img_root) if not p.resolve().is_relative_to(mres)]
    if not mask_dir.is_dir():
        return images, None
    by_stem: dict[str, Path] = {}
    for p in sorted(mask_dir.rglob("*")):
        if p.suffix.lower() in MASK_EXTS and p.is_file():
            by_stem.setdefault(p.relative_to(mask_dir).with_suffix("").as_posix(), p)
            by_stem.setdefault(p.stem, p)
    out, missing = [], []
    for img in images:
        rel = img.relative_to(img_root).with_suffix("").as_posix()
        m = by_stem.get(rel) or by_stem.get(img.stem)
        (out if m is not None else missing).append(m if m is not None else img)
    if missing:
        raise DatasetFormatError(f"{len(missing)} of {len(images)} images have no mask in {mask_dir} "
                                 f"(e.g. {missing[0].name})", hint="one <stem>.png of class indices per image")
    return images, out


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


# --- evaluation data ---------------------------------------------------------------------------------------------


@dataclass
class EvalData:
    """Preprocessed evaluation inputs with what is needed to score them."""

    feeds: list[dict[str, np.ndarray]]
    metas: list[dict[str, float]]
    labels: list[Any] | None  # detection: (boxes xyxy image px, classes); classification: class index
    task: str | None
    source: str
    preprocess: Preprocess | None = None
    preprocess_ms: dict[str, Any] | None = None
    files: list[Path] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.feeds)


def _spread(items: list[Any], limit: int) -> list[Any]:
    """An evenly spaced, deterministic subset: the first N of a class-sorted folder would be one class only."""
    if limit <= 0 or len(items) <= limit:
        return items
    step = len(items) / limit
    return [items[int(i * step)] for i in range(limit)]


def load_eval_data(data: str | Path | None, *, input_spec: TensorSpec, preprocess: Preprocess | None,
                   task: str | None = None, limit: int = 100, labels: bool = True) -> EvalData:
    """Build evaluation inputs. ``data``: ``None`` (seeded random inputs: drift only, no task metric), ``zoo`` /
    ``zoo:detection`` / ``zoo:classification`` (the bundled eval split), a folder of images (labelled as YOLO/COCO
    detection, ImageFolder classification, OCR strings from file names or a CSV, or segmentation masks when
    ``task`` says so, else unlabelled), or ``.npy``/``.npz`` tensors. ``task`` is a spec string (docs/tasks.md)."""
    from edgeconv import tasks
    tk = tasks.parse(task)  # a bad spec fails here, before any image is read
    tname = tk.name if tk is not None else None
    if data is None:
        n = max(1, min(limit, 8))
        feeds = [random_feeds([input_spec], seed=i) for i in range(n)]
        return EvalData(feeds, [{} for _ in feeds], None, task, "random")
    text = str(data)
    if text == "zoo" or text.startswith("zoo:"):
        from edgeconv.zoo.data import eval_split

        kind = text[4:] if text.startswith("zoo:") else (tname or "detection")
        if kind not in ("detection", "classification"):
            raise ConfigError(f"there is no bundled evaluation split for {kind!r} (only detection, classification)",
                              hint="pass --data DIR with your own labelled images")
        task = task or kind
        tname = tname or kind
        root = eval_split(kind)
    else:
        root = Path(text).expanduser()
        if not root.exists():
            raise ConfigError(f"evaluation data {root} does not exist", hint="pass --data DIR (images or tensors)")
    tensor_files = sorted(p for p in ([root] if root.is_file() else root.rglob("*"))
                          if p.suffix.lower() in TENSOR_SUFFIXES)
    if tname == "segmentation":  # masks may be .npy: only tensors outside the masks folder are inputs
        mdir = Path(tk.options.get("masks") or root / "masks").resolve() if tk is not None else None
        tensor_files = [p for p in tensor_files if mdir is None or not p.resolve().is_relative_to(mdir)]
    if tensor_files:
        feeds = []
        for p in _spread(tensor_files, limit):
            if p.suffix == ".npy":
                x = np.load(p, allow_pickle=False)
            else:
                with np.load(p, allow_pickle=False) as z:
                    x = z[input_spec.name] if input_spec.name in z.files else z[z.files[0]]
            x = np.asarray(x, dtype=input_spec.dtype)
            feeds.append({input_spec.name: x if x.ndim == len(input_spec.static_shape) else x[None]})
        return EvalData(feeds, [{} for _ in feeds], None, task, str(root), files=_spread(tensor_files, limit))
    if preprocess is None:
        raise ConfigError("image evaluation data needs a preprocessing contract",
                          hint="pass --preprocess (or convert with --preprocess so the artifact records it)")
    items, has_labels = _labelled_items(root, tk, labels)
    if not items:
        raise ConfigError(f"no images found under {root}")
    items = _spread(items, limit)
    if tname == "segmentation" and has_labels:
        items = [(p, read_mask(m)) for p, m in items]
    feeds, metas, pre_ms = [], [], []
    th, tw = preprocess.size
    for path, _ in items:
        t0 = time.perf_counter_ns()
        x, meta = preprocess.apply_with_meta(preprocess.load(path))
        pre_ms.append((time.perf_counter_ns() - t0) / 1e6)
        feeds.append({input_spec.name: x})
        metas.append({**meta, "input_height": th, "input_width": tw})
    return EvalData(feeds, metas, [lab for _, lab in items] if has_labels else None, task, str(root), preprocess,
                    stage_summary(summarize(pre_ms)), [p for p, _ in items])


def _labelled_items(root: Path, tk: Any, labels: bool) -> tuple[list[tuple[Path, Any]], bool]:
    """(image, label) pairs in the task's label format, and whether they are labelled."""
    tname = tk.name if tk is not None else None
    if labels and tname == "detection":
        try:
            return [(p, (b, c)) for p, b, c in load_detection_labels(root)], True
        except (FileNotFoundError, ValueError):
            pass
    elif labels and tname == "classification" and any(d.is_dir() for d in root.iterdir()):
        return list(load_imagefolder(root)[0]), True
    elif tname == "segmentation":
        images, masks = load_segmentation(root, tk.options.get("masks"))
        if labels and masks is not None:
            return list(zip(images, masks, strict=True)), True
        return [(p, None) for p in images], False
    elif labels and tname == "ctc":
        from edgeconv.tasks.ctc import load_labels

        images = list_images(root)
        strings = load_labels(images, root, tk)
        if strings is not None:
            return list(zip(images, strings, strict=True)), True
        return [(p, None) for p in images], False
    return [(p, None) for p in list_images(root)], False


def stage_summary(s: dict[str, Any]) -> dict[str, Any]:
    """The p50/p90/mean/n of a timing summary: what a report row keeps per stage."""
    return {k: s[k] for k in ("p50", "p90", "mean", "n")}
