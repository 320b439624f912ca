"""Decode + NMS appended to the reference ONNX, so the graph itself returns the detections contract.

Why append to the reference rather than re-export a wrapped module: the reference ONNX is the verified graph every
backend converts from (and the only input for ONNX-only models); appending keeps the network bit-identical and puts
the post-processing in the same opset, under node names starting with ``ec_post/`` (kept float on INT8 routes).

Variants (``nms=``):

* ``"onnx"``: ``NonMaxSuppression`` + ``TopK`` + ``ScatterND`` + ``GatherElements`` -> ``detections``/``count``.
  Runs on ONNX Runtime and OpenVINO, and on TensorRT >= 8.5 through its INMSLayer (``NonMaxSuppression`` is parsed
  natively there; pass ``tensorrt=True`` to refuse a pre-NMS ``TopK`` larger than TensorRT's 3840).
* ``"none"``: decode + ``TopK`` only -> ``candidates``/``candidate_count`` (NMS beside the graph) for backends
  without ``NonMaxSuppression``.  For CenterNet this already is the contract (its peaks need no NMS).
* ``"efficientnms"``: TensorRT's ``EfficientNMS_TRT`` plugin node (TensorRT 8.x before INMSLayer, and faster on GPU)
  -> the same contract.  ONNX Runtime cannot run the plugin: only its structure and its inputs can be checked here.

The keep mask trick (NMS indices scattered into a dense ``(N, C, A)`` mask, then ``TopK`` over the kept scores) makes
the result independent of the order in which a runtime returns ``selected_indices`` and works for any batch size.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgeconv.core.errors import ConfigError
from edgeconv.core.lazy import require
from edgeconv.postprocess.spec import CANDIDATE_COUNT, CANDIDATES, COUNT, DETECTIONS, PostprocessSpec, as_spec

PREFIX = "ec_post/"
#: ``--keep-fp32`` pattern matching every node this module adds.
KEEP_FP32_PATTERN = PREFIX + "*"
NMS_MODES = ("onnx", "none", "efficientnms")
TENSORRT_MAX_TOPK = 3840
MIN_OPSET = 13


class _Builder:
    """Appends prefixed nodes and initializers; picks attribute-or-input forms by the model's opset."""

    def __init__(self, onnx: Any, opset: int) -> None:
        self.onnx, self.h, self.opset = onnx, onnx.helper, opset
        self.nodes: list[Any] = []
        self.inits: list[Any] = []
        self._n = 0

    def _name(self, hint: str) -> str:
        self._n += 1
        return f"{PREFIX}{hint}_{self._n}"

    def const(self, value: Any, dtype: Any = np.float32, hint: str = "c") -> str:
        name = self._name(hint)
        self.inits.append(self.onnx.numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def i64(self, *values: int) -> str:
        return self.const(list(values), np.int64, "i")

    def op(self, op_type: str, inputs: list[str], n_out: int = 1, domain: str = "", **attrs: Any) -> Any:
        name = self._name(op_type)
        outs = [f"{name}:{i}" for i in range(n_out)]
        self.nodes.append(self.h.make_node(op_type, inputs, outs, name=name, domain=domain, **attrs))
        return outs[0] if n_out == 1 else outs

    def slice(self, x: str, start: int, end: int, axis: int) -> str:
        return self.op("Slice", [x, self.i64(start), self.i64(end), self.i64(axis)])

    def unsqueeze(self, x: str, axis: int) -> str:
        return self.op("Unsqueeze", [x, self.i64(axis)])

    def reduce(self, op_type: str, x: str, axis: int, keepdims: int) -> str:
        axes_as_input = self.opset >= 18 or (op_type == "ReduceSum" and self.opset >= 13)
        if axes_as_input:
            return self.op(op_type, [x, self.i64(axis)], keepdims=keepdims)
        return self.op(op_type, [x], axes=[axis], keepdims=keepdims)

    def xywh_to_xyxy(self, xywh: str, axis: int) -> str:
        xy, wh = self.slice(xywh, 0, 2, axis), self.slice(xywh, 2, 4, axis)
        half = self.op("Mul", [wh, self.const(0.5)])
        return self.op("Concat", [self.op("Sub", [xy, half]), self.op("Add", [xy, half])], axis=axis)


def _hw(spec: PostprocessSpec, shapes: dict[str, tuple[int, ...]], name: str) -> tuple[int, int]:
    shp = shapes.get(name)
    if shp is None or len(shp) != 4 or any(not isinstance(d, int) or d <= 0 for d in shp[1:]):
        raise ConfigError(f"post-processing: output '{name}' needs static C, H, W in the graph (got {shp})",
                          hint="export with a fixed input size (dynamic batch is fine)", stage="postprocess")
    return int(shp[2]), int(shp[3])


def _decode_yolo(b: _Builder, spec: PostprocessSpec, shapes: dict[str, tuple[int, ...]]) -> tuple[str, str, int]:
    """Nodes computing ``boxes (N, A, 4)`` xyxy pixels and ``scores (N, C, A)``; returns their names and A."""
    dec, nc = spec.decode, spec.decode.num_classes
    if dec.head == "yolov5":
        na, no = dec.num_anchors, 5 + nc
        flat, gridoff, scale2, anc4 = [], [], [], []
        for lvl, name in enumerate(dec.outputs):
            h, w = _hw(spec, shapes, name)
            r = b.op("Reshape", [name, b.i64(0, na, no, h * w)])
            flat.append(b.op("Reshape", [b.op("Transpose", [r], perm=[0, 1, 3, 2]), b.i64(0, na * h * w, no)]))
            gy, gx = np.meshgrid(np.arange(h, dtype=np.float32), np.arange(w, dtype=np.float32), indexing="ij")
            s = float(dec.strides[lvl])
            gridoff.append(np.tile((np.stack([gx.ravel(), gy.ravel()], -1) - 0.5) * s, (na, 1)))
            scale2.append(np.full((na * h * w, 1), 2.0 * s, np.float32))
            anc4.append(np.repeat(np.asarray(dec.anchors[lvl], np.float32) * 4.0, h * w, axis=0))
        n_anchor = sum(len(g) for g in gridoff)
        sig = b.op("Sigmoid", [b.op("Concat", flat, axis=1) if len(flat) > 1 else flat[0]])
        xy = b.op("Add", [b.op("Mul", [b.slice(sig, 0, 2, 2), b.const(np.concatenate(scale2)[None])]),
                          b.const(np.concatenate(gridoff)[None])])
        wh_s = b.slice(sig, 2, 4, 2)
        wh = b.op("Mul", [b.op("Mul", [wh_s, wh_s]), b.const(np.concatenate(anc4)[None])])
        boxes = b.xywh_to_xyxy(b.op("Concat", [xy, wh], axis=2), axis=2)
        cls = b.op("Mul", [b.slice(sig, 5, no, 2), b.slice(sig, 4, 5, 2)])
        return boxes, b.op("Transpose", [cls], perm=[0, 2, 1]), n_anchor
    if dec.head == "yolov8":
        reg = dec.reg_max
        flat, anchor, stride = [], [], []
        for lvl, name in enumerate(dec.outputs):
            h, w = _hw(spec, shapes, name)
            flat.append(b.op("Reshape", [name, b.i64(0, 4 * reg + nc, h * w)]))
            gy, gx = np.meshgrid(np.arange(h, dtype=np.float32), np.arange(w, dtype=np.float32), indexing="ij")
            anchor.append(np.stack([gx.ravel() + 0.5, gy.ravel() + 0.5], 0))
            stride.append(np.full((1, h * w), float(dec.strides[lvl]), np.float32))
        n_anchor = sum(a.shape[1] for a in anchor)
        x = b.op("Concat", flat, axis=2) if len(flat) > 1 else flat[0]
        box = b.slice(x, 0, 4 * reg, 1)
        if reg > 1:
            sm = b.op("Softmax", [b.op("Reshape", [box, b.i64(0, 4, reg, n_anchor)])], axis=2)
            proj = b.const(np.arange(reg, dtype=np.float32).reshape(1, 1, reg, 1))
            box = b.reduce("ReduceSum", b.op("Mul", [sm, proj]), 2, 0)
        anc = b.const(np.concatenate(anchor, 1)[None])
        st = b.const(np.concatenate(stride, 1)[None])
        x1y1 = b.op("Mul", [b.op("Sub", [anc, b.slice(box, 0, 2, 1)]), st])
        x2y2 = b.op("Mul", [b.op("Add", [anc, b.slice(box, 2, 4, 1)]), st])
        boxes = b.op("Transpose", [b.op("Concat", [x1y1, x2y2], axis=1)], perm=[0, 2, 1])
        return boxes, b.op("Sigmoid", [b.slice(x, 4 * reg, 4 * reg + nc, 1)]), n_anchor
    if dec.head == "ssd":
        return _decode_ssd(b, spec, shapes)
    # yolo-decoded
    name = dec.outputs[0]
    shp = shapes.get(name) or ()
    if len(shp) != 3 or not isinstance(shp[1], int) or not isinstance(shp[2], int) or min(shp[1:]) <= 0:
        raise ConfigError(f"post-processing: output '{name}' needs a static (N, ·, ·) shape (got {shp})",
                          hint="export with a fixed input size", stage="postprocess")
    if dec.channels_first:
        n_anchor = int(shp[2])
        boxes = b.op("Transpose", [b.xywh_to_xyxy(b.slice(name, 0, 4, 1), axis=1)], perm=[0, 2, 1])
        return boxes, b.slice(name, 4, 4 + nc, 1), n_anchor
    n_anchor, off = int(shp[1]), 5 if dec.objectness else 4
    cls = b.slice(name, off, off + nc, 2)
    if dec.objectness:
        cls = b.op("Mul", [cls, b.slice(name, 4, 5, 2)])
    return b.xywh_to_xyxy(b.slice(name, 0, 4, 2), axis=2), b.op("Transpose", [cls], perm=[0, 2, 1]), n_anchor


def _decode_ssd(b: _Builder, spec: PostprocessSpec, shapes: dict[str, tuple[int, ...]]) -> tuple[str, str, int]:
    """Prior-box decode (``standalone.decode_ssd``, the same constants and operation order)."""
    from edgeconv.postprocess.standalone import ssd_constants

    dec = spec.decode
    loc, conf = dec.outputs
    ctr, scale, size = ssd_constants(spec.to_dict()["decode"])
    n_anchor, ct = ctr.shape[1], dec.num_classes + int(dec.background)
    for name, cols in ((loc, 4), (conf, ct)):
        shp = shapes.get(name) or ()
        if len(shp) != 3 or shp[1] != n_anchor or shp[2] != cols:
            raise ConfigError(f"post-processing: ssd output '{name}' is {shp}, expected (N, {n_anchor}, {cols}) for "
                              f"the priors of strides {list(dec.strides)} and min_sizes {list(dec.min_sizes)}",
                              hint="check strides=, min_sizes=, num_classes= and background= against the model's "
                                   "prior-box configuration", stage="postprocess")
    xy = b.op("Add", [b.const(ctr), b.op("Mul", [b.slice(loc, 0, 2, 2), b.const(scale)])])
    wh = b.op("Mul", [b.const(size), b.op("Exp", [b.op("Mul", [b.slice(loc, 2, 4, 2), b.const(dec.variances[1])])])])
    boxes = b.xywh_to_xyxy(b.op("Concat", [xy, wh], axis=2), axis=2)
    probs = b.op("Softmax", [conf], axis=2) if dec.conf_softmax else conf
    cls = b.slice(probs, 1, ct, 2) if dec.background else probs
    return boxes, b.op("Transpose", [cls], perm=[0, 2, 1]), n_anchor


def _gather_rows(b: _Builder, boxes: str, anchor_idx: str) -> str:
    """``boxes (N, A, 4)`` rows at ``anchor_idx (N, K)`` -> ``(N, K, 4)``."""
    shape = b.op("Concat", [b.op("Shape", [anchor_idx]), b.i64(4)], axis=0)
    return b.op("GatherElements", [boxes, b.op("Expand", [b.unsqueeze(anchor_idx, 2), shape])], axis=1)


def _assemble(b: _Builder, boxes_k: str, scores_k: str, cls_k: str, valid: str) -> tuple[str, str]:
    """Rows ``x1 y1 x2 y2 score class`` times the 0/1 ``valid`` mask, and the per-image count (int32)."""
    cls_f = b.op("Cast", [cls_k], to=b.onnx.TensorProto.FLOAT)
    rows = b.op("Concat", [boxes_k, b.unsqueeze(scores_k, 2), b.unsqueeze(cls_f, 2)], axis=2)
    dets = b.op("Mul", [rows, b.unsqueeze(valid, 2)])
    count = b.op("Cast", [b.reduce("ReduceSum", valid, 1, 0)], to=b.onnx.TensorProto.INT32)
    return dets, count


def _topk(b: _Builder, x: str, k: int, size: int, tensorrt: bool, what: str) -> tuple[str, str, int]:
    k = min(k, size)
    if tensorrt and k > TENSORRT_MAX_TOPK:
        raise ConfigError(f"post-processing: {what} needs TopK({k}), above TensorRT's limit of {TENSORRT_MAX_TOPK}",
                          hint=f"set max_candidates <= {TENSORRT_MAX_TOPK} (or >= {size}: no pre-NMS cap) for tensorrt",
                          stage="postprocess")
    vals, idx = b.op("TopK", [x, b.i64(k)], n_out=2, axis=-1, largest=1, sorted=1)
    return vals, idx, k


def _pad_k(b: _Builder, x: str, have: int, want: int, rank: int) -> str:
    """Pad axis 1 from ``have`` to ``want`` with zeros (only when there are fewer candidates than K)."""
    if have >= want:
        return x
    pads = [0] * rank + [0] * rank
    pads[rank + 1] = want - have
    return b.op("Pad", [x, b.i64(*pads)])


def _class_scores(b: _Builder, spec: PostprocessSpec, scores: str, n_anchor: int) -> tuple[str, str | None, int]:
    """Scores as NMS sees them: ``(N, C, A)`` class-aware or ``(N, 1, A)`` best class (+ its index) when agnostic."""
    if not spec.class_agnostic:
        return scores, None, spec.decode.num_classes
    best = b.reduce("ReduceMax", scores, 1, 1)
    return best, b.op("ArgMax", [scores], axis=1, keepdims=0), 1


def _cap(b: _Builder, spec: PostprocessSpec, scores: str, n_cls: int, n_anchor: int, tensorrt: bool) -> str:
    """Zero the pairs below the ``max_candidates``-th score, only when more pairs than that pass the threshold.

    The cap sits in an ``If``: a TopK over the cap size costs more than the whole NMS (2 ms of 2.9 ms on the
    bundled YOLO with ONNX Runtime), and it only changes the result in the rare images that exceed it.
    """
    size = n_cls * n_anchor
    if spec.max_candidates >= size:
        return scores
    h = b.onnx.helper
    flat = b.op("Reshape", [scores, b.i64(0, size)])
    above = b.op("Cast", [b.op("Greater", [flat, b.const(spec.score_threshold)])], to=b.onnx.TensorProto.INT64)
    most = b.reduce("ReduceMax", b.reduce("ReduceSum", above, 1, 0), 0, 0)  # 0-D: the busiest image's count
    cond = b.op("Greater", [most, b.const(spec.max_candidates, np.int64)])
    outer = b.nodes
    b.nodes = []
    vals, _, k = _topk(b, flat, spec.max_candidates, size, tensorrt, "the pre-NMS cap (max_candidates)")
    capped = b.op("Where", [b.op("GreaterOrEqual", [flat, b.slice(vals, k - 1, k, 1)]), flat, b.const(0.0)])
    then_g = h.make_graph(b.nodes, f"{PREFIX}cap_then", [], [h.make_tensor_value_info(capped, b.onnx.TensorProto.FLOAT,
                                                                                      None)])
    b.nodes = []
    same = b.op("Identity", [flat])
    else_g = h.make_graph(b.nodes, f"{PREFIX}cap_else", [], [h.make_tensor_value_info(same, b.onnx.TensorProto.FLOAT,
                                                                                      None)])
    b.nodes = outer
    out = b.op("If", [cond], then_branch=then_g, else_branch=else_g)
    return b.op("Reshape", [out, b.i64(0, n_cls, n_anchor)])


def _nms_onnx(b: _Builder, spec: PostprocessSpec, boxes: str, scores: str, n_anchor: int,
              tensorrt: bool) -> tuple[str, str]:
    nms_scores, best_cls, n_cls = _class_scores(b, spec, scores, n_anchor)
    nms_scores = _cap(b, spec, nms_scores, n_cls, n_anchor, tensorrt)
    sel = b.op("NonMaxSuppression", [boxes, nms_scores, b.i64(spec.max_det), b.const([spec.iou_threshold]),
                                     b.const([spec.score_threshold])], center_point_box=0)
    n_sel = b.slice(b.op("Shape", [sel]), 0, 1, 0)
    one = b.onnx.helper.make_tensor("one", b.onnx.TensorProto.FLOAT, [1], [1.0])
    zero = b.onnx.helper.make_tensor("zero", b.onnx.TensorProto.FLOAT, [1], [0.0])
    ones = b.op("ConstantOfShape", [n_sel], value=one)
    mask = b.op("ScatterND", [b.op("ConstantOfShape", [b.op("Shape", [nms_scores])], value=zero), sel, ones])
    size = n_cls * n_anchor
    mask_flat = b.op("Reshape", [mask, b.i64(0, size)])
    kept = b.op("Mul", [b.op("Reshape", [nms_scores, b.i64(0, size)]), mask_flat])
    vals, idx, k = _topk(b, kept, spec.max_det, size, tensorrt, "the final top-K (max_det)")
    valid = b.op("GatherElements", [mask_flat, idx], axis=1)
    if best_cls is None:
        cls, anchor = b.op("Div", [idx, b.i64(n_anchor)]), b.op("Mod", [idx, b.i64(n_anchor)])
    else:
        cls, anchor = b.op("GatherElements", [best_cls, idx], axis=1), idx
    dets, count = _assemble(b, _gather_rows(b, boxes, anchor), vals, cls, valid)
    return _pad_k(b, dets, k, spec.max_det, 3), count


def _candidates(b: _Builder, spec: PostprocessSpec, boxes: str, scores: str, n_anchor: int,
                tensorrt: bool) -> tuple[str, str]:
    nms_scores, best_cls, n_cls = _class_scores(b, spec, scores, n_anchor)
    size = n_cls * n_anchor
    flat = b.op("Reshape", [nms_scores, b.i64(0, size)])
    vals, idx, _ = _topk(b, flat, spec.max_candidates, size, tensorrt, "the candidates (max_candidates)")
    valid = b.op("Cast", [b.op("Greater", [vals, b.const(spec.score_threshold)])], to=b.onnx.TensorProto.FLOAT)
    if best_cls is None:
        cls, anchor = b.op("Div", [idx, b.i64(n_anchor)]), b.op("Mod", [idx, b.i64(n_anchor)])
    else:
        cls, anchor = b.op("GatherElements", [best_cls, idx], axis=1), idx
    return _assemble(b, _gather_rows(b, boxes, anchor), vals, cls, valid)


def _efficientnms(b: _Builder, spec: PostprocessSpec, boxes: str, scores: str) -> tuple[str, str]:
    nac = b.op("Transpose", [scores], perm=[0, 2, 1])  # the plugin takes (N, A, C)
    num, boxes_k, scores_k, cls_k = b.op(
        "EfficientNMS_TRT", [boxes, nac], n_out=4, domain="TRT", plugin_version="1", background_class=-1,
        box_coding=0, score_activation=0, class_agnostic=int(spec.class_agnostic),
        iou_threshold=float(spec.iou_threshold), score_threshold=float(spec.score_threshold),
        max_output_boxes=int(spec.max_det))
    # Rows past num_detections are not promised to be zero: mask them as the contract requires.
    ar = b.const(np.arange(spec.max_det, dtype=np.int32)[None])
    valid = b.op("Cast", [b.op("Less", [ar, num])], to=b.onnx.TensorProto.FLOAT)
    return _assemble(b, boxes_k, scores_k, cls_k, valid)


def _centernet(b: _Builder, spec: PostprocessSpec, shapes: dict[str, tuple[int, ...]]) -> tuple[str, str]:
    hm, wh, off = spec.decode.outputs
    h, w = _hw(spec, shapes, hm)
    nc, k_want = spec.decode.num_classes, spec.max_det
    if not spec.decode.heatmap_sigmoid:
        hm = b.op("Sigmoid", [hm])
    pooled = b.op("MaxPool", [hm], kernel_shape=[3, 3], strides=[1, 1], pads=[1, 1, 1, 1])
    peaks = b.op("Where", [b.op("Equal", [pooled, hm]), hm, b.const(0.0)])
    vals, idx, k = _topk(b, b.op("Reshape", [peaks, b.i64(0, nc * h * w)]), k_want, nc * h * w, False, "peaks")
    cls, pix = b.op("Div", [idx, b.i64(h * w)]), b.op("Mod", [idx, b.i64(h * w)])
    ys = b.op("Cast", [b.op("Div", [pix, b.i64(w)])], to=b.onnx.TensorProto.FLOAT)
    xs = b.op("Cast", [b.op("Mod", [pix, b.i64(w)])], to=b.onnx.TensorProto.FLOAT)
    shape = b.op("Concat", [b.slice(b.op("Shape", [idx]), 0, 1, 0), b.i64(2), b.slice(b.op("Shape", [idx]), 1, 2, 0)],
                 axis=0)
    pix2 = b.op("Expand", [b.unsqueeze(pix, 1), shape])

    def at(t: str) -> tuple[str, str]:
        g = b.op("GatherElements", [b.op("Reshape", [t, b.i64(0, 2, h * w)]), pix2], axis=2)  # (N, 2, K)
        return b.op("Squeeze", [b.slice(g, 0, 1, 1), b.i64(1)]), b.op("Squeeze", [b.slice(g, 1, 2, 1), b.i64(1)])

    (ox, oy), (bw, bh) = at(off), at(wh)
    s = b.const(float(spec.decode.strides[0]))
    cx, cy = b.op("Mul", [b.op("Add", [xs, ox]), s]), b.op("Mul", [b.op("Add", [ys, oy]), s])
    hw_ = b.op("Mul", [bw, b.const(0.5 * spec.decode.strides[0])])
    hh_ = b.op("Mul", [bh, b.const(0.5 * spec.decode.strides[0])])
    boxes = b.op("Concat", [b.unsqueeze(b.op("Sub", [cx, hw_]), 2), b.unsqueeze(b.op("Sub", [cy, hh_]), 2),
                            b.unsqueeze(b.op("Add", [cx, hw_]), 2), b.unsqueeze(b.op("Add", [cy, hh_]), 2)], axis=2)
    valid = b.op("Cast", [b.op("Greater", [vals, b.const(spec.score_threshold)])], to=b.onnx.TensorProto.FLOAT)
    dets, count = _assemble(b, boxes, vals, cls, valid)
    return _pad_k(b, dets, k, k_want, 3), count


def make_end2end_onnx(reference_onnx: str | Path, params: PostprocessSpec | Any, out_path: str | Path, *,
                      nms: str = "onnx", tensorrt: bool = False) -> Path:
    """Write ``reference_onnx`` + decode (+ NMS) to ``out_path``; its outputs are the contract (or candidates).

    ``nms``: ``"onnx"`` | ``"none"`` | ``"efficientnms"`` (module docstring).  Outputs: ``detections (N, K, 6)``
    float32 + ``count (N,)`` int32, or for ``"none"`` on YOLO heads ``candidates (N, M, 6)`` + ``candidate_count``.
    """
    onnx = require("onnx", "onnx")
    spec = as_spec(params)
    if nms not in NMS_MODES:
        raise ConfigError(f"post-processing: unknown nms mode '{nms}'", hint=f"choose from {', '.join(NMS_MODES)}",
                          stage="postprocess")
    model = onnx.load(str(reference_onnx))
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if opset < MIN_OPSET:
        raise ConfigError(f"post-processing: the reference ONNX has opset {opset}; the in-graph decode needs "
                          f">= {MIN_OPSET}", hint=f"re-export with --opset {MIN_OPSET} or newer", stage="postprocess")
    inferred = onnx.shape_inference.infer_shapes(model)
    shapes: dict[str, tuple[int, ...]] = {}
    for vi in list(inferred.graph.output) + list(inferred.graph.value_info):
        shapes[vi.name] = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in vi.type.tensor_type.shape.dim)
    graph_outs = [o.name for o in model.graph.output]
    missing = [n for n in spec.decode.outputs if n not in graph_outs]
    if missing:
        raise ConfigError(f"post-processing: outputs {missing} are not outputs of {Path(reference_onnx).name}",
                          hint=f"graph outputs: {graph_outs}", stage="postprocess")
    b = _Builder(onnx, opset)
    out_names = (DETECTIONS, COUNT)
    if spec.decode.head == "centernet":
        dets, count = _centernet(b, spec, shapes)
        k = spec.max_det
    else:
        boxes, scores, n_anchor = _decode_yolo(b, spec, shapes)
        if nms == "onnx":
            dets, count = _nms_onnx(b, spec, boxes, scores, n_anchor, tensorrt)
            k = spec.max_det
        elif nms == "efficientnms":
            dets, count = _efficientnms(b, spec, boxes, scores)
            k = spec.max_det
        else:
            dets, count = _candidates(b, spec, boxes, scores, n_anchor, tensorrt)
            k = min(spec.max_candidates, (1 if spec.class_agnostic else spec.decode.num_classes) * n_anchor)
            out_names = (CANDIDATES, CANDIDATE_COUNT)
    b.nodes.append(onnx.helper.make_node("Identity", [dets], [out_names[0]], name=f"{PREFIX}out_{out_names[0]}"))
    b.nodes.append(onnx.helper.make_node("Identity", [count], [out_names[1]], name=f"{PREFIX}out_{out_names[1]}"))
    batch = model.graph.input[0].type.tensor_type.shape.dim[0]
    n_dim: Any = batch.dim_value if batch.HasField("dim_value") else (batch.dim_param or "N")
    model.graph.node.extend(b.nodes)
    model.graph.initializer.extend(b.inits)
    del model.graph.output[:]
    model.graph.output.extend([
        onnx.helper.make_tensor_value_info(out_names[0], onnx.TensorProto.FLOAT, [n_dim, k, 6]),
        onnx.helper.make_tensor_value_info(out_names[1], onnx.TensorProto.INT32, [n_dim]),
    ])
    if nms == "efficientnms" and spec.decode.head != "centernet":
        model.opset_import.append(onnx.helper.make_opsetid("TRT", 1))
    else:
        onnx.checker.check_model(model)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(out_path))
    return out_path


def postprocess_node_names(onnx_path: str | Path) -> list[str]:
    """Names of the decode/NMS nodes ``make_end2end_onnx`` added (keep them float on INT8 routes: ``keep_fp32``)."""
    onnx = require("onnx", "onnx")
    return [n.name for n in onnx.load(str(onnx_path), load_external_data=False).graph.node
            if n.name.startswith(PREFIX)]
