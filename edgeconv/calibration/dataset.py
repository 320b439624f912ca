"""Calibration data: a seeded, streamed sample of a user's images (or tensors), preprocessed by the contract.

Only sample references (paths, row indices) are held in memory; inputs are decoded one at a time, so memory does
not grow with the sample size.  Corrupt files are skipped with a warning and counted.  The set's ``key`` hashes
file contents, the preprocessing contract and the input name/shape: statistics and INT8 models are cached under it.
While streaming, per-channel mean/std of the inputs are accumulated (``input_stats``): they go into the manifest so
evaluation can warn when its inputs clearly differ from what calibration saw (``stats.input_stats_warning``).

A ``--calib-size`` larger than the data is a warning, not an error: every input is used and the manifest records
``requested`` beside ``available`` (the default of 512 is larger than many users' folders, and refusing to run
would punish them for not counting). Tensors holding NaN/Inf are an error naming the tensor and its file — they
would poison every range computed from them.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgeconv.calibration.preprocess import Preprocess
from edgeconv.calibration.sources import IMAGE_SUFFIXES, TENSOR_SUFFIXES, Sample, discover, list_eval_files
from edgeconv.core.console import log
from edgeconv.core.errors import CalibrationError
from edgeconv.core.hashing import sha256_file, sha256_json

RECOMMENDED_MIN = 250  # below this, warn: ranges from a few dozen images are noisy (NVIDIA advises >= 500)

__all__ = [
    "IMAGE_SUFFIXES",
    "RECOMMENDED_MIN",
    "TENSOR_SUFFIXES",
    "CalibrationSet",
    "ChannelStats",
    "check_disjoint",
    "list_samples",
]


def list_samples(root: str | Path) -> list[Path]:
    """Input files under ``root`` in any supported layout (sorted for determinism); a single file is a sample."""
    return sorted({s.path for s in discover(root)[1]})


class ChannelStats:
    """Streaming per-channel mean/std/min/max (float64 sums, so 10^5 inputs do not lose precision)."""

    def __init__(self, channel_axis: int) -> None:
        self.axis = channel_axis
        self.n = 0
        self.count = 0
        self.s1: np.ndarray | None = None
        self.s2: np.ndarray | None = None
        self.lo: np.ndarray | None = None
        self.hi: np.ndarray | None = None

    def update(self, x: np.ndarray) -> None:
        if x.ndim < 2 or not np.issubdtype(x.dtype, np.number):
            return
        axis = self.axis % x.ndim
        red = tuple(i for i in range(x.ndim) if i != axis)
        xf = x.astype(np.float64, copy=False)
        s1, s2 = xf.sum(axis=red), np.square(xf).sum(axis=red)
        lo, hi = xf.min(axis=red), xf.max(axis=red)
        if self.s1 is None or self.s1.shape != s1.shape:
            self.s1, self.s2, self.lo, self.hi = s1, s2, lo, hi
        else:
            self.s1, self.s2 = self.s1 + s1, self.s2 + s2
            self.lo, self.hi = np.minimum(self.lo, lo), np.maximum(self.hi, hi)
        self.n += 1
        self.count += x.size // x.shape[axis]

    def result(self) -> dict[str, Any] | None:
        if self.s1 is None or not self.count:
            return None
        mean = self.s1 / self.count
        std = np.sqrt(np.maximum(self.s2 / self.count - mean * mean, 0.0))
        r = lambda a: [round(float(v), 6) for v in a]  # noqa: E731
        return {"channel_axis": self.axis, "samples": self.n, "mean": r(mean), "std": r(std), "min": r(self.lo),
                "max": r(self.hi)}


#: --calib-size's default: a folder holding fewer inputs is used whole without a warning (the bundled sample has 256)
DEFAULT_SIZE = 512


@dataclass
class CalibrationSet:
    """A sample of calibration inputs for one model input, produced with one preprocessing contract."""

    root: Path
    preprocess: Preprocess
    input_name: str
    input_shape: tuple[int, ...] | None = None
    size: int | None = DEFAULT_SIZE
    seed: int = 0
    files: list[Path] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    samples: list[Sample] = field(default_factory=list)
    kind: str = ""
    input_stats: dict[str, Any] | None = None
    available: int = 0
    warn_small: bool = field(default=True, repr=False)  # False for the handful of inputs used by verification
    _hashes: dict[Path, str] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.root = Path(self.root)
        if self.size is not None and (isinstance(self.size, bool) or not isinstance(self.size, int) or self.size <= 0):
            raise CalibrationError(f"--calib-size must be a positive integer, not {self.size!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise CalibrationError(f"--calib-seed must be an integer, not {self.seed!r}")
        self.kind, all_samples = discover(self.root, sample_ndim=len(self.input_shape) if self.input_shape else None)
        self.available = len(all_samples)
        if self.size and self.size < len(all_samples):
            rng = random.Random(self.seed)
            self.samples = sorted(rng.sample(all_samples, self.size))
        else:
            self.samples = all_samples
        self.files = sorted({s.path for s in self.samples})
        if not self.warn_small:
            return
        log.info("calibration sample: %d of %d inputs from %s (%s, seed %d; NVIDIA advises >= 500)",
                 len(self.samples), self.available, self.root, self.kind, self.seed)
        if self.size and self.size > self.available and self.size != DEFAULT_SIZE:  # the default is no request
            log.warning("--calib-size %d asked for, but %s holds only %d input(s): using all %d", self.size,
                        self.root, self.available, self.available)
        if len(self.samples) < RECOMMENDED_MIN:
            log.warning("calibration sample has only %d inputs; a few hundred or more is advised (NVIDIA advises "
                        ">= 500): ranges from small samples are noisy", len(self.samples))

    def __len__(self) -> int:
        return len(self.samples)

    def hash_of(self, path: Path) -> str:
        if path not in self._hashes:
            try:
                self._hashes[path] = sha256_file(path)
            except OSError as e:  # an unreadable file still has an identity (it is skipped when streamed)
                self._hashes[path] = sha256_json({"unreadable": str(path), "error": e.strerror})
        return self._hashes[path]

    def content_hashes(self) -> set[str]:
        return {self.hash_of(p) for p in self.files}

    @property
    def key(self) -> str:
        """Determines the statistics: contents of the sampled inputs, preprocessing, input name and shape."""
        items = sorted(self.hash_of(s.path) + ("" if s.row is None else f"[{s.row}]") for s in self.samples)
        return sha256_json({"files": items, "preprocess": self.preprocess.to_dict(), "input": self.input_name,
                            "shape": list(self.input_shape or [])})

    @property
    def channel_axis(self) -> int:
        return 1 if self.preprocess.layout == "NCHW" else -1

    def _load(self, sample: Sample) -> np.ndarray:
        path = sample.path
        if path.suffix.lower() == ".npy":
            arr = np.load(path, mmap_mode="r" if sample.row is not None else None, allow_pickle=False)
            x = arr[sample.row] if sample.row is not None else arr
        elif path.suffix.lower() == ".npz":
            with np.load(path, allow_pickle=False) as z:
                if not z.files:
                    raise ValueError("empty .npz")
                arr = z[self.input_name] if self.input_name in z.files else z[z.files[0]]
            x = arr[sample.row] if sample.row is not None else arr
        else:
            return self.preprocess.apply(self.preprocess.load(path))
        x = np.array(x, dtype=self.preprocess.dtype)
        if self.input_shape and x.ndim == len(self.input_shape) - 1:
            x = x[None]
        return x

    def _check_finite(self, sample: Sample, x: np.ndarray) -> None:
        if np.issubdtype(x.dtype, np.floating) and not np.isfinite(x).all():
            kind = "NaN" if np.isnan(x).any() else "Inf"
            name = sample.label
            if sample.path.suffix.lower() == ".npz":
                name = f"{sample.label} (array '{self._npz_key(sample.path)}')"
            raise CalibrationError(f"calibration tensor {name} in {sample.path} holds {kind} values",
                                   hint="remove or fix that file: non-finite inputs make every activation range "
                                        "meaningless")

    def _npz_key(self, path: Path) -> str:
        try:
            with np.load(path, allow_pickle=False) as z:
                return self.input_name if self.input_name in z.files else (z.files[0] if z.files else "?")
        except Exception:  # noqa: BLE001 - only used to name the array in a message
            return "?"

    def _check_shape(self, sample: Sample, x: np.ndarray) -> None:
        if not self.input_shape:
            return
        want = tuple(self.input_shape)
        if x.ndim != len(want) or any(w > 0 and g != w for g, w in zip(x.shape, want)):
            what = "tensor" if sample.is_tensor else "preprocessed image"
            raise CalibrationError(
                f"calibration {what} {sample.label} has shape {tuple(x.shape)} but the model's input "
                f"'{self.input_name}' is {want}",
                hint="set --preprocess size=HxW,layout=NCHW|NHWC to match the model input" if not sample.is_tensor
                else "save tensors shaped like the model input (with or without the batch axis)")

    def feeds(self, *, progress: str | None = None) -> Iterator[dict[str, np.ndarray]]:
        """Yield ``{input_name: tensor}`` one sample at a time; corrupt files are skipped (warned, counted).

        A full pass also records per-channel input statistics in ``input_stats``.  ``progress`` shows a rich
        progress bar with that description (calibration passes are the slow part the user waits for).
        """
        self.skipped = []
        acc = ChannelStats(self.channel_axis)
        items: Iterable[Sample] = self.samples
        if progress:
            from edgeconv.core.console import track

            items = track(self.samples, progress, total=len(self.samples))
        for sample in items:
            try:
                x = self._load(sample)
            except Exception as e:  # noqa: BLE001 - any decode failure means "skip this file"
                log.warning("skipping unreadable calibration input %s (%s: %s)", sample.path, type(e).__name__,
                            " ".join(str(e).split())[:120])
                self.skipped.append(sample.label if sample.row is not None else str(sample.path))
                continue
            self._check_finite(sample, x)
            self._check_shape(sample, x)
            acc.update(x)
            yield {self.input_name: x}
        if self.skipped and len(self.skipped) == len(self.samples):
            raise CalibrationError(f"none of the {len(self.samples)} calibration inputs in {self.root} could be read",
                                   hint="check the files are images/tensors (not truncated, not LFS pointers)")
        if self.skipped:
            log.warning("skipped %d of %d calibration inputs (unreadable); %d were used", len(self.skipped),
                        len(self.samples), len(self.samples) - len(self.skipped))
        self.input_stats = acc.result()

    def manifest(self) -> dict[str, Any]:
        return {"root": str(self.root.absolute()), "kind": self.kind, "size": len(self.samples), "requested": self.size,
                "available": self.available, "seed": self.seed, "skipped": len(self.skipped),
                "used": len(self.samples) - len(self.skipped), "preprocess": self.preprocess.to_dict(),
                "preprocess_sha256": self.preprocess.sha256, "sha256": self.key, "input_stats": self.input_stats,
                "below_recommended": len(self.samples) < RECOMMENDED_MIN}


def check_disjoint(calib: CalibrationSet, eval_files: list[Path] | str | Path, *, allow_overlap: bool = False) -> int:
    """Refuse calibration/evaluation overlap (by content hash, so renamed copies count) unless allowed.

    ``eval_files`` is a list of files or an evaluation folder/COCO JSON. Returns the number of overlapping files.
    """
    if isinstance(eval_files, (str, Path)):
        eval_files = list_eval_files(eval_files)
    calib_hashes = calib.content_hashes()
    overlap = []
    for p in eval_files:
        try:
            if sha256_file(p) in calib_hashes:
                overlap.append(Path(p))
        except OSError:
            continue
    if overlap and not allow_overlap:
        raise CalibrationError(
            f"{len(overlap)} evaluation input(s) are also in the calibration sample (e.g. {overlap[0].name}); "
            "scores would be optimistic", hint="use disjoint sets, or pass --allow-overlap to accept it")
    if overlap:
        log.warning("%d evaluation inputs overlap the calibration sample (--allow-overlap)", len(overlap))
    return len(overlap)
