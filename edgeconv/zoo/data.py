"""Procedurally generated "shapes" datasets for the bundled demo models.

Why procedural: the bundled models must be trainable, evaluable and calibratable offline, with no
downloads and no licensing questions, and every sample must be reproducible bit-for-bit from a
``(seed, index)`` pair so that a missing cache can always be regenerated.  The images are meant to be
*learnable* (clear, anti-aliased shapes of reasonable size, so small models reach high accuracy in a
few CPU minutes) but not trivially clean (textured noisy backgrounds, random colours and rotations,
partial occlusion, clutter strokes, JPEG artefacts), so that conversion/quantization drift shows up
in the metrics the way it would on real data.

Splits are made disjoint by seed: the generator's RNG is keyed by ``(seed, index)``, and the train,
eval and calibration splits use different seeds (see ``TRAIN_SEED``/``EVAL_SEED``/``CALIB_SEED``).

Run ``python -m edgeconv.zoo.data --write-calibration`` to (re)generate the committed
``calibration/`` folders.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from edgeconv.core.artifact import atomic_dir

GENERATOR_VERSION = "shapes-1"
CLASS_NAMES: tuple[str, ...] = ("circle", "square", "triangle", "star", "cross")
NUM_CLASSES = len(CLASS_NAMES)

DET_SIZE = 256
CLS_SIZE = 96

# Disjoint by seed: the RNG is keyed by (seed, index, task), so different seeds never share samples.
TRAIN_SEED = 1000
EVAL_SEED = 2000
CALIB_SEED = 3000

EVAL_COUNT = 500
CALIB_COUNT = 256

_TASK_DET = 0
_TASK_CLS = 1

REPO_ROOT = Path(__file__).resolve().parents[2]
CALIBRATION_DIR = REPO_ROOT / "calibration"


# ----------------------------------------------------------------------------------------------
# Geometry
# ----------------------------------------------------------------------------------------------


def _unit_polygon(cls: int) -> np.ndarray:
    """Vertices (K,2) of class ``cls`` centred at the origin with circumradius 1.

    Every class is a polygon (the circle is a 48-gon) so that the tight bounding box is exactly the
    min/max of the rotated vertices -- labels are then pixel-exact, which the mAP50-95 bar needs.
    """
    name = CLASS_NAMES[cls]
    if name == "circle":
        t = np.linspace(0, 2 * np.pi, 48, endpoint=False)
        return np.stack([np.cos(t), np.sin(t)], 1)
    if name == "square":
        t = np.array([0.25, 0.75, 1.25, 1.75]) * np.pi
        return np.stack([np.cos(t), np.sin(t)], 1)
    if name == "triangle":
        t = np.array([-0.5, 1 / 6, 5 / 6]) * np.pi
        return np.stack([np.cos(t), np.sin(t)], 1)
    if name == "star":
        t = np.arange(10) * np.pi / 5 - np.pi / 2
        r = np.where(np.arange(10) % 2 == 0, 1.0, 0.45)
        return np.stack([r * np.cos(t), r * np.sin(t)], 1)
    if name == "cross":
        a = 0.3 / np.sqrt(2)  # half arm width, in units where the arm tip corner sits at radius ~1
        b = np.sqrt(1 - a * a)
        pts = [(a, b), (a, a), (b, a), (b, -a), (a, -a), (a, -b),
               (-a, -b), (-a, -a), (-b, -a), (-b, a), (-a, a), (-a, b)]
        return np.array(pts, dtype=np.float64)
    raise ValueError(cls)


_UNIT_POLYS = [_unit_polygon(c) for c in range(NUM_CLASSES)]


def _place_polygon(rng: np.random.Generator, cls: int, radius: float, cx: float, cy: float) -> np.ndarray:
    """Random rotation and mild anisotropic stretch, so boxes are not all square."""
    angle = rng.uniform(0, 2 * np.pi)
    sx, sy = rng.uniform(0.85, 1.15, size=2)
    pts = _UNIT_POLYS[cls] * np.array([sx, sy]) * radius
    c, s = np.cos(angle), np.sin(angle)
    pts = pts @ np.array([[c, s], [-s, c]])
    return pts + np.array([cx, cy])


# ----------------------------------------------------------------------------------------------
# Rendering
# ----------------------------------------------------------------------------------------------


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """Textured background: base colour + low-frequency colour noise + optional stripes/checker."""
    base = rng.uniform(40, 215, size=3)
    grid = int(rng.integers(3, 9))
    low = rng.normal(0, rng.uniform(15, 40), size=(grid, grid, 3))
    low_img = Image.fromarray(np.clip(low + 128, 0, 255).astype(np.uint8)).resize((size, size), Image.BICUBIC)
    img = base + (np.asarray(low_img, dtype=np.float32) - 128)
    kind = rng.integers(0, 3)
    if kind > 0:
        yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
        theta = rng.uniform(0, np.pi)
        period = rng.uniform(6, 30)
        u = xx * np.cos(theta) + yy * np.sin(theta)
        if kind == 1:  # stripes
            pattern = np.sin(2 * np.pi * u / period)
        else:  # checker
            v = -xx * np.sin(theta) + yy * np.cos(theta)
            pattern = np.sign(np.sin(2 * np.pi * u / period) * np.sin(2 * np.pi * v / period))
        img = img + pattern[..., None] * rng.uniform(6, 18) * rng.uniform(0.5, 1.0, size=3)
    return img.astype(np.float32)


def _pick_colour(rng: np.random.Generator, bg_mean: np.ndarray) -> np.ndarray:
    """A fill colour that stands out from the local background (learnability), otherwise random."""
    best, best_d = None, -1.0
    for _ in range(12):
        col = rng.uniform(0, 255, size=3)
        d = float(np.linalg.norm(col - bg_mean))
        if d > best_d:
            best, best_d = col, d
        if d >= 110:
            break
    return best


def _draw_shape(img: np.ndarray, rng: np.random.Generator, poly: np.ndarray, ss: int = 4) -> None:
    """Alpha-composite an anti-aliased polygon (supersampled ``ss``x) into ``img`` in place."""
    h, w = img.shape[:2]
    x0, y0 = np.floor(poly.min(0)).astype(int) - 1
    x1, y1 = np.ceil(poly.max(0)).astype(int) + 1
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
    if x1 <= x0 or y1 <= y0:
        return
    bw, bh = x1 - x0, y1 - y0
    mask = Image.new("L", (bw * ss, bh * ss), 0)
    pts = [((px - x0) * ss, (py - y0) * ss) for px, py in poly]
    ImageDraw.Draw(mask).polygon(pts, fill=255)
    alpha = np.asarray(mask.resize((bw, bh), Image.BOX), dtype=np.float32)[..., None] / 255.0
    region = img[y0:y1, x0:x1]
    bg_mean = region.reshape(-1, 3).mean(0)
    colour = _pick_colour(rng, bg_mean)
    # Mild shading gradient across the shape so fills are not perfectly flat.
    gy, gx = np.mgrid[0:bh, 0:bw].astype(np.float32)
    grad = (gx / max(bw, 1) - 0.5) * rng.uniform(-30, 30) + (gy / max(bh, 1) - 0.5) * rng.uniform(-30, 30)
    fill = colour[None, None, :] + grad[..., None]
    img[y0:y1, x0:x1] = region * (1 - alpha) + fill * alpha


def _clutter(img: np.ndarray, rng: np.random.Generator, n: int) -> None:
    """Thin random strokes (non-object clutter); some cross objects and partially occlude them."""
    size = img.shape[0]
    if n <= 0:
        return
    layer = Image.new("RGB", (size, size), (0, 0, 0))
    mask = Image.new("L", (size, size), 0)
    d_l, d_m = ImageDraw.Draw(layer), ImageDraw.Draw(mask)
    for _ in range(n):
        pts = [tuple(rng.uniform(0, size, size=2)) for _ in range(int(rng.integers(2, 4)))]
        col = tuple(int(c) for c in rng.integers(0, 256, size=3))
        width = int(rng.integers(1, 3))
        d_l.line(pts, fill=col, width=width)
        d_m.line(pts, fill=int(rng.integers(120, 220)), width=width)
    a = np.asarray(mask, dtype=np.float32)[..., None] / 255.0
    img[:] = img * (1 - a) + np.asarray(layer, dtype=np.float32) * a


def _coverage(box: np.ndarray, others: list[np.ndarray]) -> float:
    """Fraction of ``box``'s area covered by the union-bound (sum) of ``others`` -- an upper bound."""
    area = (box[2] - box[0]) * (box[3] - box[1])
    cov = 0.0
    for o in others:
        iw = min(box[2], o[2]) - max(box[0], o[0])
        ih = min(box[3], o[3]) - max(box[1], o[1])
        if iw > 0 and ih > 0:
            cov += iw * ih
    return cov / max(area, 1e-9)


def _finish(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Sensor-ish degradations: slight blur sometimes, Gaussian pixel noise, clip to uint8."""
    out = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
    if rng.random() < 0.3:
        out = out.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 0.8)))
    arr = np.asarray(out, dtype=np.float32)
    arr = arr + rng.normal(0, rng.uniform(2, 7), size=arr.shape).astype(np.float32)
    return np.clip(arr + 0.5, 0, 255).astype(np.uint8)


def render_detection(seed: int, index: int, size: int = DET_SIZE) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Render detection sample ``(seed, index)``.

    Returns ``(img uint8 HxWx3 RGB, boxes float32 Nx4 xyxy pixels, classes int64 N)`` with 1--6
    objects.  Objects may overlap, but placement rejects layouts where an earlier object would be
    more than ~35 % covered, so every labelled object stays recognisable (boxes are amodal = full
    shape extent, which coincides with the visible extent for all but the occluded part).
    """
    rng = np.random.default_rng([seed, index, _TASK_DET])
    img = _background(rng, size)
    n = int(rng.integers(1, 7))
    boxes: list[np.ndarray] = []
    classes: list[int] = []
    polys: list[np.ndarray] = []
    scale = size / 256.0
    for _ in range(n):
        for _attempt in range(30):
            cls = int(rng.integers(0, NUM_CLASSES))
            radius = rng.uniform(14, 56) * scale
            margin = radius * 1.2 + 1
            cx, cy = rng.uniform(margin, size - margin, size=2)
            poly = _place_polygon(rng, cls, radius, cx, cy)
            box = np.concatenate([poly.min(0), poly.max(0)])
            if (box[:2] < 0).any() or (box[2:] > size).any():
                continue
            # Reject if the new object would hide too much of an earlier one or vice versa.
            if any(_coverage(b, [box]) > 0.35 for b in boxes) or _coverage(box, boxes) > 0.5:
                continue
            boxes.append(box)
            classes.append(cls)
            polys.append(poly)
            break
    for poly in polys:
        _draw_shape(img, rng, poly)
    _clutter(img, rng, int(rng.integers(0, 4)))
    out = _finish(img, rng)
    b = np.array(boxes, dtype=np.float32).reshape(-1, 4)
    return out, b, np.array(classes, dtype=np.int64)


def render_classification(
    seed: int, index: int, size: int = CLS_SIZE, cls: int | None = None
) -> tuple[np.ndarray, int]:
    """Render classification sample ``(seed, index)``: one dominant shape, class = its shape.

    Up to two much smaller distractor shapes may appear, so the model must attend to the dominant
    object rather than to "any shape present".  ``cls`` forces the class (used for balanced splits).
    """
    rng = np.random.default_rng([seed, index, _TASK_CLS])
    img = _background(rng, size)
    if cls is None:
        cls = int(rng.integers(0, NUM_CLASSES))
    else:
        rng.integers(0, NUM_CLASSES)  # keep the stream identical whether or not cls is forced
    radius = rng.uniform(0.22, 0.42) * size
    margin = radius * 1.15
    cx, cy = rng.uniform(margin, size - margin, size=2)
    main = _place_polygon(rng, cls, radius, cx, cy)
    main_box = np.concatenate([main.min(0), main.max(0)])
    distractors = []
    for _ in range(int(rng.integers(0, 3))):
        dcls = int(rng.integers(0, NUM_CLASSES))
        dr = rng.uniform(0.05, 0.10) * size
        dx, dy = rng.uniform(dr, size - dr, size=2)
        dp = _place_polygon(rng, dcls, dr, dx, dy)
        if _coverage(main_box, [np.concatenate([dp.min(0), dp.max(0)])]) < 0.1:
            distractors.append(dp)
    _draw_shape(img, rng, main)
    for dp in distractors:
        _draw_shape(img, rng, dp)
    _clutter(img, rng, int(rng.integers(0, 3)))
    return _finish(img, rng), cls


def jpeg_roundtrip(img: np.ndarray, quality: int = 90) -> np.ndarray:
    """Encode/decode through JPEG so in-memory training images match the on-disk eval images."""
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=quality)
    buf.seek(0)
    return np.asarray(Image.open(buf).convert("RGB"))


# ----------------------------------------------------------------------------------------------
# Writing splits
# ----------------------------------------------------------------------------------------------


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()




def _save_image(img: np.ndarray, path: Path, fmt: str, quality: int) -> None:
    if fmt in ("jpg", "jpeg"):
        Image.fromarray(img).save(path, format="JPEG", quality=quality)
    elif fmt == "png":
        Image.fromarray(img).save(path, format="PNG")
    else:
        raise ValueError(f"unsupported image format {fmt!r}")


def _render_one(job: tuple[int, int, int, str, str, int]) -> tuple[int, np.ndarray, np.ndarray]:
    """Render detection sample ``(seed, index)`` and write its image; the labels go back to the caller."""
    seed, idx, size, path, fmt, quality = job
    img, boxes, classes = render_detection(seed, idx, size)
    _save_image(img, Path(path), fmt, quality)
    return idx, boxes, classes


def _render_all(jobs: list[tuple[int, int, int, str, str, int]], what: str
                ) -> list[tuple[int, np.ndarray, np.ndarray]]:
    """``_render_one`` over ``jobs``, in order, on a thread per core: numpy's and Pillow's drawing, filtering and
    JPEG encoding release the GIL, so 500 images took 7.0 s instead of 12.7 on a 2-core machine (processes: 6.7 s,
    but a spawned child re-imports the caller's main module and a forked one inherits torch's thread pools). Each
    sample has its own seeded generator: the files are the same bytes either way (a test compares them)."""
    import concurrent.futures as cf

    from edgeconv.core.console import status

    workers = min(4, os.cpu_count() or 1)
    with status(what):
        if workers == 1 or len(jobs) < 32:
            return [_render_one(j) for j in jobs]
        with cf.ThreadPoolExecutor(workers, thread_name_prefix="edgeconv-render") as pool:
            return list(pool.map(_render_one, jobs))


def _manifest(kind: str, seed: int, indices: list[int], size: int, fmt: str, quality: int, root: Path) -> dict:
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.name != "manifest.json")
    return {
        "generator_version": GENERATOR_VERSION,
        "kind": kind,
        "class_names": list(CLASS_NAMES),
        "seed": seed,
        "indices": indices,
        "size": size,
        "format": fmt,
        "quality": quality,
        "files": {p.relative_to(root).as_posix(): _sha256(p) for p in files},
    }


def write_yolo_split(
    out_dir: str | Path, seed: int, start: int, count: int, size: int = DET_SIZE, fmt: str = "jpg", quality: int = 90
) -> Path:
    """Write detection samples ``start..start+count-1`` as a YOLO-txt + COCO-JSON split.

    Layout: ``images/<index>.jpg``, ``labels/<index>.txt`` (``cls cx cy w h`` normalised),
    ``instances.json`` (COCO, same boxes, category ids = class index + 1), ``manifest.json``.
    """
    out_dir = Path(out_dir)
    with atomic_dir(out_dir) as tmp:  # readers never see a half-written split
        (tmp / "images").mkdir()
        (tmp / "labels").mkdir()
        coco: dict = {
            "info": {"description": f"edgeconv shapes ({GENERATOR_VERSION}) seed={seed}"},
            "images": [],
            "annotations": [],
            "categories": [{"id": i + 1, "name": n} for i, n in enumerate(CLASS_NAMES)],
        }
        indices = list(range(start, start + count))
        ann_id = 1
        jobs = [(seed, idx, size, str(tmp / "images" / f"{idx:06d}.{fmt}"), fmt, quality) for idx in indices]
        for idx, boxes, classes in _render_all(jobs, f"generating {count} detection images"):
            stem = f"{idx:06d}"
            fname = f"{stem}.{fmt}"
            lines = []
            for (x0, y0, x1, y1), c in zip(boxes.tolist(), classes.tolist()):
                cx, cy, w, h = (x0 + x1) / 2 / size, (y0 + y1) / 2 / size, (x1 - x0) / size, (y1 - y0) / size
                lines.append(f"{c} {cx:.6f} {cy:.6f} {w:.6f} {h:.6f}")
                coco["annotations"].append(
                    {
                        "id": ann_id,
                        "image_id": idx,
                        "category_id": c + 1,
                        "bbox": [round(x0, 3), round(y0, 3), round(x1 - x0, 3), round(y1 - y0, 3)],
                        "area": round((x1 - x0) * (y1 - y0), 3),
                        "iscrowd": 0,
                    }
                )
                ann_id += 1
            (tmp / "labels" / f"{stem}.txt").write_text("\n".join(lines) + ("\n" if lines else ""))
            coco["images"].append({"id": idx, "file_name": f"images/{fname}", "width": size, "height": size})
        (tmp / "instances.json").write_text(json.dumps(coco))
        manifest = _manifest("detection", seed, indices, size, fmt, quality, tmp)
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return out_dir


def classification_label(index: int) -> int:
    """Balanced labels for written classification splits: class cycles with the index."""
    return index % NUM_CLASSES


def write_imagefolder_split(
    out_dir: str | Path, seed: int, start: int, count: int, size: int = CLS_SIZE, fmt: str = "jpg", quality: int = 90
) -> Path:
    """Write classification samples as an ImageFolder tree ``<class_name>/<index>.jpg`` + manifest."""
    out_dir = Path(out_dir)
    with atomic_dir(out_dir) as tmp:  # readers never see a half-written split
        for name in CLASS_NAMES:
            (tmp / name).mkdir()
        indices = list(range(start, start + count))
        for idx in indices:
            img, cls = render_classification(seed, idx, size, cls=classification_label(idx))
            _save_image(img, tmp / CLASS_NAMES[cls] / f"{idx:06d}.{fmt}", fmt, quality)
        manifest = _manifest("classification", seed, indices, size, fmt, quality, tmp)
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return out_dir


# ----------------------------------------------------------------------------------------------
# Cached evaluation splits
# ----------------------------------------------------------------------------------------------

_EVAL_SPECS = {
    "detection": {"name": "shapes-eval", "size": DET_SIZE},
    "classification": {"name": "shapes-cls-eval", "size": CLS_SIZE},
}


def cache_root() -> Path:
    """``$EDGECONV_CACHE`` (if set) or ``~/.cache/edgeconv``."""
    env = os.environ.get("EDGECONV_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "edgeconv"


def _manifest_matches(root: Path, kind: str, seed: int, indices: Iterable[int], size: int) -> bool:
    """True when ``root`` holds a complete split from this generator version with these parameters."""
    mpath = root / "manifest.json"
    if not mpath.is_file():
        return False
    try:
        m = json.loads(mpath.read_text())
    except (OSError, ValueError):
        return False
    ok = (
        m.get("generator_version") == GENERATOR_VERSION
        and m.get("kind") == kind
        and m.get("seed") == seed
        and m.get("indices") == list(indices)
        and m.get("size") == size
    )
    return ok and all((root / rel).is_file() for rel in m.get("files", {}))


def eval_split(kind: str = "detection", root: str | Path | None = None) -> Path:
    """Return the labelled evaluation split for ``kind``, generating it on first use.

    Detection: YOLO-txt + COCO-JSON layout (500 images, 256x256).  Classification: ImageFolder
    layout (500 images, 96x96, 100 per class).  The split is regenerated only if the manifest is
    missing or stale, so repeated benchmark runs are cheap.
    """
    if kind not in _EVAL_SPECS:
        raise ValueError(f"kind must be one of {sorted(_EVAL_SPECS)}, got {kind!r}")
    spec = _EVAL_SPECS[kind]
    out = Path(root) if root is not None else cache_root() / "datasets" / f"{spec['name']}-v1"
    indices = range(EVAL_COUNT)
    if _manifest_matches(out, kind, EVAL_SEED, indices, spec["size"]):
        return out
    if kind == "detection":
        return write_yolo_split(out, EVAL_SEED, 0, EVAL_COUNT, spec["size"])
    return write_imagefolder_split(out, EVAL_SEED, 0, EVAL_COUNT, spec["size"])


_CALIB_README = """# Calibration images: `{name}`

{what}

* Generated by `python -m edgeconv.zoo.data --write-calibration` (generator `{ver}`, seed {seed},
  indices 0..{last}); `manifest.json` records the seed, indices and the sha256 of every file.
  The calibration seed differs from the training and evaluation seeds, so these images are disjoint
  from both.
* Used as the representative dataset for post-training quantization (INT8 calibration) of the
  bundled model(s) and as the default input set for drift measurements.

## Using your own images

Pass `--calib DIR` to `edgeconv convert` (any folder of `*.jpg`/`*.png` images, sub-folders are
searched, or `.npy`/`.npz` tensors).  Use a few hundred images that look like your deployment data;
labels are not needed for calibration ({labels}).  Images go through the model's `preprocess`
settings (for the bundled models: RGB, stretch-resize, /255, NCHW float32).  Keep calibration
images disjoint from the images you evaluate on.

## Regenerating

```
python -m edgeconv.zoo.data --write-calibration
```
rewrites this folder atomically; the result is deterministic for a given generator version.
"""


def write_calibration(root: Path = CALIBRATION_DIR) -> None:
    """Write ``calibration/shapes`` (detection) and ``calibration/shapes-cls`` (classification)."""
    write_yolo_split(root / "shapes", CALIB_SEED, 0, CALIB_COUNT, DET_SIZE, quality=85)
    write_imagefolder_split(root / "shapes-cls", CALIB_SEED, 0, CALIB_COUNT, CLS_SIZE, quality=90)
    write_calibration_readmes(root)


def write_calibration_readmes(root: Path = CALIBRATION_DIR) -> None:
    """The READMEs are not part of the manifest (documentation, not data), so they can be updated alone."""
    det, cls = root / "shapes", root / "shapes-cls"
    (det / "README.md").write_text(
        _CALIB_README.format(
            name="shapes",
            what=f"{CALIB_COUNT} procedurally generated {DET_SIZE}x{DET_SIZE} detection images "
            f"(classes: {', '.join(CLASS_NAMES)}) with YOLO labels (`labels/`) and COCO JSON "
            "(`instances.json`), for the bundled `yolo` and `centernet` detectors.",
            ver=GENERATOR_VERSION,
            seed=CALIB_SEED,
            last=CALIB_COUNT - 1,
            labels="the YOLO labels here are only used by tests and label-based sanity checks",
        )
    )
    (cls / "README.md").write_text(
        _CALIB_README.format(
            name="shapes-cls",
            what=f"{CALIB_COUNT} procedurally generated {CLS_SIZE}x{CLS_SIZE} classification images in "
            "ImageFolder layout (`<class_name>/*.jpg`), for the bundled `classifier`.",
            ver=GENERATOR_VERSION,
            seed=CALIB_SEED,
            last=CALIB_COUNT - 1,
            labels="the class sub-folders are only used by tests",
        )
    )


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--write-calibration", action="store_true", help="regenerate calibration/ in the repo")
    p.add_argument("--calibration-root", type=Path, default=CALIBRATION_DIR)
    p.add_argument("--eval-split", choices=sorted(_EVAL_SPECS), help="generate/verify the cached eval split")
    args = p.parse_args(argv)
    if args.write_calibration:
        write_calibration(args.calibration_root)
        print(f"wrote {args.calibration_root}")
    if args.eval_split:
        print(eval_split(args.eval_split))
    if not args.write_calibration and not args.eval_split:
        p.print_help()


if __name__ == "__main__":
    main()
