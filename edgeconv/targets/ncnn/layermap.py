"""Reference ONNX nodes → the ncnn layers computing them, so ``--keep-fp32`` (matched on the reference graph) keeps
the right ncnn layers in float.

pnnx renames every layer (``conv_3``, ``convrelu_0``) and fuses some (a Conv with its ReLU), so names cannot be
matched. Tensors can: the fp32 ncnn net and the reference are run on the same probe inputs, and each reference
tensor is matched to the ncnn blob holding the same values (same element count, max error within ``REL_TOL`` of the
tensor's range, on *every* probe — realistic inputs where they exist and wide-range noise, so two tensors equal on
one input, such as a ReLU output and the sum that only differs where a rare spike is added, are told apart), and
never to a blob produced before the blobs its inputs matched. Among blobs holding the same values, the earliest
produced wins (ncnn's ``Split`` copies a blob for each consumer).

Each matched blob's producing layer then owns the reference node that produced the tensor, and every node upstream
of it whose own output matched nothing (a fused Conv before its ReLU, a Reshape pnnx folded away), up to the nearest
matched tensors. A ``--keep-fp32`` pattern whose nodes map to no ncnn layer is a ConfigError naming the pattern and
some layers: a silent no-match would quantize exactly what the user meant to protect.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from edgeconv.core import keep as keep_matcher
from edgeconv.core.errors import ConfigError, ConversionError
from edgeconv.core.isolate import child_threads
from edgeconv.core.lazy import require

REL_TOL = 1e-3


def reference_tensors(onnx_path: Path, feeds: list[dict[str, np.ndarray]]) -> tuple[list[dict[str, np.ndarray]],
                                                                                   list[Any]]:
    """Every float tensor a reference node produces, on each feed (batch 1), and the graph's nodes."""
    onnx = require("onnx", "onnx")
    ort = require("onnxruntime", "onnxruntime")
    model = onnx.load(str(onnx_path))
    nodes = list(model.graph.node)
    have = {o.name for o in model.graph.output}
    for n in nodes:
        for t in n.output:
            if t and t not in have:
                model.graph.output.append(onnx.ValueInfoProto(name=t))
                have.add(t)
    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.intra_op_num_threads = child_threads(None) or 0  # ORT's pools are not fork-safe: 1 in a forked child
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    ins = [i.name for i in sess.get_inputs()]
    out = []
    for f in feeds:
        vals = dict(zip(names, sess.run(names, {k: f[k] for k in ins}), strict=True))
        out.append({k: np.asarray(v) for k, v in vals.items()
                    if isinstance(v, np.ndarray) and np.issubdtype(v.dtype, np.floating)})
    return out, nodes


def ncnn_blobs(param: Path, bin_: Path, input_blobs: dict[str, str], feeds: list[dict[str, np.ndarray]],
               runtime: dict[str, Any] | None = None, threads: int | None = 1) -> list[dict[str, np.ndarray]]:
    """Every blob of an ncnn net on each batch entry of each feed, with light mode off so none is freed early
    (also what ``edgeconv diagnose`` captures)."""
    ncnn = require("ncnn", "ncnn")
    from edgeconv.targets.ncnn import ncnnfile
    from edgeconv.targets.ncnn.runner import make_option

    layers, _ = ncnnfile.parse_param(Path(param).read_text())
    blobs = [t for la in layers if la.type != "Input" for t in la.tops]
    net = ncnn.Net()
    net.opt = make_option(ncnn, {**(runtime or {}), "light_mode": False}, threads)
    net.load_param(str(param))
    net.load_model(str(bin_))
    out = []
    try:
        for f, b in ((fd, b) for fd in feeds for b in range(next(iter(fd.values())).shape[0])):
            owned = [np.array(f[name][b], np.float32, order="C", copy=True) for name in input_blobs]
            mats = [ncnn.Mat(a) for a in owned]  # a Mat does not own its numpy buffer
            ex = net.create_extractor()
            ex.set_light_mode(False)
            for blob, m in zip(input_blobs.values(), mats, strict=True):
                ex.input(blob, m)
            row = {}
            for blob in blobs:
                ret, m = ex.extract(blob)
                if ret == 0:
                    row[blob] = np.array(m, dtype=np.float32, copy=True)
                del m
            del ex, mats  # extractors and Mats die before the net (its allocator aborts otherwise)
            out.append(row)
    finally:
        net.clear()
    return out


def _same(ref: np.ndarray, got: np.ndarray, cosine: bool = False) -> float:
    """Max error relative to the reference tensor's range, or ``1 - cosine`` of the centred values (inf when the
    sizes differ)."""
    if ref.size != got.size:
        return np.inf
    r = np.asarray(ref, np.float64).ravel()
    g = np.asarray(got, np.float64).ravel()
    if cosine:
        r, g = r - r.mean(), g - g.mean()
        nr, ng = float(np.linalg.norm(r)), float(np.linalg.norm(g))
        return 1.0 - float(np.dot(r, g) / (nr * ng)) if nr > 0 and ng > 0 else np.inf
    return float(np.abs(r - g).max()) / (float(np.abs(r).max()) + 1e-6)


def match_tensors(refs: list[dict[str, np.ndarray]], gots: list[dict[str, np.ndarray]], blob_order: list[str],
                  nodes: list[Any], min_cosine: float | None = None) -> dict[str, str]:
    """reference tensor -> ncnn blob holding its values on every probe (``min_cosine``: matched by cosine instead,
    for a net whose values differ from the reference, such as an int8 model's dequantized twin).

    Walked in the reference's topological order; a tensor may only match a blob produced no earlier than the blobs
    its inputs matched (so a sum equal to one of its operands on every probe still finds the sum's blob, and a
    Reshape pnnx folded away finds its input's); among equal candidates the earliest-produced blob wins (ncnn's
    ``Split`` copies a blob for each consumer)."""
    rank = {b: i for i, b in enumerate(blob_order)}
    by_size: dict[int, list[str]] = {}
    for b, v in gots[0].items():  # a blob constant on every probe (any constant matches any other) is not matched
        if v.size and any(b in g and float(np.std(g[b])) > 0 for g in gots):
            by_size.setdefault(v.size, []).append(b)
    out: dict[str, str] = {}
    bound: dict[str, int] = {}  # the latest blob a tensor's computation is known to depend on
    for n in nodes:
        lo = max((bound.get(i, -1) for i in n.input if i), default=-1)
        for t in n.output:
            if not t:
                continue
            bound[t] = lo
            r0 = refs[0].get(t)
            if r0 is None or r0.size == 0 or not any(t in r and float(np.std(r[t])) > 0 for r in refs):
                continue
            best: tuple[float, int, str] | None = None
            for b in by_size.get(r0.size, []):
                if rank.get(b, -1) < lo:
                    continue
                errs = [_same(r[t], g[b], min_cosine is not None) if t in r and b in g else np.inf
                        for r, g in zip(refs, gots, strict=True)]
                err = max((e for e, r in zip(errs, refs, strict=True) if t in r and np.isfinite(r[t]).all()),
                          default=np.inf)
                if err <= (REL_TOL if min_cosine is None else 1.0 - min_cosine):
                    cand = (round(err, 6), rank.get(b, len(rank)), b)
                    if best is None or cand[:2] < best[:2]:
                        best = cand
            if best is not None:
                out[t] = best[2]
                bound[t] = best[1]
    return out


def node_layers(nodes: list[Any], tensor_blob: dict[str, str], layer_of_blob: dict[str, str]) -> dict[str, str]:
    """reference node -> ncnn layer: the producer of each matched tensor, and the unmatched nodes upstream of it."""
    producer = {t: n for n in nodes for t in n.output if t}
    out: dict[str, str] = {}
    for n in nodes:  # topological: the nearest matched tensor downstream claims an unmatched node first
        hits = [tensor_blob[t] for t in n.output if t in tensor_blob]
        if not hits or hits[0] not in layer_of_blob:
            continue
        layer = layer_of_blob[hits[0]]
        out.setdefault(n.name, layer)
        stack = [t for t in n.input if t and t not in tensor_blob]
        seen: set[str] = set()
        while stack:
            t = stack.pop()
            if t in seen or t not in producer:
                continue
            seen.add(t)
            p = producer[t]
            if p.name in out:
                continue
            out[p.name] = layer
            stack.extend(i for i in p.input if i and i not in tensor_blob)
    return out


def layer_map(onnx_path: Path, param: Path, bin_: Path, input_blobs: dict[str, str],
              feeds: Iterable[dict[str, np.ndarray]], runtime: dict[str, Any] | None = None,
              min_cosine: float | None = None) -> dict[str, str]:
    """ONNX node -> ncnn layer for an fp32 ncnn net converted from ``onnx_path`` (see the module docstring);
    ``min_cosine`` matches by cosine instead of by value, for a net that only approximates the reference.

    ``input_blobs``: reference input name -> ncnn input blob; ``feeds``: probe inputs (reference names, NCHW with
    the batch axis; the first sample of each is used).
    """
    return node_and_tensor_map(onnx_path, param, bin_, input_blobs, feeds, runtime, min_cosine)[0]


def node_and_tensor_map(onnx_path: Path, param: Path, bin_: Path, input_blobs: dict[str, str],
                        feeds: Iterable[dict[str, np.ndarray]], runtime: dict[str, Any] | None = None,
                        min_cosine: float | None = None) -> tuple[dict[str, str], dict[str, str]]:
    """``(ONNX node -> ncnn layer, reference tensor -> ncnn blob holding its values)``; see :func:`layer_map`."""
    from edgeconv.targets.ncnn import ncnnfile

    probes = [{k: np.asarray(v)[:1] for k, v in f.items()} for f in feeds]
    if not probes:
        raise ConversionError("mapping ONNX nodes to ncnn layers needs at least one probe input")
    refs, nodes = reference_tensors(onnx_path, probes)
    gots = ncnn_blobs(param, bin_, input_blobs, probes, runtime)
    layers, _ = ncnnfile.parse_param(Path(param).read_text())
    blob_order = [t for la in layers for t in la.tops]
    layer_of_blob = {t: la.name for la in layers for t in la.tops if la.type != "Input"}
    tensor_blob = match_tensors(refs, gots, blob_order, nodes, min_cosine)
    return node_layers(nodes, tensor_blob, layer_of_blob), tensor_blob


def keep_layers(onnx_path: Path, patterns: tuple[str, ...], mapping: dict[str, str],
                layer_names: list[str]) -> tuple[set[str], dict[str, Any]]:
    """(ncnn layers to keep in float, a record per pattern) for ``--keep-fp32`` patterns on the reference graph.

    A pattern whose matched nodes map to no ncnn layer is a ConfigError (the patterns themselves were already
    checked against the reference graph by the one matcher)."""
    per_pattern = keep_matcher.match(keep_matcher.graph_nodes(onnx_path), patterns)
    kept: set[str] = set()
    record: dict[str, Any] = {}
    for p, hits in per_pattern.items():
        layers = sorted({mapping[h] for h in hits if h in mapping})
        if not layers:
            some = ", ".join(layer_names[:6]) + (", ..." if len(layer_names) > 6 else "")
            raise ConfigError(f"--keep-fp32 '{p}' matches reference node(s) {', '.join(hits[:4])} that no ncnn "
                              f"layer computes (ncnn layers: {some})",
                              hint="name the layer by a node whose output ncnn keeps (a Conv or Gemm, see "
                                   "`edgeconv inspect`), or by op:TYPE")
        record[p] = {"onnx": hits, "ncnn": layers}
        kept.update(layers)
    return kept, record
