"""Rank layers by how much INT8 hurts them, so the float fallback tries the worst ones first.

Two measurements, both on the ONNX Runtime Q/DQ proxy built from the shared statistics (backend-agnostic: a layer
whose ranges are hostile to per-tensor INT8 is hostile on every backend):

- ``isolated`` (default): for each quantizable node, the reference with *only that node* reading quantized inputs
  (``qdq.Variants``), scored on the calibration feeds by the drift of the graph outputs — or, when a task evaluator
  is given, by the task-metric loss on a subset of its items. It answers the question the fallback asks ("what
  does quantizing this layer cost?") without the other layers' noise, and it attributes a shared tensor to every
  quantized consumer of it (ORT quantizes a tensor once any consumer is quantized).
- ``drift``: one fully quantized proxy diagnosed layer by layer (``edgeconv.diagnose``); a node's score is the drift
  it adds at its output, also credited to the quantized consumers of a jumping tensor. One run instead of one per
  node, but accumulated upstream noise blurs the ranking.

``benchmarks/int8_fallback.py`` measured both on the issue's patterns and the bundled models (attempts and layers
kept until the budget holds); ``docs/int8.md`` has the numbers behind the default.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgeconv.core.console import track
from edgeconv.core.errors import ConfigError
from edgeconv.diagnose.drift import channel_nsr
from edgeconv.diagnose.modules import ModuleName, module_map
from edgeconv.quant.qdq import Variants, full_qdq

METHODS = ("isolated", "drift")


@dataclass(frozen=True)
class Ranked:
    """One candidate layer: ONNX node, PyTorch module, sensitivity score (higher = hurts more)."""

    node: str
    module: str | None
    score: float
    op: str = ""

    def __iter__(self) -> Any:  # unpacks as (node, module, score)
        return iter((self.node, self.module, self.score))

    def to_dict(self) -> dict[str, Any]:
        return {"node": self.node, "module": self.module, "score": self.score, "op": self.op}


def output_drift(refs: list[dict[str, np.ndarray]], gots: list[dict[str, np.ndarray]]) -> float:
    """Mean over outputs of the worse of the channel-first and channel-last mean channel NSR (a destroyed score
    field of a (N, anchors, 4+classes) output shows on the last axis, a destroyed feature map on axis 1)."""
    vals = []
    for name in refs[0]:
        a = np.concatenate([r[name] for r in refs], 0)
        b = np.concatenate([g[name] for g in gots], 0)
        v = channel_nsr(a, b)
        if a.ndim >= 3:
            v = max(v, channel_nsr(np.moveaxis(a, -1, 1), np.moveaxis(b, -1, 1)))
        vals.append(v)
    return float(np.mean(vals)) if vals else 0.0


def _session(model: bytes | str, threads: int | None) -> Any:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    if threads:
        so.intra_op_num_threads = threads
    return ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])


def _run(sess: Any, feeds: list[dict[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
    outs = [o.name for o in sess.get_outputs()]
    ins = [i.name for i in sess.get_inputs()]
    return [dict(zip(outs, sess.run(outs, {n: f[n] for n in ins}), strict=True)) for f in feeds]


def _ops(onnx_path: Path) -> dict[str, str]:
    import onnx

    return {n.name: n.op_type for n in onnx.load(str(onnx_path), load_external_data=False).graph.node}


def rank_layers(reference_onnx: str | Path, calibration_feeds: Iterable[dict[str, np.ndarray]], statistics: Any, *,
                method: str = "isolated", evaluator: Any = None, samples: int = 16, eval_items: int = 64,
                candidates: list[str] | None = None, modules: dict[str, ModuleName] | None = None,
                threads: int | None = None) -> list[Ranked]:
    """Candidate layers, most INT8-sensitive first, as ``Ranked(node, module, score)``.

    ``statistics``: the shared activation statistics (``ctx.statistics()``); ``calibration_feeds``: inputs from the
    calibration distribution (the first ``samples`` are used); ``evaluator``: a TaskEvaluator — the isolated scores
    then are task-metric losses (points) on its first ``eval_items`` items, with the output drift as tie-break.
    """
    if method not in METHODS:
        raise ConfigError(f"unknown sensitivity method '{method}'", hint=f"one of {', '.join(METHODS)}")
    ref = Path(reference_onnx)
    feeds = []
    for f in calibration_feeds:
        feeds.append(f)
        if len(feeds) >= samples:
            break
    if not feeds:
        raise ConfigError("sensitivity ranking needs calibration inputs", hint="pass calibration feeds")
    modules = modules if modules is not None else module_map(ref, reexport=False)
    ops = _ops(ref)
    with tempfile.TemporaryDirectory(prefix="edgeconv-rank-") as d:
        qdq = full_qdq(ref, statistics, Path(d) / "full_qdq.onnx")
        if method == "isolated":
            scores = _isolated(ref, qdq, feeds, evaluator, eval_items, candidates, threads)
        else:
            scores = _drift(ref, qdq, feeds, candidates, modules)
    ranked = [Ranked(n, (modules.get(n) or ModuleName(None, "none")).label(), s, ops.get(n, "")) for n, s in
              scores.items()]
    return sorted(ranked, key=lambda r: (-r.score, r.node))


def _isolated(ref: Path, qdq: Path, feeds: list[dict[str, np.ndarray]], evaluator: Any, eval_items: int,
              candidates: list[str] | None, threads: int | None) -> dict[str, float]:
    v = Variants(ref, qdq)
    nodes = [n for n in v.quantized_nodes() if candidates is None or n in candidates]
    base = _run(_session(str(ref), threads), feeds)
    items = evaluator.items[:eval_items] if evaluator is not None else None
    base_task = None
    if items:
        s = _session(str(ref), threads)
        base_task = _task(evaluator, s, items)
    out: dict[str, float] = {}
    for n in track(nodes, "ranking layers (one quantized at a time)"):
        sess = _session(v.only([n]), threads)
        drift = output_drift(base, _run(sess, feeds))
        score = drift if math.isfinite(drift) else 1e9
        if items and base_task is not None:
            score = max(0.0, base_task - _task(evaluator, sess, items)) + min(score, 1.0) * 1e-3
        out[n] = float(score)
    return out


def _task(evaluator: Any, sess: Any, items: list[Any]) -> float:
    outs = [o.name for o in sess.get_outputs()]
    ins = [i.name for i in sess.get_inputs()]
    results = [dict(zip(outs, sess.run(outs, {n: f[n] for n in ins}), strict=True)) for f, _ in items]
    return float(evaluator.score(results, [lab for _, lab in items]))


def _drift(ref: Path, qdq: Path, feeds: list[dict[str, np.ndarray]], candidates: list[str] | None,
           modules: dict[str, ModuleName]) -> dict[str, float]:
    from edgeconv.diagnose.capture import capture_onnx, capture_reference
    from edgeconv.diagnose.drift import Graph, layer_drift

    graph = Graph.load(ref)
    a = capture_reference(ref, feeds)
    b = capture_onnx(qdq, feeds, set(graph.order), label="proxy", backend="onnx")
    rows = layer_drift(graph, a, b, modules)
    v = Variants(ref, qdq)
    quantized = set(v.quantized_nodes())
    consumers: dict[str, list[str]] = {}
    for node, ins in graph.node_inputs.items():
        for t in ins:
            consumers.setdefault(t, []).append(node)
    out: dict[str, float] = {}
    for r in rows:
        add = r.blame if math.isfinite(r.blame) else 1e9
        for n in [s for s in r.span if s in quantized] or ([r.node] if r.node in quantized else []):
            out[n] = max(out.get(n, 0.0), add)
        for c in consumers.get(r.tensor, []):  # a consumer reading this tensor quantized keeps its error alive
            if c in quantized:
                out[c] = max(out.get(c, 0.0), 0.99 * add)
    for n in quantized:
        out.setdefault(n, 0.0)
    return {n: s for n, s in out.items() if candidates is None or n in candidates}
