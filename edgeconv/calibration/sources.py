"""Calibration data sources: what a ``--calib`` path points at, turned into a list of *samples* (not tensors).

Supported: an image folder (recursive; jpg/png/bmp/webp/tiff), ImageFolder-style class sub-folders, a YOLO split
(``images/`` + ``labels/``: only ``images/`` is read, labels are not needed to calibrate), a COCO JSON file (its
``images[].file_name`` entries), and ``.npy``/``.npz`` tensors (one sample per file, or one per row of a batched
array).  Why a list of ``Sample`` references rather than arrays: only paths (and row indices) are held in memory;
pixels are decoded one sample at a time by ``CalibrationSet.feeds()``, so memory does not grow with the sample
size.  Listing is sorted, so a seeded sample is reproducible across machines and file systems.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgeconv.core.errors import CalibrationError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
TENSOR_SUFFIXES = (".npy", ".npz")
KINDS = ("image-folder", "class-folders", "yolo", "coco", "tensors", "file")


@dataclass(frozen=True, order=True)
class Sample:
    """One calibration input: a file, plus the row of a batched ``.npy``/``.npz`` array when it holds several."""

    path: Path
    row: int | None = None

    @property
    def label(self) -> str:
        return self.path.name if self.row is None else f"{self.path.name}[{self.row}]"

    @property
    def is_tensor(self) -> bool:
        return self.path.suffix.lower() in TENSOR_SUFFIXES


def _walk(root: Path, suffixes: tuple[str, ...]) -> list[Path]:
    """Recursive, sorted listing; unreadable sub-folders are an error (a silently partial sample is worse).

    Symlinked folders are followed (datasets are often assembled from links) but each real folder is read once:
    a link back up the tree (a loop) or two links to one folder must not count the same image many times.
    """
    out: list[Path] = []
    seen: set[tuple[int, int]] = set()

    def onerror(e: OSError) -> None:
        raise CalibrationError(f"calibration folder {e.filename} is not readable: {e.strerror}",
                               hint="fix the permissions or point --calib elsewhere") from e

    for dirpath, dirnames, filenames in os.walk(root, onerror=onerror, followlinks=True):
        try:
            st = os.stat(dirpath)
        except OSError:
            dirnames[:] = []
            continue
        ident = (st.st_dev, st.st_ino)
        if ident in seen:
            dirnames[:] = []
            continue
        seen.add(ident)
        dirnames.sort()
        out.extend(Path(dirpath) / f for f in sorted(filenames) if f.lower().endswith(suffixes)
                   and not f.startswith("."))
    # The same file reached through two names (a file symlink beside its target) is one sample.
    unique: dict[tuple[int, int], Path] = {}
    for f in sorted(out):
        try:
            st = os.stat(f)
        except OSError:
            unique[(-1, hash(f))] = f  # unreadable: kept, so it is counted as skipped when streamed
            continue
        unique.setdefault((st.st_dev, st.st_ino), f)
    return sorted(unique.values())


def _coco_images(json_path: Path) -> list[Path]:
    """Image paths of a COCO annotation file, resolved like the COCO tools do (relative to the JSON or ``images/``)."""
    try:
        data = json.loads(json_path.read_text())
    except (OSError, ValueError) as e:
        raise CalibrationError(f"cannot read COCO annotations {json_path}: {e}") from e
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise CalibrationError(f"{json_path} is not COCO JSON (no 'images' list)",
                               hint="pass an image folder, a YOLO split or COCO instances JSON")
    base = json_path.parent
    out = []
    for im in data["images"]:
        name = str(im.get("file_name", ""))
        for cand in (base / name, base / "images" / name, base.parent / "images" / name):
            if cand.is_file():
                out.append(cand)
                break
        else:
            out.append(base / name)  # missing: counted as unreadable when streamed, not silently dropped
    return sorted(set(out))


def _tensor_rows(path: Path, sample_ndim: int | None) -> list[Sample]:
    """One sample per file, or one per row when the array has one more axis than the model input (N×...)."""
    if sample_ndim is None:
        return [Sample(path)]
    try:
        if path.suffix.lower() == ".npy":
            shape = np.load(path, mmap_mode="r", allow_pickle=False).shape
        else:
            with np.load(path, allow_pickle=False) as z:
                if not z.files:
                    return [Sample(path)]
                shape = z[z.files[0]].shape
    except Exception:  # noqa: BLE001 - unreadable: streamed as one sample and counted as skipped there
        return [Sample(path)]
    if len(shape) == sample_ndim and shape[0] > 1:
        return [Sample(path, i) for i in range(shape[0])]
    return [Sample(path)]


def detect_kind(root: Path) -> str:
    """What kind of source ``root`` is (recorded in the manifest, and used to pick the files to read)."""
    if root.is_file():
        if root.suffix.lower() == ".json":
            return "coco"
        return "tensors" if root.suffix.lower() in TENSOR_SUFFIXES else "file"
    if (root / "images").is_dir() and (root / "labels").is_dir():
        return "yolo"
    try:
        subdirs = [d for d in root.iterdir() if d.is_dir() and not d.name.startswith(".")]
        top_files = [f for f in root.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES]
    except PermissionError as e:
        raise CalibrationError(f"calibration folder {root} is not readable: {e.strerror}",
                               hint="fix the permissions or point --calib elsewhere") from e
    if subdirs and not top_files and all(any(f.suffix.lower() in IMAGE_SUFFIXES for f in d.iterdir()
                                             if f.is_file()) for d in subdirs):
        return "class-folders"
    if not top_files and (any(root.glob("*.npy")) or any(root.glob("*.npz"))):
        return "tensors"
    return "image-folder"


def discover(root: str | Path, *, sample_ndim: int | None = None) -> tuple[str, list[Sample]]:
    """``(kind, samples)`` for a ``--calib`` path; raises a clear CalibrationError when there is nothing to read.

    ``sample_ndim`` is the model input's rank (with its batch axis): batched tensor files are split into rows.
    """
    root = Path(root)
    if not root.exists():
        raise CalibrationError(f"calibration data {root} does not exist",
                               hint="pass --calib DIR with images (or .npy/.npz tensors, or a COCO JSON)")
    if root.is_dir() and not os.access(root, os.R_OK | os.X_OK):
        raise CalibrationError(f"calibration folder {root} is not readable", hint="fix the permissions")
    kind = detect_kind(root)
    if kind == "coco":
        files = _coco_images(root)
    elif kind in ("tensors", "file") and root.is_file():
        files = [root]
    elif kind == "yolo":
        files = _walk(root / "images", IMAGE_SUFFIXES)
    else:
        files = _walk(root, IMAGE_SUFFIXES + TENSOR_SUFFIXES)
    if not files:
        raise CalibrationError(f"calibration folder {root} holds no images ({'/'.join(IMAGE_SUFFIXES)}) or tensors "
                               "(.npy/.npz)", hint="point --calib at a folder of representative inputs")
    samples: list[Sample] = []
    for f in files:
        if f.suffix.lower() in TENSOR_SUFFIXES:
            samples.extend(_tensor_rows(f, sample_ndim))
        else:
            samples.append(Sample(f))
    return kind, samples


def list_eval_files(root: str | Path) -> list[Path]:
    """Every input file of an evaluation set (any supported layout), for the disjointness check."""
    return sorted({s.path for s in discover(root)[1]})
