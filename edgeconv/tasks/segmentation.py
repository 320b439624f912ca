"""Semantic segmentation: argmax class maps, mIoU and pixel accuracy from one confusion matrix.

Masks are stored at the original image's size; the network saw a resized (stretched, letterboxed or centre-cropped)
copy, and its output may be smaller still (stride 4/8 heads). Each output pixel is therefore mapped back through
the preprocessing meta the loader recorded (``x_img = (x_in - pad_x) / scale_x``) and takes the nearest mask
pixel; output pixels that fall in letterbox padding or outside the image are ignored, as are ``ignore`` pixels.
Scoring at the output's resolution (not upsampling logits) keeps the metric free of an interpolation choice the
model's own pipeline may make differently, and is identical for the reference and the artifact.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np

from edgeconv.core.errors import ConfigError
from edgeconv.tasks.base import Task

PAD = -1  # output pixels outside the image (letterbox padding, crop): never scored


def mask_to_output(mask: np.ndarray, meta: Mapping[str, Any], out_hw: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour copy of an original-size mask at the output's geometry (see the module docstring).

    ``meta`` is what ``Preprocess.apply_with_meta`` returned plus ``input_height``/``input_width`` (the network
    input's size); without them the mask is assumed to cover the output exactly (plain resize)."""
    mask = np.asarray(mask)
    h0, w0 = mask.shape[:2]
    ho, wo = out_hw
    th = float(meta.get("input_height", ho))
    tw = float(meta.get("input_width", wo))
    sx = float(meta.get("scale_x", tw / w0))
    sy = float(meta.get("scale_y", th / h0))
    px, py = float(meta.get("pad_x", 0.0)), float(meta.get("pad_y", 0.0))
    u = (np.arange(wo) + 0.5) * (tw / wo)  # output pixel centres in input pixels
    v = (np.arange(ho) + 0.5) * (th / ho)
    xi = np.floor((u - px) / sx).astype(np.int64)
    yi = np.floor((v - py) / sy).astype(np.int64)
    vx, vy = (xi >= 0) & (xi < w0), (yi >= 0) & (yi < h0)
    out = mask[np.clip(yi, 0, h0 - 1)[:, None], np.clip(xi, 0, w0 - 1)[None, :]].astype(np.int64)
    out[~(vy[:, None] & vx[None, :])] = PAD
    return out


def confusion(pred: np.ndarray, target: np.ndarray, k: int, ignore: int | None = None) -> np.ndarray:
    """[k, k] counts, rows = target class, columns = predicted class, over pixels that are scored."""
    pred = np.asarray(pred, np.int64).reshape(-1)
    target = np.asarray(target, np.int64).reshape(-1)
    if pred.shape != target.shape:
        raise ConfigError(f"task segmentation: prediction has {pred.size} pixels, target {target.size}")
    valid = target >= 0
    if ignore is not None:
        valid &= target != ignore
    t, p = target[valid], pred[valid]
    if t.size and (t.max() >= k or p.max() >= k or p.min() < 0):
        bad = int(t.max()) if t.max() >= k else int(p.max() if p.max() >= k else p.min())
        raise ConfigError(f"task segmentation: class {bad} is outside the {k} classes scored",
                          hint="set segmentation:ignore= to the masks' void value, or classes=N")
    return np.bincount(t * k + p, minlength=k * k).reshape(k, k)


def scores_from_confusion(cm: np.ndarray) -> dict[str, float]:
    """mIoU over classes that occur (in targets or predictions) and pixel accuracy, in percent."""
    cm = np.asarray(cm, np.float64)
    tp = np.diag(cm)
    union = cm.sum(0) + cm.sum(1) - tp
    present = union > 0
    total = cm.sum()
    return {"miou": 100.0 * float(np.mean(tp[present] / union[present])) if present.any() else float("nan"),
            "pixel_accuracy": 100.0 * float(tp.sum() / total) if total else float("nan")}


class SegmentationTask(Task):
    """``segmentation:ignore=255,output=NAME,masks=DIR,classes=N,threshold=0``."""

    name: ClassVar[str] = "segmentation"
    keys: ClassVar[tuple[str, ...]] = ("ignore", "output", "masks", "classes", "threshold")
    scored: ClassVar[bool] = True
    metric: ClassVar[str] = "miou"
    label_free_metric: ClassVar[str] = "label_free_miou"

    def validate(self) -> None:
        def num(key: str, cast: type) -> Any:
            v = self.options.get(key)
            if v is None or v.strip().lower() == "none":
                return None
            try:
                return cast(v)
            except ValueError as e:
                raise ConfigError(f"task segmentation: {key}={v!r} is not a number") from e

        self.ignore: int | None = num("ignore", int) if "ignore" in self.options else 255
        self.classes: int | None = num("classes", int)
        self.threshold: float = num("threshold", float) or 0.0
        self._k: int | None = self.classes

    def predict(self, outputs: Mapping[str, np.ndarray] | np.ndarray) -> list[np.ndarray]:
        """[N,C,H,W] logits -> argmax over C; [N,H,W] (or [N,1,H,W] integral) class map as is; [N,1,H,W] scores ->
        binary by ``threshold`` (0: logits; pass threshold=0.5 for probabilities)."""
        x = self.tensor(outputs)
        if x.ndim == 2:
            x = x[None]
        if x.ndim == 4 and x.shape[1] == 1:
            x = x[:, 0] if np.all(np.equal(np.mod(x, 1), 0)) else (x[:, 0] > self.threshold).astype(np.int64)
            if self._k is None and not np.issubdtype(x.dtype, np.integer) and x.max(initial=0) <= 1:
                self._k = 2
        elif x.ndim == 4:
            if self._k is None:
                self._k = int(x.shape[1])
            x = x.argmax(1)
        elif x.ndim != 3:
            raise ConfigError(f"task segmentation: output of shape {list(x.shape)} is not [N,C,H,W] or [N,H,W]",
                              hint="pick the mask output with segmentation:output=NAME")
        return [np.asarray(m, np.int64) for m in x]

    def targets(self, labels: Sequence[Any], metas: Sequence[Mapping[str, Any]],
                preds: Sequence[list[np.ndarray]]) -> list[list[np.ndarray]]:
        return [[mask_to_output(lab, meta, tuple(p[0].shape))] for lab, meta, p in
                zip(labels, metas, preds, strict=True)]

    def num_classes(self, preds: Sequence[list[np.ndarray]], targets: Sequence[list[np.ndarray]]) -> int:
        """The logits' channel count, ``classes=``, else one more than the largest class seen."""
        if self._k is not None:
            return self._k
        top = 0
        for ps, ts in zip(preds, targets, strict=True):
            for p, t in zip(ps, ts, strict=True):
                tv = t[(t >= 0) & (t != (self.ignore if self.ignore is not None else -2))]
                top = max(top, int(p.max(initial=0)), int(tv.max(initial=0)))
        return top + 1

    def sample_stats(self, preds: Sequence[list[np.ndarray]], targets: Sequence[list[np.ndarray]]) -> np.ndarray:
        """Per sample: its flattened [K, K] confusion matrix."""
        k = self.num_classes(preds, targets)
        rows = np.zeros((len(preds), k * k), np.float64)
        for i, (ps, ts) in enumerate(zip(preds, targets, strict=True)):
            for p, t in zip(ps, ts, strict=True):
                if p.shape != t.shape:
                    raise ConfigError(f"task segmentation: sample {i}: prediction {list(p.shape)} vs target "
                                      f"{list(t.shape)}")
                rows[i] += confusion(p, t, k, self.ignore).reshape(-1)
        return rows

    def summarize(self, stats: np.ndarray) -> dict[str, float]:
        s = np.asarray(stats, np.float64)
        cm = s.sum(0) if s.ndim == 2 else s
        k = math.isqrt(cm.size)
        return scores_from_confusion(cm.reshape(k, k))
