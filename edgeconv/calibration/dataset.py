"""Calibration data: a seeded, streamed sample of a user's images (or tensors), preprocessed by the contract.

Only file paths are held in memory; images are decoded one at a time, so memory does not grow with the sample size.
Corrupt files are skipped with a warning and counted.  The set's ``key`` hashes file contents, the preprocessing
contract and the input name: statistics and INT8 models are cached under it.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgeconv.calibration.preprocess import Preprocess
from edgeconv.core.console import log
from edgeconv.core.errors import CalibrationError
from edgeconv.core.hashing import sha256_file, sha256_json

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
TENSOR_SUFFIXES = (".npy", ".npz")
RECOMMENDED_MIN = 300


def list_samples(root: str | Path) -> list[Path]:
    """Image or tensor files under ``root`` (recursive, sorted for determinism); a single file is a sample."""
    root = Path(root)
    if not root.exists():
        raise CalibrationError(f"calibration data {root} does not exist", hint="pass --calib DIR with images")
    if root.is_file():
        return [root]
    try:
        files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES + TENSOR_SUFFIXES)
    except PermissionError as e:
        raise CalibrationError(f"calibration folder {root} is not readable: {e.strerror}") from e
    if not files:
        raise CalibrationError(f"calibration folder {root} holds no images ({'/'.join(IMAGE_SUFFIXES)}) or tensors "
                               f"(.npy/.npz)", hint="point --calib at a folder of representative inputs")
    return files


@dataclass
class CalibrationSet:
    """A sample of calibration inputs for one model input, produced with one preprocessing contract."""

    root: Path
    preprocess: Preprocess
    input_name: str
    input_shape: tuple[int, ...] | None = None
    size: int | None = 512
    seed: int = 0
    files: list[Path] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    _hashes: dict[Path, str] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.root = Path(self.root)
        all_files = list_samples(self.root)
        if self.size and self.size < len(all_files):
            rng = random.Random(self.seed)
            self.files = sorted(rng.sample(all_files, self.size))
        else:
            self.files = all_files
        if len(self.files) < RECOMMENDED_MIN:
            log.warning("calibration sample has %d inputs; a few hundred or more is advised (NVIDIA advises >= 500)",
                        len(self.files))

    def __len__(self) -> int:
        return len(self.files)

    def hash_of(self, path: Path) -> str:
        if path not in self._hashes:
            self._hashes[path] = sha256_file(path)
        return self._hashes[path]

    def content_hashes(self) -> set[str]:
        return {self.hash_of(p) for p in self.files}

    @property
    def key(self) -> str:
        """Determines the statistics: contents of the sampled files, preprocessing, input name and shape."""
        return sha256_json({"files": sorted(self.content_hashes()), "preprocess": self.preprocess.to_dict(),
                            "input": self.input_name, "shape": list(self.input_shape or [])})

    def _load(self, path: Path) -> np.ndarray:
        if path.suffix.lower() == ".npy":
            x = np.load(path, allow_pickle=False)
        elif path.suffix.lower() == ".npz":
            with np.load(path, allow_pickle=False) as z:
                x = z[self.input_name] if self.input_name in z.files else z[z.files[0]]
        else:
            return self.preprocess.apply(self.preprocess.load(path))
        x = np.asarray(x, dtype=self.preprocess.dtype)
        if self.input_shape and x.ndim == len(self.input_shape) - 1:
            x = x[None]
        return x

    def feeds(self) -> Iterator[dict[str, np.ndarray]]:
        """Yield ``{input_name: tensor}`` one sample at a time; corrupt files are skipped and counted."""
        self.skipped = []
        for path in self.files:
            try:
                x = self._load(path)
            except Exception as e:  # noqa: BLE001 - any decode failure means "skip this file"
                log.warning("skipping unreadable calibration file %s (%s)", path, type(e).__name__)
                self.skipped.append(str(path))
                continue
            if self.input_shape and tuple(x.shape) != tuple(self.input_shape):
                raise CalibrationError(
                    f"calibration input {path.name} has shape {tuple(x.shape)} but the model's input "
                    f"'{self.input_name}' is {tuple(self.input_shape)}",
                    hint="set --preprocess size=HxW (and layout) to match the model input")
            yield {self.input_name: x}
        if self.skipped and len(self.skipped) == len(self.files):
            raise CalibrationError(f"none of the {len(self.files)} calibration files in {self.root} could be read")

    def manifest(self) -> dict[str, Any]:
        return {"root": str(self.root), "size": len(self.files), "requested": self.size, "seed": self.seed,
                "skipped": len(self.skipped), "preprocess": self.preprocess.to_dict(),
                "preprocess_sha256": self.preprocess.sha256, "sha256": self.key}


def check_disjoint(calib: CalibrationSet, eval_files: list[Path], *, allow_overlap: bool = False) -> int:
    """Refuse calibration/evaluation overlap (by content hash) unless allowed; returns the overlap count."""
    calib_hashes = calib.content_hashes()
    overlap = [p for p in eval_files if sha256_file(p) in calib_hashes]
    if overlap and not allow_overlap:
        raise CalibrationError(
            f"{len(overlap)} evaluation image(s) are also in the calibration sample (e.g. {overlap[0].name}); "
            "scores would be optimistic", hint="use disjoint sets, or pass --allow-overlap to accept it")
    if overlap:
        log.warning("%d evaluation images overlap the calibration sample (--allow-overlap)", len(overlap))
    return len(overlap)
