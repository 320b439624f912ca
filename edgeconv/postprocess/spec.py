"""The detections contract and the parameters that produce it, as plain JSON-serialisable dataclasses.

Why one record for everything: the in-graph decode (ONNX), the torch wrapper, the numpy post-processor and the C++
header are all generated from the same ``PostprocessSpec``, and the manifest stores it, so an artifact says exactly
which boxes it promises and every consumer reproduces them.

Contract: ``detections`` ``(N, K, 6)`` float32 rows ``x1, y1, x2, y2, score, class`` in input pixels, sorted by
score, rows past ``count`` all zero; ``count`` ``(N,)`` int32.  Semantics (identical in every implementation):
candidates are the (box, class) pairs with ``score > score_threshold`` (class-aware) or each box's best class
(class-agnostic); if more than ``max_candidates`` pairs pass, only those with a score >= the ``max_candidates``-th
largest stay; greedy NMS suppresses ``IoU > iou_threshold`` (per class unless agnostic); the ``max_det`` best survive.
CenterNet has no NMS: 3x3 max-pool peaks, the ``max_det`` best, ``score > score_threshold``.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from edgeconv.core.errors import ConfigError

DETECTIONS = "detections"
COUNT = "count"
CANDIDATES = "candidates"
CANDIDATE_COUNT = "candidate_count"
#: What an artifact's graph ends with: the raw head maps, decoded top-M candidates (NMS still to do), or the contract.
STAGES = ("raw", "candidates", "detections")

#: Head kinds.  yolov5: per-level anchor maps ``(N, na*(5+nc), H, W)`` (raw logits).  yolov8: per-level anchor-free
#: maps ``(N, 4*reg_max+nc, H, W)`` with DFL (YOLOv8/YOLO11).  yolo-decoded: one tensor of xywh pixels + scores as
#: Ultralytics' exports give it (``(N, 4+nc, A)`` channels-first, or ``(N, A, 5+nc)`` with objectness, YOLOv5).
#: centernet: ``heatmap (N, nc, H, W)``, ``wh`` and ``offset`` ``(N, 2, H, W)`` in grid units.
#: ssd: prior-box heads (RetinaFace, Face-Detector-1MB, UltraFace, FaceBoxes): ``loc (N, A, 4)`` offsets encoded
#: against priors with ``variances``, ``conf (N, A, [1+]nc)``; priors per level of stride ``s`` on a
#: ``ceil(H/s) x ceil(W/s)`` grid, row-major, one per ``min_sizes`` entry (pixels), centre ``(j+0.5)s``.
HEADS = ("yolov5", "yolov8", "yolo-decoded", "centernet", "ssd")
SCHEMA = "edgeconv.postprocess/1"


def _fail(what: str, hint: str) -> ConfigError:
    return ConfigError(f"post-processing: {what}", hint=hint, stage="postprocess")


@dataclass(frozen=True)
class DecodeParams:
    """How a model's raw outputs become boxes: derived from the module (``derive.py``) or given as options."""

    head: str
    num_classes: int
    input_size: tuple[int, int]  # (H, W) of the model input, pixels
    outputs: tuple[str, ...]  # raw output names: levels finest first (yolo), or (heatmap, wh, offset)
    output_shapes: tuple[tuple[int, ...], ...] = ()  # as the reference ONNX declares them (batch axis included)
    strides: tuple[int, ...] = ()  # per level (centernet: one)
    anchors: tuple[tuple[tuple[float, float], ...], ...] = ()  # yolov5: per level (w, h) in input pixels
    reg_max: int = 16  # yolov8: DFL bins per side (1 = plain ltrb distances)
    objectness: bool = False  # yolo-decoded: (N, A, 5+nc) with an objectness column (YOLOv5 export)
    channels_first: bool = True  # yolo-decoded: (N, 4+nc, A) (YOLOv8/11 export) rather than (N, A, ...)
    heatmap_sigmoid: bool = True  # centernet: heatmap already passed through sigmoid in the graph
    min_sizes: tuple[tuple[float, ...], ...] = ()  # ssd: prior sizes per level, input pixels
    variances: tuple[float, float] = (0.1, 0.2)  # ssd: centre and size variances of the box encoding
    background: bool = True  # ssd: conf column 0 is the background class (dropped)
    conf_softmax: bool = False  # ssd: conf holds logits (softmax over its columns first); False: probabilities

    def validate(self) -> DecodeParams:
        if self.head not in HEADS:
            raise _fail(f"unknown head '{self.head}'", f"heads: {', '.join(HEADS)} (or give postprocess options)")
        if not isinstance(self.num_classes, int) or self.num_classes < 1:
            raise _fail(f"num_classes must be a positive int, not {self.num_classes!r}", "pass num_classes=N")
        if len(self.input_size) != 2 or any(not isinstance(v, int) or v <= 0 for v in self.input_size):
            raise _fail(f"input_size must be (H, W) positive ints, not {self.input_size!r}", "pass input_size=HxW")
        if not self.outputs:
            raise _fail(f"{self.head} head needs its raw output names", "pass outputs=name,name,...")
        if self.output_shapes and len(self.output_shapes) != len(self.outputs):
            raise _fail(f"{len(self.outputs)} outputs but {len(self.output_shapes)} shapes", "one shape per output")
        if self.head in ("yolov5", "yolov8") and (len(self.strides) != len(self.outputs) or
                                                  any(s <= 0 for s in self.strides)):
            raise _fail(f"{self.head} head needs one positive stride per output level "
                        f"({len(self.outputs)} outputs, strides {list(self.strides)})", "pass strides=8,16,32")
        if self.head == "yolov5" and (len(self.anchors) != len(self.outputs) or len({len(a) for a in self.anchors}) != 1
                                      or any(len(wh) != 2 for a in self.anchors for wh in a)):
            raise _fail(f"yolov5 head needs anchors per level, (na, 2) each (got {len(self.anchors)} levels for "
                            f"{len(self.outputs)} outputs)", "pass anchors as [[[w,h],...], ...] in input pixels")
        if self.head == "yolov8" and (not isinstance(self.reg_max, int) or self.reg_max < 1):
            raise _fail(f"reg_max must be an int >= 1, not {self.reg_max!r}", "YOLOv8/YOLO11 use reg_max=16")
        if self.head == "yolo-decoded" and len(self.outputs) != 1:
            raise _fail(f"yolo-decoded head takes one output, got {len(self.outputs)}", "pass outputs=NAME")
        if self.head == "ssd" and (len(self.outputs) != 2 or not self.min_sizes or
                                   len(self.strides) != len(self.min_sizes) or any(s <= 0 for s in self.strides)
                                   or any(not lvl or min(lvl) <= 0 for lvl in self.min_sizes)):
            raise _fail(f"ssd head needs outputs (loc, conf) and one stride per min_sizes level (got outputs "
                        f"{list(self.outputs)}, strides {list(self.strides)}, min_sizes {list(self.min_sizes)})",
                        "pass outputs=loc,conf strides=8,16,32,64 min_sizes=10/16/24;32/48;64/96;128/192/256")
        if self.head == "ssd" and (len(self.variances) != 2 or min(self.variances) <= 0):
            raise _fail(f"ssd variances must be two positive numbers, not {list(self.variances)}", "variances=0.1,0.2")
        if self.head == "centernet" and (len(self.outputs) != 3 or len(self.strides) != 1):
            raise _fail("centernet head needs outputs (heatmap, wh, offset) and one stride",
                        "pass outputs=heatmap,wh,offset strides=4")
        return self

    @property
    def num_anchors(self) -> int:
        return len(self.anchors[0]) if self.anchors else 1

    @property
    def total_boxes(self) -> int | None:
        """Boxes the head predicts per image (A), from the recorded output shapes; None when they are unknown."""
        if not self.output_shapes:
            return None
        if self.head == "yolo-decoded":
            s = self.output_shapes[0]
            return int(s[2] if self.channels_first else s[1])
        if self.head == "ssd":
            return int(self.output_shapes[0][1])
        if self.head == "centernet":
            return int(self.output_shapes[0][2] * self.output_shapes[0][3])
        return sum(self.num_anchors * int(s[2]) * int(s[3]) for s in self.output_shapes) if self.head == "yolov5" \
            else sum(int(s[2]) * int(s[3]) for s in self.output_shapes)

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(asdict(self)))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DecodeParams:
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(d) - known)
        if unknown:
            raise _fail(f"unknown decode parameter(s) {unknown}", f"valid: {', '.join(sorted(known))}")
        d = dict(d)
        for k in ("input_size", "outputs", "strides"):
            if k in d:
                d[k] = tuple(d[k])
        if "output_shapes" in d:
            d["output_shapes"] = tuple(tuple(int(v) for v in s) for s in d["output_shapes"])
        if "anchors" in d:
            d["anchors"] = tuple(tuple((float(w), float(h)) for w, h in lvl) for lvl in d["anchors"])
        if "min_sizes" in d:
            d["min_sizes"] = tuple(tuple(float(v) for v in lvl) for lvl in d["min_sizes"])
        if "variances" in d:
            d["variances"] = tuple(float(v) for v in d["variances"])
        return cls(**d).validate()


@dataclass(frozen=True)
class PostprocessSpec:
    """Decode parameters plus the contract's conversion options (recorded in the manifest, hashed into caches).

    Defaults are the evaluation settings of ``edgeconv.bench.detection`` (conf 0.001, IoU 0.6, class-aware) so the
    contract reproduces the harness's mAP; an application showing boxes usually wants ``score_threshold=0.25``.
    """

    decode: DecodeParams
    max_det: int = 100
    score_threshold: float = 0.001
    iou_threshold: float = 0.6
    class_agnostic: bool = False
    max_candidates: int = 10000
    schema: str = field(default=SCHEMA)

    def validate(self) -> PostprocessSpec:
        self.decode.validate()
        if not isinstance(self.max_det, int) or isinstance(self.max_det, bool) or self.max_det < 1:
            raise _fail(f"max_det (K) must be a positive int, not {self.max_det!r}", "e.g. max_det=100")
        for name, v, lo_open in (("score_threshold", self.score_threshold, False),
                                 ("iou_threshold", self.iou_threshold, True)):
            ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and \
                (v > 0.0 if lo_open else v >= 0.0) and v <= 1.0 and not (name == "score_threshold" and v == 1.0)
            if not ok:
                rng = "(0, 1]" if lo_open else "[0, 1)"
                raise _fail(f"{name} = {v!r} is out of range {rng}", f"pass a {name} in {rng}")
        if not isinstance(self.max_candidates, int) or self.max_candidates < self.max_det:
            raise _fail(f"max_candidates = {self.max_candidates!r} must be an int >= max_det ({self.max_det})",
                        "raise max_candidates (pre-NMS cap) or lower max_det")
        if not isinstance(self.class_agnostic, bool):
            raise _fail(f"class_agnostic must be true/false, not {self.class_agnostic!r}", "class_agnostic=true")
        return self

    def with_options(self, **options: Any) -> PostprocessSpec:
        """A copy with contract options changed (unknown keys are a ConfigError naming the valid ones)."""
        valid = {"max_det", "score_threshold", "iou_threshold", "class_agnostic", "max_candidates"}
        bad = sorted(set(options) - valid)
        if bad:
            raise _fail(f"unknown option(s) {bad}", f"valid: {', '.join(sorted(valid))}")
        return replace(self, **options).validate()

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["decode"] = self.decode.to_dict()
        return json.loads(json.dumps(d))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PostprocessSpec:
        d = dict(d)
        if d.get("schema", SCHEMA) != SCHEMA:
            raise _fail(f"unsupported post-processing schema {d.get('schema')!r}", f"expected {SCHEMA}")
        if "decode" not in d:
            raise _fail("no 'decode' block", "give the decode parameters")
        known = set(cls.__dataclass_fields__)
        bad = sorted(set(d) - known)
        if bad:
            raise _fail(f"unknown parameter(s) {bad}", f"valid: {', '.join(sorted(known))}")
        d["decode"] = DecodeParams.from_dict(d["decode"])
        return cls(**d).validate()


def as_spec(params: PostprocessSpec | DecodeParams | dict[str, Any]) -> PostprocessSpec:
    """Accept a spec, bare decode parameters (default contract options) or their dict form."""
    if isinstance(params, PostprocessSpec):
        return params.validate()
    if isinstance(params, DecodeParams):
        return PostprocessSpec(params).validate()
    if isinstance(params, dict):
        return PostprocessSpec.from_dict(params) if "decode" in params else PostprocessSpec(
            DecodeParams.from_dict(params)).validate()
    raise _fail(f"expected PostprocessSpec, DecodeParams or dict, got {type(params).__name__}", "build a spec")
