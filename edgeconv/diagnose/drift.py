"""Per-layer drift between two captures and where it jumps.

Each tensor's drift is its noise-to-signal ratio ``NSR = ‖b − a‖² / ‖a‖²``, the worse of its mean over samples and
its mean over channels (SNR = −10·log10 NSR; see ``channel_nsr`` for why not pooled), plus the pooled SNR and the
worst per-sample cosine. What a layer *adds* is ``NSR(out) − max NSR(nearest matched inputs)``: noise
already present upstream is not the layer's fault, and relative noise roughly adds along a chain of well-conditioned
layers. A layer whose inputs are already badly damaged (below ~10 dB) can amplify that damage a lot (x*x quadruples
it) without being the cause, so its ``blame`` is the addition (capped at 1: past "destroyed" there is nothing more
to lose) divided by ``1 + NSR_in / 0.1``; jumps and culprits are judged on blame.

A layer is a jump when what it adds is both large in absolute terms (more than ``min_added``, i.e. the layer
alone would leave the tensor below ~30 dB) and either ``factor``× the median blame of all layers — an INT8 model
adds ~1e-4 per layer everywhere; a mis-quantized layer adds orders of magnitude more — or above 0.1 (10 dB) outright,
so a model where most layers are damaged still shows where the damage starts.

When a backend fuses several ONNX nodes into one layer (ncnn's conv+activation), only the fused output is matched;
the nodes between the nearest matched inputs and that output form the layer's ``span``, and the span's weighted node
(the conv) names the module, because that is what ``--keep-fp32`` would keep in float.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgeconv.core.lazy import require
from edgeconv.diagnose.capture import Capture
from edgeconv.diagnose.modules import WEIGHTED, ModuleName

MIN_ADDED = 1e-3
ABS_JUMP = 0.1  # a layer that alone leaves its tensor below 10 dB is a jump however many others are
BLAME_TAU = 0.1  # inputs below ~10 dB SNR: what the layer adds is mostly amplified upstream damage
JUMP_FACTOR = 10.0
SNR_CAP_DB = 120.0


@dataclass
class LayerDrift:
    """Drift of one reference tensor (and the node that produced it) between side A and side B."""

    index: int
    tensor: str
    node: str
    op: str
    module: str | None
    module_source: str
    span: list[str]
    shape: list[int]
    snr_db: float  # from the sample/channel NSR (see channel_nsr)
    snr_pooled_db: float  # classic: all samples and channels pooled
    cosine_min: float
    cosine_mean: float
    max_abs: float
    nsr: float
    added_nsr: float
    blame: float  # added_nsr discounted by the noise already at the inputs (see module docstring)
    inputs: list[str] = field(default_factory=list)
    jump: bool = False
    match_cosine: float | None = None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k in ("snr_db", "snr_pooled_db", "cosine_min", "cosine_mean", "max_abs", "nsr", "added_nsr", "blame"):
            v = d[k]
            d[k] = None if v is None or (isinstance(v, float) and not math.isfinite(v)) else round(float(v), 7)
        return d


@dataclass
class Graph:
    """The reference graph's dataflow: topological tensor order, producers, their inputs, op types."""

    order: list[str]  # graph inputs, then node outputs in node order
    producer: dict[str, str]  # tensor -> node name
    node_inputs: dict[str, list[str]]  # node -> activation inputs (no initializers)
    op: dict[str, str]
    inputs: list[str]
    outputs: list[str]
    node_index: dict[str, int] = field(default_factory=dict)

    @classmethod
    def load(cls, onnx_path: str | Path) -> Graph:
        onnx = require("onnx", "onnx")
        model = onnx.load(str(onnx_path), load_external_data=False)
        inits = {i.name for i in model.graph.initializer}
        consts = {o for n in model.graph.node if n.op_type == "Constant" for o in n.output}
        ins = [i.name for i in model.graph.input if i.name not in inits]
        order, producer, node_inputs, op = list(ins), {}, {}, {}
        for n in model.graph.node:
            if n.op_type == "Constant":
                continue
            op[n.name] = n.op_type
            node_inputs[n.name] = [i for i in n.input if i and i not in inits and i not in consts]
            for o in n.output:
                if o:
                    producer[o] = n.name
                    order.append(o)
        return cls(order, producer, node_inputs, op, ins, [o.name for o in model.graph.output],
                   {name: i for i, name in enumerate(op)})


def _mean_ratio(err: np.ndarray, sig: np.ndarray) -> float:
    live = sig > max(1e-12, 1e-6 * float(sig.mean()))
    if not live.any():
        return 0.0 if float(err.sum()) == 0 else math.inf
    return float(np.mean(err[live] / sig[live]))


def channel_nsr(a: np.ndarray, b: np.ndarray) -> float:
    """Noise-to-signal ratio of stacked samples ``(N, C, ...)``: the worse of the mean per-sample ratio and the mean
    per-channel ratio (channels = axis 1, for tensors with 3+ axes); empty samples/channels are skipped.

    Not pooled over everything: a pooled ratio is dominated by the largest channel and the brightest input, which
    is exactly how a destroyed score channel beside box channels, or a dim image beside bright ones, hides
    (issue 14). Per sample *and* per channel at once would be noise: one near-empty channel of one input decides it.
    """
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    d2 = (b64 - a64) ** 2
    if not np.all(np.isfinite(d2)):
        return math.inf
    a2 = a64**2
    n = a64.shape[0] if a64.ndim else 1
    per_sample = _mean_ratio(d2.reshape(n, -1).sum(1), a2.reshape(n, -1).sum(1))
    if a64.ndim < 3:
        return per_sample
    c = a64.shape[1]
    axes = tuple(i for i in range(a64.ndim) if i != 1)
    return max(per_sample, _mean_ratio(d2.sum(axis=axes).reshape(c), a2.sum(axis=axes).reshape(c)))


def _stats(a_vals: list[np.ndarray], b_vals: list[np.ndarray]) -> tuple[float, float, float, float, float]:
    """(sample/channel NSR, pooled NSR, worst cosine, mean cosine, max abs) over samples."""
    sig = err = 0.0
    coss, mx = [], 0.0
    for a, b in zip(a_vals, b_vals, strict=True):
        a64, b64 = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
        d = b64 - a64
        if not np.all(np.isfinite(d)):
            return math.inf, math.inf, 0.0, 0.0, math.inf
        sig += float(np.dot(a64, a64))
        err += float(np.dot(d, d))
        na, nb = math.sqrt(float(np.dot(a64, a64))), math.sqrt(float(np.dot(b64, b64)))
        coss.append(float(np.dot(a64, b64) / (na * nb)) if na > 0 and nb > 0 else (1.0 if na == nb else 0.0))
        mx = max(mx, float(np.max(np.abs(d))) if d.size else 0.0)
    pooled = err / sig if sig > 0 else (0.0 if err == 0 else math.inf)
    stacked = channel_nsr(np.concatenate(a_vals, 0), np.concatenate(b_vals, 0))
    return stacked, pooled, min(coss), float(np.mean(coss)), mx


def _db(nsr: float) -> float:
    if nsr == 0:
        return SNR_CAP_DB
    return min(SNR_CAP_DB, -10 * math.log10(nsr)) if math.isfinite(nsr) else -math.inf


def layer_drift(graph: Graph, a: Capture, b: Capture, modules: dict[str, ModuleName], *,
                min_added: float = MIN_ADDED, factor: float = JUMP_FACTOR) -> list[LayerDrift]:
    """One row per reference tensor both captures hold (same shape), in topological order, with jumps marked."""
    n = min(len(a.values), len(b.values))
    common = [t for t in graph.order
              if all(t in a.values[i] and t in b.values[i] and a.values[i][t].shape == b.values[i][t].shape
                     for i in range(n))]
    have = set(common)
    nsr: dict[str, float] = {}
    rows: list[LayerDrift] = []
    for t in common:
        s_nsr, pooled, cmin, cmean, mx = _stats([a.values[i][t] for i in range(n)],
                                                [b.values[i][t] for i in range(n)])
        nsr[t] = s_nsr
        node = graph.producer.get(t, "")
        ups, span = _upstream(graph, t, have)
        up_nsr = max((nsr.get(u, 0.0) for u in ups), default=0.0)
        added = max(0.0, s_nsr - up_nsr) if math.isfinite(s_nsr) else math.inf
        blame = min(added, 1.0) / (1.0 + up_nsr / BLAME_TAU) if math.isfinite(up_nsr) else 0.0
        weighted = next((s for s in span if graph.op.get(s) in WEIGHTED), None)
        mn = modules.get(weighted or node) or ModuleName(None, "none")
        q = b.match_quality.get(t, a.match_quality.get(t))
        rows.append(LayerDrift(len(rows), t, node, graph.op.get(node, "input"), mn.module, mn.source, span,
                               list(a.values[0][t].shape), _db(s_nsr), _db(pooled), cmin, cmean, mx, s_nsr, added,
                               blame, ups, match_cosine=q))
    mark_jumps(rows, min_added=min_added, factor=factor)
    return rows


def _upstream(graph: Graph, tensor: str, have: set[str]) -> tuple[list[str], list[str]]:
    """Nearest matched tensors feeding ``tensor`` and the nodes between them and it (the fused span)."""
    node = graph.producer.get(tensor)
    if node is None:
        return [], []
    ups: list[str] = []
    span = [node]
    seen = {node}
    stack = list(graph.node_inputs.get(node, []))
    while stack:
        t = stack.pop()
        if t in have or t not in graph.producer:
            if t not in ups:
                ups.append(t)
            continue
        p = graph.producer[t]
        if p in seen:
            continue
        seen.add(p)
        span.append(p)
        stack.extend(graph.node_inputs.get(p, []))
    return ups, sorted(span, key=lambda s: graph.node_index.get(s, 0))


def mark_jumps(rows: list[LayerDrift], *, min_added: float = MIN_ADDED, factor: float = JUMP_FACTOR) -> None:
    positive = [r.blame for r in rows if r.blame > 0 and math.isfinite(r.blame)]
    median = float(np.median(positive)) if positive else 0.0
    for r in rows:
        r.jump = r.op != "input" and r.blame >= min_added and (r.blame >= factor * median or r.blame >= ABS_JUMP)


def culprits(rows: list[LayerDrift], k: int = 5) -> list[LayerDrift]:
    """The jumps, most to blame first (at most ``k``)."""
    return sorted((r for r in rows if r.jump), key=lambda r: -r.blame)[:k]


def first_jumps(rows: list[LayerDrift], k: int = 5) -> list[LayerDrift]:
    """The first ``k`` jumps in graph order: where the drift starts."""
    return [r for r in rows if r.jump][:k]
