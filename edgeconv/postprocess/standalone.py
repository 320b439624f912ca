"""Detections post-processor: raw head outputs (or decoded candidates) -> the edgeconv detections contract.

Standalone on purpose: this file imports numpy only, and edgeconv copies it verbatim into every detector artifact
as ``postprocess.py`` beside ``postprocess.json``, so an application on a device without edgeconv can::

    import postprocess                      # the artifact's copy; reads postprocess.json next to it
    dets, count = postprocess.apply(outputs)    # outputs: dict name -> array, as the runtime returns them

It is also the reference the in-graph decode (ONNX) and the C++ header are tested against.  Contract:
``dets`` ``(N, K, 6)`` float32 ``x1, y1, x2, y2, score, class`` in input pixels, best first, rows past ``count`` all
zero; ``count`` ``(N,)`` int32.  Candidates are the (box, class) pairs with ``score > score_threshold`` (class-aware)
or each box's best class (class-agnostic); above ``max_candidates`` pairs only those >= the max_candidates-th score
stay; greedy NMS suppresses ``IoU > iou_threshold`` within a class (any class when agnostic); ties go to the lower
flat index (class-major).  CenterNet: 3x3 max-pool peaks, top ``max_det``, ``score > score_threshold``, no NMS.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

import numpy as np

DETECTIONS = "detections"
COUNT = "count"
CANDIDATES = "candidates"
CANDIDATE_COUNT = "candidate_count"

_PARAMS: dict[str, Any] | None = None


def load_params(path: str | None = None) -> dict[str, Any]:
    """The ``postprocess.json`` beside this file (or at ``path``): ``{"spec": {...}, "stage": ...}``."""
    global _PARAMS
    if path is None and _PARAMS is not None:
        return _PARAMS
    p = path or os.path.join(os.path.dirname(os.path.abspath(__file__)), "postprocess.json")
    with open(p, encoding="utf-8") as f:
        params = json.load(f)
    if path is None:
        _PARAMS = params
    return params


def _sigmoid(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        return (1.0 / (1.0 + np.exp(-x.astype(np.float32)))).astype(np.float32)


def _get(outputs: Mapping[str, np.ndarray], names: list[str]) -> list[np.ndarray]:
    missing = [n for n in names if n not in outputs]
    if missing:
        raise KeyError(f"post-processing needs outputs {names}; missing {missing} (got {sorted(outputs)})")
    return [np.asarray(outputs[n], dtype=np.float32) for n in names]


def _xywh_to_xyxy(xywh: np.ndarray) -> np.ndarray:
    """(..., 4) centre/size -> corners, float32."""
    xy, wh = xywh[..., 0:2], xywh[..., 2:4]
    return np.concatenate([xy - wh / 2, xy + wh / 2], -1).astype(np.float32)


def decode_yolo(outputs: Mapping[str, np.ndarray], dec: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """YOLO heads -> ``boxes (N, A, 4)`` xyxy input pixels and ``scores (N, C, A)`` in [0, 1], float32.

    Box order: levels finest first; within a level anchor-major then row-major (y, x), as YOLOv5/YOLOv8 do.
    """
    head, nc = dec["head"], int(dec["num_classes"])
    maps = _get(outputs, list(dec["outputs"]))
    if head == "yolov5":
        anchors = dec["anchors"]
        na = len(anchors[0])
        flat, grid, anc, strides = [], [], [], []
        for lvl, p in enumerate(maps):
            b, c, h, w = p.shape
            if c != na * (5 + nc):
                raise ValueError(f"{dec['outputs'][lvl]}: {c} channels, expected na*(5+nc) = {na * (5 + nc)}")
            flat.append(p.reshape(b, na, 5 + nc, h * w).transpose(0, 1, 3, 2).reshape(b, na * h * w, 5 + nc))
            gy, gx = np.meshgrid(np.arange(h, dtype=np.float32), np.arange(w, dtype=np.float32), indexing="ij")
            grid.append(np.tile(np.stack([gx.ravel(), gy.ravel()], -1), (na, 1)))
            anc.append(np.repeat(np.asarray(anchors[lvl], np.float32), h * w, axis=0))
            strides.append(np.full((na * h * w, 1), float(dec["strides"][lvl]), np.float32))
        s = _sigmoid(np.concatenate(flat, 1))  # (N, A, 5+nc)
        g, a, st = np.concatenate(grid)[None], np.concatenate(anc)[None], np.concatenate(strides)[None]
        xy = (s[..., 0:2] * 2 - 0.5 + g) * st
        wh = (s[..., 2:4] * 2) ** 2 * a
        boxes = _xywh_to_xyxy(np.concatenate([xy, wh], -1))
        scores = (s[..., 5:] * s[..., 4:5]).transpose(0, 2, 1)
    elif head == "yolov8":
        r = int(dec["reg_max"])
        x = np.concatenate([p.reshape(p.shape[0], p.shape[1], -1) for p in maps], 2)  # (N, 4r+nc, A)
        if x.shape[1] != 4 * r + nc:
            raise ValueError(f"yolov8 maps have {x.shape[1]} channels, expected 4*reg_max+nc = {4 * r + nc}")
        bsz, _, n = x.shape
        box = x[:, : 4 * r]
        if r > 1:
            box = box.reshape(bsz, 4, r, n)
            e = np.exp(box - box.max(2, keepdims=True))
            box = (e / e.sum(2, keepdims=True) * np.arange(r, dtype=np.float32).reshape(1, 1, r, 1)).sum(2)
        ax, ay, st = [], [], []
        for lvl, p in enumerate(maps):
            h, w = p.shape[-2:]
            gy, gx = np.meshgrid(np.arange(h, dtype=np.float32), np.arange(w, dtype=np.float32), indexing="ij")
            ax.append(gx.ravel() + 0.5)
            ay.append(gy.ravel() + 0.5)
            st.append(np.full(h * w, float(dec["strides"][lvl]), np.float32))
        axv, ayv, stv = np.concatenate(ax), np.concatenate(ay), np.concatenate(st)
        boxes = np.stack([(axv - box[:, 0]) * stv, (ayv - box[:, 1]) * stv,
                          (axv + box[:, 2]) * stv, (ayv + box[:, 3]) * stv], -1).astype(np.float32)
        scores = _sigmoid(x[:, 4 * r:])
    elif head == "yolo-decoded":
        x = maps[0]
        if dec.get("channels_first", True):
            x = x.transpose(0, 2, 1)  # (N, A, 4+[1]+nc)
        boxes = _xywh_to_xyxy(x[..., :4])
        cls = x[..., 5:] * x[..., 4:5] if dec.get("objectness") else x[..., 4:]
        if cls.shape[-1] != nc:
            raise ValueError(f"decoded output has {cls.shape[-1]} class columns, expected {nc}")
        scores = cls.transpose(0, 2, 1)
    elif head == "ssd":
        return decode_ssd(outputs, dec)
    else:
        raise ValueError(f"decode_yolo does not handle head {head!r}")
    return np.ascontiguousarray(boxes, np.float32), np.ascontiguousarray(scores, np.float32)


def ssd_priors(dec: Mapping[str, Any]) -> np.ndarray:
    """Prior boxes ``(A, 4)`` float32 ``cx, cy, w, h`` in input pixels: per level of stride ``s``, a
    ``ceil(H/s) x ceil(W/s)`` grid, row-major, one prior per ``min_sizes`` entry at ``((j+0.5)s, (i+0.5)s)``
    (RetinaFace's PriorBox, UltraFace's generate_priors; they normalise by the image size, the decode here scales
    back to pixels, so the boxes are the same)."""
    h, w = (int(v) for v in dec["input_size"])
    out = []
    for step, sizes in zip(dec["strides"], dec["min_sizes"], strict=True):
        fh, fw = -(-h // int(step)), -(-w // int(step))
        gy, gx = np.meshgrid(np.arange(fh, dtype=np.float32), np.arange(fw, dtype=np.float32), indexing="ij")
        cx = np.repeat(((gx.ravel() + np.float32(0.5)) * np.float32(step))[:, None], len(sizes), 1)
        cy = np.repeat(((gy.ravel() + np.float32(0.5)) * np.float32(step))[:, None], len(sizes), 1)
        sz = np.broadcast_to(np.asarray(sizes, np.float32)[None], cx.shape)
        out.append(np.stack([cx, cy, sz, sz], -1).reshape(-1, 4))
    return np.concatenate(out).astype(np.float32)


def ssd_constants(dec: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(prior centres, prior sizes x centre variance, prior sizes)``, each ``(1, A, 2)`` float32: what every
    implementation (this file, the ONNX graph, the torch wrapper) multiplies the offsets with, in this order."""
    p = ssd_priors(dec)
    v0 = np.float32(dec.get("variances", (0.1, 0.2))[0])
    return p[None, :, :2].copy(), (p[None, :, 2:] * v0).astype(np.float32), p[None, :, 2:].copy()


def decode_ssd(outputs: Mapping[str, np.ndarray], dec: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """Prior-box head -> ``boxes (N, A, 4)`` xyxy input pixels, ``scores (N, C, A)``:
    ``centre = prior_c + loc_xy * v0 * prior_wh``, ``size = prior_wh * exp(loc_wh * v1)``."""
    loc, conf = _get(outputs, list(dec["outputs"]))
    ctr, scale, size = ssd_constants(dec)
    if loc.shape[1:] != (ctr.shape[1], 4):
        raise ValueError(f"{dec['outputs'][0]}: shape {loc.shape}, expected (N, {ctr.shape[1]}, 4) for these priors")
    v1 = np.float32(dec.get("variances", (0.1, 0.2))[1])
    xy = ctr + loc[..., 0:2] * scale
    with np.errstate(over="ignore"):
        wh = size * np.exp(loc[..., 2:4] * v1)
    boxes = _xywh_to_xyxy(np.concatenate([xy, wh], -1))
    if dec.get("conf_softmax"):
        e = np.exp(conf - conf.max(-1, keepdims=True))
        conf = (e / e.sum(-1, keepdims=True)).astype(np.float32)
    cls = conf[..., 1:] if dec.get("background", True) else conf
    if cls.shape[-1] != int(dec["num_classes"]):
        raise ValueError(f"{dec['outputs'][1]} has {cls.shape[-1]} class columns, expected {dec['num_classes']}")
    return np.ascontiguousarray(boxes, np.float32), np.ascontiguousarray(cls.transpose(0, 2, 1), np.float32)


def _topk_stable(v: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` largest of 1-D ``v``, by descending value then ascending index (as ONNX TopK does)."""
    k = min(k, v.size)
    if k <= 0:
        return np.zeros(0, np.int64)
    if k < v.size:
        kth = np.partition(v, v.size - k)[v.size - k]
        above = np.flatnonzero(v > kth)
        ties = np.flatnonzero(v == kth)[: k - above.size]
        sel = np.concatenate([above, ties])
    else:
        sel = np.arange(v.size)
    return sel[np.lexsort((sel, -v[sel]))]


def _greedy_nms(boxes: np.ndarray, classes: np.ndarray | None, iou_thr: float, limit: int) -> np.ndarray:
    """Greedy NMS over boxes already sorted best first; stops once ``limit`` are kept (they are the top ``limit``).

    Class-aware via the coordinate-offset trick (each class shifted into its own region), float64 like the
    harness's reference decoder.
    """
    b = boxes.astype(np.float64)
    if classes is not None and len(b):
        span = float(np.abs(b).max()) + 1.0
        b = b + (classes.astype(np.float64).reshape(-1, 1) * 2 * span + 2 * span)
    x1, y1, x2, y2 = b.T
    areas = (x2 - x1).clip(0) * (y2 - y1).clip(0)
    order = np.arange(len(b))
    keep: list[int] = []
    while order.size and len(keep) < limit:
        i = order[0]
        keep.append(int(i))
        rest = order[1:]
        iw = (np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest])).clip(0)
        ih = (np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest])).clip(0)
        inter = iw * ih
        union = areas[i] + areas[rest] - inter
        iou = np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)
        order = rest[iou <= iou_thr]
    return np.asarray(keep, np.int64)


def _pack(rows: list[np.ndarray], k: int) -> tuple[np.ndarray, np.ndarray]:
    dets = np.zeros((len(rows), k, 6), np.float32)
    count = np.zeros(len(rows), np.int32)
    for i, r in enumerate(rows):
        n = min(len(r), k)
        dets[i, :n] = r[:n]
        count[i] = n
    return dets, count


def nms_contract(boxes: np.ndarray, scores: np.ndarray, spec: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """``boxes (N, A, 4)``, ``scores (N, C, A)`` -> contract ``(dets, count)`` (see the module docstring)."""
    k, thr, iou = int(spec["max_det"]), float(spec["score_threshold"]), float(spec["iou_threshold"])
    cap, agnostic = int(spec["max_candidates"]), bool(spec["class_agnostic"])
    rows = []
    n_anchor = boxes.shape[1]
    for bi in range(boxes.shape[0]):
        if agnostic:
            cls_all = scores[bi].argmax(0)
            flat = scores[bi].max(0)
        else:
            flat = scores[bi].reshape(-1)  # index = class * A + anchor
        if int((flat > thr).sum()) > cap:
            kth = np.partition(flat, flat.size - cap)[flat.size - cap]
            cand = np.flatnonzero((flat > thr) & (flat >= kth))
        else:
            cand = np.flatnonzero(flat > thr)
        cand = cand[np.argsort(-flat[cand], kind="stable")]
        sc = flat[cand]
        if agnostic:
            anchor, cls = cand, cls_all[cand]
        else:
            anchor, cls = cand % n_anchor, cand // n_anchor
        bx = boxes[bi, anchor]
        keep = _greedy_nms(bx, None if agnostic else cls, iou, k)
        rows.append(np.concatenate([bx[keep], sc[keep, None], cls[keep, None].astype(np.float32)], 1))
    return _pack(rows, k)


def nms_candidates(cands: np.ndarray, cand_count: np.ndarray, spec: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """Decoded top-M candidates ``(N, M, 6)`` (a graph without an NMS op) -> contract ``(dets, count)``."""
    k, iou, agnostic = int(spec["max_det"]), float(spec["iou_threshold"]), bool(spec["class_agnostic"])
    rows = []
    for bi in range(cands.shape[0]):
        c = np.asarray(cands[bi, : int(cand_count[bi])], np.float32)
        c = c[np.argsort(-c[:, 4], kind="stable")]
        keep = _greedy_nms(c[:, :4], None if agnostic else c[:, 5], iou, k)
        rows.append(c[keep])
    return _pack(rows, k)


def _maxpool3x3(x: np.ndarray) -> np.ndarray:
    h, w = x.shape[-2:]
    pad = np.pad(x, [(0, 0)] * (x.ndim - 2) + [(1, 1), (1, 1)], constant_values=-np.inf)
    out = pad[..., 1 : 1 + h, 1 : 1 + w]
    for dy in range(3):
        for dx in range(3):
            out = np.maximum(out, pad[..., dy : dy + h, dx : dx + w])
    return out


def decode_centernet(outputs: Mapping[str, np.ndarray], spec: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """CenterNet maps -> contract: 3x3 max-pool peaks, top ``max_det`` over all classes, ``score > thr``."""
    dec = spec["decode"]
    hm, wh, off = _get(outputs, list(dec["outputs"]))
    if not dec.get("heatmap_sigmoid", True):
        hm = _sigmoid(hm)
    b, _, h, w = hm.shape
    stride = np.float32(dec["strides"][0])
    k, thr = int(spec["max_det"]), float(spec["score_threshold"])
    peaks = np.where(_maxpool3x3(hm) == hm, hm, np.float32(0)).reshape(b, -1)
    rows = []
    for bi in range(b):
        top = _topk_stable(peaks[bi], k)
        sc = peaks[bi, top]
        top, sc = top[sc > thr], sc[sc > thr]
        cls, pix = top // (h * w), top % (h * w)
        ys, xs = pix // w, pix % w
        cx = (xs.astype(np.float32) + off[bi, 0].reshape(-1)[pix]) * stride
        cy = (ys.astype(np.float32) + off[bi, 1].reshape(-1)[pix]) * stride
        bw, bh = wh[bi, 0].reshape(-1)[pix] * stride, wh[bi, 1].reshape(-1)[pix] * stride
        rows.append(np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2, sc, cls.astype(np.float32)], 1))
    return _pack(rows, k)


def apply(outputs: Mapping[str, np.ndarray], params: Mapping[str, Any] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Any artifact's outputs -> ``(dets (N, K, 6) float32, count (N,) int32)``.

    ``params`` is the ``postprocess.json`` content (default: the file beside this module).  Outputs that already
    hold the contract pass through; decoded candidates get NMS; raw head maps are decoded first.
    """
    params = load_params() if params is None else params
    spec = params.get("spec", params)
    if DETECTIONS in outputs and COUNT in outputs:
        return np.asarray(outputs[DETECTIONS], np.float32), np.asarray(outputs[COUNT]).astype(np.int32).reshape(-1)
    if CANDIDATES in outputs:
        return nms_candidates(np.asarray(outputs[CANDIDATES]), np.asarray(outputs[CANDIDATE_COUNT]).reshape(-1), spec)
    if spec["decode"]["head"] == "centernet":
        return decode_centernet(outputs, spec)
    boxes, scores = decode_yolo(outputs, spec["decode"])
    return nms_contract(boxes, scores, spec)


def boxes_of(dets: np.ndarray, count: np.ndarray, image: int = 0) -> list[tuple[Any, ...]]:
    """The valid rows of one image as ``(x1, y1, x2, y2, score, class)`` tuples."""
    return [(*map(float, r[:5]), int(r[5])) for r in dets[image, : int(count[image])]]  # type: ignore[misc]
