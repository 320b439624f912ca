"""Numpy detection post-processing: box IoU, class-aware NMS, YOLO and CenterNet decoders.

Why numpy (no torch): decoding must be identical for every backend (PyTorch, ONNX Runtime,
OpenVINO, TFLite, ...), so the exported graphs stop at the raw head maps and this one implementation
turns them into boxes.  Conventions follow YOLOv5/CenterNet exactly so the bundled checkpoints
decode as trained; anchors and strides come from ``edgeconv.zoo.yolo`` (single source of truth).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from edgeconv.zoo import yolo as _yolo  # light: torch is only imported inside yolo.build()


@dataclass
class Detections:
    """Detections of one image: ``boxes`` (N,4) xyxy in input-pixel coords, ``scores`` (N,), ``classes`` (N,)."""

    boxes: np.ndarray
    scores: np.ndarray
    classes: np.ndarray

    def __post_init__(self) -> None:
        self.boxes = np.asarray(self.boxes, dtype=np.float32).reshape(-1, 4)
        self.scores = np.asarray(self.scores, dtype=np.float32).reshape(-1)
        self.classes = np.asarray(self.classes, dtype=np.int64).reshape(-1)

    def __len__(self) -> int:
        return len(self.scores)

    def filter(self, min_score: float) -> Detections:
        keep = self.scores >= min_score
        return Detections(self.boxes[keep], self.scores[keep], self.classes[keep])

    @classmethod
    def empty(cls) -> Detections:
        return cls(np.zeros((0, 4)), np.zeros(0), np.zeros(0))


def _sigmoid(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        return 1.0 / (1.0 + np.exp(-x))


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of xyxy boxes ``a`` (N,4) and ``b`` (M,4) -> (N,M)."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    area_a = (a[:, 2] - a[:, 0]).clip(0) * (a[:, 3] - a[:, 1]).clip(0)
    area_b = (b[:, 2] - b[:, 0]).clip(0) * (b[:, 3] - b[:, 1]).clip(0)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    wh = (rb - lt).clip(0)
    inter = wh[..., 0] * wh[..., 1]
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def nms(boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray | None = None, iou_thr: float = 0.6) -> np.ndarray:
    """Greedy NMS; class-aware when ``classes`` is given (boxes of different classes never suppress).

    Returns the kept indices in descending score order.  Suppression is ``IoU > iou_thr`` (as
    torchvision).  Class-awareness uses the coordinate-offset trick: shifting each class into its own
    disjoint region makes a single pass equivalent to per-class NMS.
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    if len(scores) == 0:
        return np.zeros(0, dtype=np.int64)
    if classes is not None:
        span = float(np.abs(boxes).max()) + 1.0
        boxes = boxes + (np.asarray(classes, dtype=np.float64).reshape(-1, 1) * 2 * span + 2 * span)
    order = np.argsort(-scores, kind="stable")
    x1, y1, x2, y2 = boxes.T
    areas = (x2 - x1).clip(0) * (y2 - y1).clip(0)
    keep = []
    while order.size:
        i = order[0]
        keep.append(i)
        rest = order[1:]
        iw = (np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest])).clip(0)
        ih = (np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest])).clip(0)
        inter = iw * ih
        union = areas[i] + areas[rest] - inter
        iou = np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)
        order = rest[iou <= iou_thr]
    return np.asarray(keep, dtype=np.int64)


def _as_list(outputs: Mapping[str, np.ndarray] | Sequence[np.ndarray], names: Sequence[str]) -> list[np.ndarray]:
    if isinstance(outputs, Mapping):
        if all(n in outputs for n in names):
            return [np.asarray(outputs[n]) for n in names]
        return [np.asarray(v) for v in outputs.values()]
    return [np.asarray(v) for v in outputs]


def decode_yolo(
    outputs: Mapping[str, np.ndarray] | Sequence[np.ndarray],
    conf: float = 0.001,
    iou: float = 0.6,
    max_det: int = 300,
    max_nms: int = 10000,
    anchors: Sequence[Sequence[Sequence[float]]] | None = None,
) -> list[Detections]:
    """Decode raw YOLOv5 head maps (``p3``, ``p4``, ``p5``; each (B, na*(5+nc), H, W)) to detections.

    YOLOv5 formula: ``xy = (2*sigmoid(t_xy) - 0.5 + grid) * stride``, ``wh = (2*sigmoid(t_wh))**2 *
    anchor``, score = objectness * class probability.  Multi-label like YOLOv5 evaluation: every
    (box, class) pair with score > ``conf`` is a candidate, then class-aware NMS.  The stride of each
    map is derived from its size relative to the largest map (which has stride ``STRIDES[0]``), so
    the decoder does not need to know the input size.
    """
    anchors = _yolo.ANCHORS if anchors is None else anchors
    maps = sorted(_as_list(outputs, _yolo.OUTPUT_NAMES), key=lambda m: -m.shape[-1])  # finest first
    if len(maps) != len(anchors):
        raise ValueError(f"expected {len(anchors)} YOLO outputs, got {len(maps)}")
    na = len(anchors[0])
    bsz = maps[0].shape[0]
    input_w = maps[0].shape[-1] * _yolo.STRIDES[0]
    input_h = maps[0].shape[-2] * _yolo.STRIDES[0]
    per_level = []
    for lvl, p in enumerate(maps):
        b, c, h, w = p.shape
        no = c // na
        stride_x, stride_y = input_w / w, input_h / h
        s = _sigmoid(p.astype(np.float32).reshape(b, na, no, h, w).transpose(0, 1, 3, 4, 2))  # (b,na,h,w,no)
        gy, gx = np.meshgrid(np.arange(h, dtype=np.float32), np.arange(w, dtype=np.float32), indexing="ij")
        anc = np.asarray(anchors[lvl], dtype=np.float32).reshape(1, na, 1, 1, 2)
        xy = (s[..., 0:2] * 2 - 0.5 + np.stack([gx, gy], -1)[None, None]) * np.array([stride_x, stride_y], np.float32)
        wh = (s[..., 2:4] * 2) ** 2 * anc
        per_level.append(np.concatenate([xy, wh, s[..., 4:]], -1).reshape(b, -1, no))
    pred = np.concatenate(per_level, 1)  # (b, n, 5+nc)
    results = []
    for bi in range(bsz):
        x = pred[bi]
        x = x[x[:, 4] > conf]
        scores = x[:, 5:] * x[:, 4:5]
        i, j = np.nonzero(scores > conf)
        if i.size == 0:
            results.append(Detections.empty())
            continue
        sc = scores[i, j]
        if sc.size > max_nms:
            top = np.argsort(-sc, kind="stable")[:max_nms]
            i, j, sc = i[top], j[top], sc[top]
        xywh = x[i, :4]
        boxes = np.concatenate([xywh[:, :2] - xywh[:, 2:] / 2, xywh[:, :2] + xywh[:, 2:] / 2], 1)
        keep = nms(boxes, sc, j, iou)[:max_det]
        results.append(Detections(boxes[keep], sc[keep], j[keep]))
    return results


def _maxpool3x3(x: np.ndarray) -> np.ndarray:
    """3x3 stride-1 max-pool with -inf padding over the last two axes."""
    h, w = x.shape[-2:]
    pad = np.pad(x, [(0, 0)] * (x.ndim - 2) + [(1, 1), (1, 1)], constant_values=-np.inf)
    out = pad[..., 0:h, 0:w]
    for dy in range(3):
        for dx in range(3):
            out = np.maximum(out, pad[..., dy : dy + h, dx : dx + w])
    return out


def decode_centernet(
    outputs: Mapping[str, np.ndarray] | Sequence[np.ndarray], K: int = 100, stride: int = 4, conf: float = 0.0
) -> list[Detections]:
    """Decode CenterNet maps (``heatmap`` (B,nc,H,W) post-sigmoid, ``wh`` and ``offset`` (B,2,H,W)).

    Peaks = positions equal to their 3x3 max-pool (this replaces NMS), then the top ``K`` peaks over
    all classes.  ``wh``/``offset`` are in output-grid units; boxes are returned in input pixels.
    """
    hm, wh, off = _as_list(outputs, ("heatmap", "wh", "offset"))
    hm = hm.astype(np.float32)
    b, _nc, h, w = hm.shape
    peaks = np.where(_maxpool3x3(hm) == hm, hm, 0.0).reshape(b, -1)
    k = min(K, peaks.shape[1])
    results = []
    for bi in range(b):
        top = np.argpartition(-peaks[bi], k - 1)[:k]
        top = top[np.argsort(-peaks[bi][top], kind="stable")]
        sc = peaks[bi][top]
        cls = top // (h * w)
        pix = top % (h * w)
        ys, xs = pix // w, pix % w
        cx = (xs + off[bi, 0, ys, xs]) * stride
        cy = (ys + off[bi, 1, ys, xs]) * stride
        bw, bh = wh[bi, 0, ys, xs] * stride, wh[bi, 1, ys, xs] * stride
        boxes = np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], 1)
        keep = sc > conf
        results.append(Detections(boxes[keep], sc[keep], cls[keep]))
    return results
