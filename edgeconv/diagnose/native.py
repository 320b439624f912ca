"""Intermediate tensors of ncnn and TFLite artifacts, whose converters rename every tensor.

pnnx names blobs ``0``, ``1``, ... and litert-torch names tensors after MLIR locations, so neither carries the
reference ONNX names. Each backend tensor is therefore matched to a reference tensor **by value**: the same element
count (a 4-D tensor also tried channel-last, as TFLite stores it) and the highest cosine on a probe input, among
reference tensors computed on the same input. Matching runs on a *float twin* where one exists, so the damage being
diagnosed cannot mislead the matching: an INT8 ncnn model's weights are dequantized back to fp32 (the same
``.param`` topology and blob names; ``ncnnfile`` re-packs them) and run with int8 off. TFLite has no such twin; an
INT8 .tflite is matched on its own dequantized intermediates, with a lower cosine floor, and the match quality is
reported per tensor. The artifact manifest's blob table (inputs/outputs, and ``conversion.blob_map`` when a
converter records one) is used as is.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from edgeconv.diagnose.capture import Capture

FLOAT_TWIN_MIN_COS = 0.98
SELF_MIN_COS = 0.6
SAME_VALUES = 1e-3  # cosines this close to a backend tensor's best match: the same values (reshapes, copies)


def _layouts(ref: np.ndarray) -> list[tuple[str, np.ndarray]]:
    out = [("same", ref.ravel())]
    if ref.ndim == 4:
        out.append(("nhwc", np.transpose(ref, (0, 2, 3, 1)).ravel()))
    return out


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    if na == 0 or nb == 0:
        return 1.0 if na == nb else 0.0
    return float(np.dot(a, b) / (na * nb))


def match_by_value(ref: dict[str, np.ndarray], got: dict[str, np.ndarray], order: list[str],
                   min_cos: float) -> dict[str, tuple[str, str, float]]:
    """reference tensor -> (backend tensor, layout, cosine): the best-matching backend tensor of the same size.

    ``order`` is the reference's topological order; near-constant tensors are not matched (any constant matches
    any other constant), and a backend tensor goes to the reference tensor it matches best (others sharing its
    values, such as a Reshape's input, keep it too).
    """
    by_size: dict[int, list[str]] = {}
    flat = {k: np.asarray(v, np.float64).ravel() for k, v in got.items()}
    for k, v in flat.items():
        if v.size and float(np.std(v)) > 0:
            by_size.setdefault(v.size, []).append(k)
    out: dict[str, tuple[str, str, float]] = {}
    for name in order:
        r = ref.get(name)
        if r is None or r.size == 0 or float(np.std(r)) == 0:
            continue
        best = ("", "", -1.0)
        for lay, rv in _layouts(np.asarray(r, np.float64)):
            for k in by_size.get(rv.size, []):
                c = _cos(rv - rv.mean(), flat[k] - flat[k].mean())
                if c > best[2]:
                    best = (k, lay, c)
        if best[2] >= min_cos:
            out[name] = best
    # each backend tensor belongs to the reference tensor it matches best; another reference tensor keeps it only
    # when it holds the same values (a Reshape of it): a fused conv+ReLU has no pre-ReLU tensor to match
    top: dict[str, float] = {}
    for k, _, c in out.values():
        top[k] = max(top.get(k, -1.0), c)
    return {n: m for n, m in out.items() if m[2] >= top[m[0]] - SAME_VALUES}


def _to_reference(a: np.ndarray, ref_shape: tuple[int, ...], layout: str) -> np.ndarray:
    if layout == "nhwc":
        n, c, h, w = ref_shape
        return np.asarray(a, np.float32).reshape(n, h, w, c).transpose(0, 3, 1, 2)
    return np.asarray(a, np.float32).reshape(ref_shape)


# -- ncnn ------------------------------------------------------------------------------------------------------------


def float_twin(param: Path, bin_: Path, out_dir: Path) -> tuple[Path, Path]:
    """The same ncnn model with int8 layers dequantized back to fp32 weights (blob names unchanged)."""
    from edgeconv.targets.ncnn import ncnnfile

    model = ncnnfile.load(param, bin_)
    for la in model.layers:
        if not la.pint(8) or not la.weights or la.weights[0].data.dtype != np.int8:
            continue
        scales = la.weights[-2].data.astype(np.float32)
        q = la.weights[0].data.astype(np.float32).reshape(len(scales), -1)
        w = (q / np.where(scales == 0, 1.0, scales)[:, None]).ravel().astype(np.float32)
        la.weights = [ncnnfile.Blob(w, tagged=True), *la.weights[1:-2]]
        del la.params[8]
    p, b = out_dir / "twin.param", out_dir / "twin.bin"
    model.write(p, b)
    return p, b


def _ncnn_blobs(param: Path, bin_: Path, runtime: dict[str, Any], inputs: dict[str, str],
                feeds: list[dict[str, np.ndarray]], threads: int | None) -> list[dict[str, np.ndarray]]:
    from edgeconv.targets.ncnn.layermap import ncnn_blobs

    return ncnn_blobs(param, bin_, inputs, feeds, runtime, threads)


def capture_ncnn(artifact: Any, feeds: list[dict[str, np.ndarray]], reference: list[dict[str, np.ndarray]],
                 order: list[str], *, label: str, threads: int | None = None) -> Capture:
    """Every blob of an ncnn artifact, matched to reference tensors by value on the first sample (batch 1)."""
    conv = artifact.manifest["conversion"]
    param, bin_ = artifact.file("model"), artifact.file("weights")
    inputs = dict(conv["blobs"]["inputs"])
    runtime = dict(conv.get("runtime", {}))
    known = {ref: blob for ref, blob in conv["blobs"]["outputs"].items()}
    known.update({ref: blob for blob, ref in (conv.get("blob_map") or {}).items()})
    got = _ncnn_blobs(param, bin_, runtime, inputs, feeds, threads)
    work = Path(tempfile.mkdtemp(prefix="edgeconv-diag-ncnn-"))
    notes = []
    try:
        if runtime.get("int8"):
            tp, tb = float_twin(param, bin_, work)
            probe = _ncnn_blobs(tp, tb, {**runtime, "int8": False}, inputs, feeds[:1], threads)[0]
            floor = FLOAT_TWIN_MIN_COS
            notes.append("blobs matched by value on the fp32 twin (int8 weights dequantized, int8 off)")
        else:
            probe, floor = got[0], FLOAT_TWIN_MIN_COS
            notes.append("blobs matched by value")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    first = {k: v[:1] for k, v in reference[0].items()}
    matches = match_by_value(first, probe, order, floor)
    for ref, blob in known.items():
        matches[ref] = (blob, "same", 1.0)
    values = []
    for i, f in enumerate(feeds):
        n = next(iter(f.values())).shape[0]
        rows = got[i * n:(i + 1) * n]
        vals = {}
        for ref, (blob, lay, _) in matches.items():
            shape = tuple(reference[i][ref].shape)
            parts = [rows[b].get(blob) for b in range(n)]
            if any(p is None for p in parts) or shape[0] != n:
                continue
            try:
                vals[ref] = np.concatenate([_to_reference(p, (1, *shape[1:]), lay) for p in parts], 0)
            except ValueError:
                continue
        vals.update({k: np.asarray(v, np.float32) for k, v in f.items()})
        values.append(vals)
    return Capture(label, "ncnn", values, matched_by="value", match_quality={k: v[2] for k, v in matches.items()},
                   sources={k: v[0] for k, v in matches.items()}, notes=notes)


# -- TFLite ------------------------------------------------------------------------------------------------------------


def capture_tflite(artifact: Any, feeds: list[dict[str, np.ndarray]], reference: list[dict[str, np.ndarray]],
                   order: list[str], *, label: str, threads: int | None = None) -> Capture:
    """Every operator output of a .tflite (``experimental_preserve_all_tensors``), dequantized, matched by value."""
    from ai_edge_litert import interpreter as lt

    from edgeconv.targets.tflite.runner import TfliteRunner

    path = artifact.file("model")
    kw: dict[str, Any] = {"num_threads": threads} if threads else {}
    interp = lt.Interpreter(model_path=str(path), experimental_preserve_all_tensors=True, **kw)
    interp.allocate_tensors()
    runner = TfliteRunner(path, io=artifact.manifest.get("conversion", {}).get("io"), interpreter=interp)
    produced = sorted({i for op in interp._get_ops_details() for i in op["outputs"] if i >= 0})
    details = {d["index"]: d for d in interp.get_tensor_details()}
    got, fused = [], []
    for f in feeds:
        fused.append(runner.infer(f))
        row = {}
        for i in produced:
            d = details[i]
            try:
                a = np.array(interp.get_tensor(i), copy=True)
            except ValueError:
                continue
            scale, zp = d.get("quantization", (0.0, 0))
            if np.issubdtype(a.dtype, np.integer):
                if not scale:
                    continue
                a = (a.astype(np.float32) - zp) * scale
            elif not np.issubdtype(a.dtype, np.floating):
                continue
            row[f"{i}:{d['name']}"] = a.astype(np.float32)
        got.append(row)
    quantized = artifact.manifest.get("precision") == "int8"
    floor = SELF_MIN_COS if quantized else FLOAT_TWIN_MIN_COS
    matches = match_by_value({k: v for k, v in reference[0].items()}, got[0], order, floor)
    values = []
    for i, f in enumerate(feeds):
        vals = {}
        for ref, (t, lay, _) in matches.items():
            try:
                vals[ref] = _to_reference(got[i][t], tuple(reference[i][ref].shape), lay)
            except (KeyError, ValueError):
                continue
        vals.update({k: np.asarray(v, np.float32) for k, v in f.items()})
        values.append(vals)
    note = ("tensors matched by value on the int8 model's own dequantized intermediates (no float twin)"
            if quantized else "tensors matched by value")
    return Capture(label, "tflite", values, fused=fused, matched_by="value",
                   match_quality={k: v[2] for k, v in matches.items()}, sources={k: v[0] for k, v in matches.items()},
                   notes=[note])


def ncnn_layer_map(artifact: Any, feed: dict[str, np.ndarray], threads: int | None = None) -> dict[str, str]:
    """ONNX node → the ncnn layer computing it, for an ncnn artifact (fp32 or int8), by value matching.

    The ncnn target's own map (``targets.ncnn.layermap``, what ``--keep-fp32`` uses): the one an int8 conversion
    recorded (``conversion.node_layers``, made on the fp32 net), else made here on the artifact's fp32 net — an int8
    artifact's float twin, matched by cosine — with ``feed`` and a wide-range noise input as probes. ``threads`` is
    accepted for symmetry with the captures; the map runs on one thread.
    """
    from edgeconv.core.tensors import random_feeds
    from edgeconv.export.reference import graph_specs
    from edgeconv.targets.ncnn.layermap import layer_map

    del threads
    conv = artifact.manifest["conversion"]
    if conv.get("node_layers"):
        return dict(conv["node_layers"])
    ref_path = Path(artifact.path) / "reference.onnx"
    param, bin_ = artifact.file("model"), artifact.file("weights")
    inputs, _ = graph_specs(ref_path)
    probes = [feed, random_feeds(inputs, seed=321, low=-3.0, high=3.0)]
    runtime = {k: v for k, v in dict(conv.get("runtime", {})).items() if k != "int8"}
    work = Path(tempfile.mkdtemp(prefix="edgeconv-diag-ncnn-"))
    try:
        quantized = bool(conv.get("runtime", {}).get("int8"))
        if quantized:
            param, bin_ = float_twin(param, bin_, work)
        return layer_map(ref_path, param, bin_, dict(conv["blobs"]["inputs"]), probes, {**runtime, "int8": False},
                         min_cosine=FLOAT_TWIN_MIN_COS if quantized else None)
    finally:
        shutil.rmtree(work, ignore_errors=True)
