"""Pre-quantization lint: graph patterns and activation statistics that per-tensor INT8 handles badly.

Each rule returns ``Finding``s naming the ONNX nodes (and PyTorch modules) involved and the ``--keep-fp32`` patterns
or preprocessing change that avoids the loss. The rules encode the failures met on real models (issue 14):

- ``mixed-range-concat``: a Concat of tensors whose ranges differ by ``MIXED_RANGE_RATIO``× or more (boxes in pixels
  with scores in [0, 1]); one per-tensor scale for both leaves the small one a handful of levels.
- ``decode-in-graph``: box decoding (grids, anchors, strides, ``Exp``) or NMS/TopK after the last weighted layer;
  the arithmetic mixes ranges and feeds thresholds directly.
- ``outlier-activation``: a tensor whose max is ``OUTLIER_RATIO``× its 99.9th percentile (minmax calibration spends
  the 8 bits on a few values and rounds the rest to a few levels).
- ``whole-tensor-norm``: x / f(reduce(x) over every non-batch axis) (x / mean(x²), RMS over C·H·W): the tensor before
  the division carries the input's own scale, so its calibrated range is set by the brightest image and a dim one
  keeps a few levels — which the division then blows back up.
- ``tiny-calibration``: fewer than ``MIN_CALIBRATION`` calibration inputs.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from edgeconv.lint.graph import PASSTHROUGH, WEIGHTED, LintGraph, Node

MIXED_RANGE_RATIO = 16.0  # 4 of the 8 bits lost on the smaller input
OUTLIER_RATIO = 10.0
MIN_CALIBRATION = 100
REDUCE_OPS = ("ReduceMean", "ReduceSum", "ReduceSumSquare", "ReduceL2", "ReduceL1", "ReduceMax", "ReduceLogSumExp")
BOUNDED_OPS = ("Sigmoid", "Softmax", "Tanh", "HardSigmoid")
NMS_OPS = ("NonMaxSuppression", "TopK", "RoiAlign")
DECODE_OPS = ("Exp", "Pow")


@dataclass
class Finding:
    """One lint warning."""

    rule: str
    message: str
    nodes: list[str]
    modules: list[str] = field(default_factory=list)
    keep_fp32: list[str] = field(default_factory=list)  # patterns for --keep-fp32 (exact ONNX node names)
    suggestion: str = ""
    severity: str = "warning"
    evidence: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _absmax(r: tuple[float, float] | None) -> float | None:
    return None if r is None else max(abs(float(r[0])), abs(float(r[1])))


def _trace_range(g: LintGraph, t: str, ranges: dict[str, tuple[float, float]]) -> float | None:
    """A tensor's |range|, looking through pass-through ops when the tensor itself has no statistics."""
    for _ in range(8):
        if t in ranges:
            return _absmax(ranges[t])
        p = g.producer.get(t)
        if p is None or p.op not in PASSTHROUGH or p.op == "Concat":
            return None
        ins = g.activation_inputs(p)
        if not ins:
            return None
        t = ins[0]
    return None


def _bounded(g: LintGraph, t: str, depth: int = 6) -> bool:
    """Structural guess without statistics: the tensor comes out of a [0, 1] / [-1, 1] op."""
    for _ in range(depth):
        p = g.producer.get(t)
        if p is None:
            return False
        if p.op in BOUNDED_OPS:
            return True
        if p.op not in PASSTHROUGH or not g.activation_inputs(p):
            return False
        t = g.activation_inputs(p)[0]
    return False


def _scaled(g: LintGraph, t: str, depth: int = 6) -> bool:
    """Structural guess: the tensor is scaled by a large constant or exponentiated (decoded boxes)."""
    for _ in range(depth):
        p = g.producer.get(t)
        if p is None:
            return False
        if p.op in DECODE_OPS or (p.op in ("Mul", "Add") and any(np.abs(c).max() >= 4 for c in g.const_inputs(p)
                                                                 if np.asarray(c).size)):
            return True
        if p.op in WEIGHTED or not g.activation_inputs(p):
            return False
        t = g.activation_inputs(p)[0]
    return False


def mixed_range_concat(g: LintGraph, ranges: dict[str, tuple[float, float]] | None) -> list[Finding]:
    out = []
    for n in g.nodes:
        if n.op != "Concat":
            continue
        ins = g.activation_inputs(n)
        if len(ins) < 2:
            continue
        evidence: dict[str, Any] = {}
        if ranges:
            rs = {i: _trace_range(g, i, ranges) for i in ins}
            known = {i: r for i, r in rs.items() if r is not None and r > 0}
            if len(known) < 2:
                continue
            ratio = max(known.values()) / min(known.values())
            if ratio < MIXED_RANGE_RATIO:
                continue
            evidence = {"ratio": round(ratio, 2), "input_absmax": {k: round(v, 6) for k, v in known.items()}}
        else:
            if not (any(_bounded(g, i) for i in ins) and any(_scaled(g, i) for i in ins)):
                continue
            evidence = {"structural": "bounded (sigmoid/softmax) and scaled inputs"}
        at_output = g.downstream_to_output(n.outputs[0])
        keep = [n.name, *_tail_passthrough(g, n.outputs[0])]
        out.append(Finding(
            "mixed-range-concat",
            f"Concat {n.name} joins tensors with very different ranges"
            + (f" ({evidence['ratio']:g}x)" if "ratio" in evidence else "")
            + (" and feeds a graph output" if at_output else "")
            + ": one INT8 scale leaves the small-range inputs (scores, probabilities) a few levels",
            [n.name], keep_fp32=keep,
            suggestion="keep the concat (and what follows it up to the output) in float, or export the "
                       "differently-scaled parts (a detector's boxes and scores) as separate outputs",
            evidence={**evidence, "at_output": at_output}))
    return out


def _tail_passthrough(g: LintGraph, t: str) -> list[str]:
    """Pass-through nodes between ``t`` and the graph outputs (their quantization would re-mix the ranges)."""
    names, stack, seen = [], [t], set()
    while stack:
        x = stack.pop()
        for c in g.consumers.get(x, []):
            if c.op in PASSTHROUGH and c.name not in seen:
                seen.add(c.name)
                names.append(c.name)
                stack.extend(c.outputs)
    return names


def decode_in_graph(g: LintGraph) -> list[Finding]:
    """Box decoding / NMS after the last weighted layer."""
    out = []
    nms = [n for n in g.nodes if n.op in NMS_OPS]
    if nms:
        out.append(Finding("decode-in-graph", f"{len(nms)} NMS/TopK node(s) inside the graph "
                           f"({', '.join(n.name for n in nms[:4])})", [n.name for n in nms],
                           keep_fp32=[n.name for n in nms],
                           suggestion="export the raw head outputs and run NMS in post-processing; otherwise keep "
                                      "these nodes and their inputs in float", evidence={"ops": [n.op for n in nms]}))
    tail = _tail_nodes(g)
    decode = [n for n in tail if n.op in DECODE_OPS or (
        n.op in ("Mul", "Add", "Sub", "Div") and any(np.asarray(c).size > 1 or float(np.abs(c).max()) >= 4
                                                     for c in g.const_inputs(n) if np.asarray(c).size))]
    if decode:
        out.append(Finding("decode-in-graph", f"box-decode arithmetic after the last weighted layer "
                           f"({len(decode)} node(s): {', '.join(n.name for n in decode[:4])})",
                           [n.name for n in decode], keep_fp32=[n.name for n in tail if n.op not in WEIGHTED],
                           suggestion="export the raw head outputs and decode in post-processing, or keep the "
                                      "decode nodes in float",
                           evidence={"ops": sorted({n.op for n in decode})}))
    return out


def _tail_nodes(g: LintGraph) -> list[Node]:
    """Non-weighted nodes downstream of a weighted layer from which no weighted layer is reachable."""
    reach_weighted: dict[str, bool] = {}
    for n in reversed(g.nodes):
        reach_weighted[n.name] = n.op in WEIGHTED or any(
            reach_weighted.get(c.name, False) for o in n.outputs for c in g.consumers.get(o, []))
    after_weighted: dict[str, bool] = {}
    for n in g.nodes:
        after_weighted[n.name] = any(g.producer[i].op in WEIGHTED or after_weighted.get(g.producer[i].name, False)
                                     for i in g.activation_inputs(n) if i in g.producer)
    return [n for n in g.nodes if after_weighted[n.name] and not reach_weighted[n.name]]


def outlier_activations(g: LintGraph, maxima: dict[str, float], p999: dict[str, float]) -> list[Finding]:
    out = []
    for t, mx in maxima.items():
        p = p999.get(t)
        if p is None or p <= 0 or not math.isfinite(mx):
            continue
        ratio = mx / p
        node = g.producer.get(t)
        if ratio < OUTLIER_RATIO or node is None:
            continue
        consumers = [c.name for c in g.consumers.get(t, [])]
        out.append(Finding(
            "outlier-activation", f"tensor {t} (from {node.name}) has extreme outliers: max |x| {mx:.4g} is "
            f"{ratio:.1f}x its 99.9th percentile {p:.4g}; minmax INT8 leaves the bulk of it a few levels",
            [node.name], keep_fp32=[node.name, *consumers],
            suggestion="keep the producer and its consumers in float (the tensor stays float), or calibrate with "
                       "--calib-method percentile", evidence={"tensor": t, "max": mx, "p99.9": p,
                                                              "ratio": round(ratio, 2)}))
    return out


def whole_tensor_norm(g: LintGraph) -> list[Finding]:
    out = []
    for n in g.nodes:
        if n.op not in REDUCE_OPS:
            continue
        x = n.inputs[0]
        rank = g.ranks.get(x)
        axes = g.reduction_axes(n)
        whole = axes is None or (rank is not None and set(axes) >= set(range(1, rank)) and rank >= 3)
        if not whole:
            continue
        source = _square_source(g, x)
        div = _divides(g, n.outputs[0], {x, source})
        if div is None:
            continue
        producer = g.producer.get(source)
        chain = _between(g, n.outputs[0], div.name)
        keep = [producer.name] if producer is not None and producer.op in WEIGHTED else []
        sq = g.producer.get(x)
        if sq is not None and sq.name not in keep:
            keep.append(sq.name)
        keep += [n.name, *chain, div.name]
        out.append(Finding(
            "whole-tensor-norm", f"{div.op} {div.name} normalises {source} by a {n.op} over "
            f"{'all axes' if axes is None else 'every non-batch axis'} ({n.name}): the tensor before it carries "
            "each input's own scale, so low-contrast inputs keep few INT8 levels",
            [n.name, div.name], keep_fp32=list(dict.fromkeys(keep)),
            suggestion="keep the normalisation and the layer feeding it in float, or normalise contrast in "
                       "preprocessing (per-image standardisation) so its input has a stable range",
            evidence={"reduce": n.op, "axes": axes, "rank": rank}))
    return out


def _square_source(g: LintGraph, t: str) -> str:
    """x for x*x / Pow(x, 2) / Abs(x), else t itself."""
    p = g.producer.get(t)
    if p is not None:
        ins = g.activation_inputs(p)
        if p.op == "Mul" and len(ins) == 2 and ins[0] == ins[1]:
            return ins[0]
        if p.op in ("Pow", "Abs") and ins:
            return ins[0]
    return t


def _divides(g: LintGraph, t: str, numerators: set[str], depth: int = 5) -> Node | None:
    """The Div (or Mul by a reciprocal) that uses ``t`` (through Sqrt/Add/Reciprocal/...) against ``numerators``."""
    frontier = [(t, 0)]
    while frontier:
        x, d = frontier.pop()
        for c in g.consumers.get(x, []):
            other = [i for i in g.activation_inputs(c) if i != x]
            if c.op in ("Div", "Mul") and any(o in numerators for o in other):
                return c
            if d < depth and c.op in ("Sqrt", "Add", "Reciprocal", "Pow", "Max", "Clip", "Expand", "Div", "Mul",
                                      "Unsqueeze", "Reshape"):
                frontier.extend((o, d + 1) for o in c.outputs)
    return None


def _between(g: LintGraph, t: str, stop: str, depth: int = 6) -> list[str]:
    names, frontier = [], [(t, 0)]
    while frontier:
        x, d = frontier.pop()
        for c in g.consumers.get(x, []):
            if c.name == stop or d >= depth or c.name in names:
                continue
            if c.op in ("Sqrt", "Add", "Reciprocal", "Pow", "Max", "Clip", "Expand", "Unsqueeze", "Reshape"):
                names.append(c.name)
                frontier.extend((o, d + 1) for o in c.outputs)
    return names


def tiny_calibration(calib_size: int | None) -> list[Finding]:
    if calib_size is None or calib_size >= MIN_CALIBRATION:
        return []
    return [Finding("tiny-calibration", f"only {calib_size} calibration inputs: activation ranges from so few are "
                    "noisy and miss the rare inputs that set them", [],
                    suggestion=f"--calib-size {max(300, 3 * calib_size)} or more (NVIDIA advises >= 500), from the "
                    "deployment distribution",
                    evidence={"calib_size": calib_size, "minimum": MIN_CALIBRATION})]
