"""``diagnose``: where, layer by layer, an artifact departs from the reference (or from another artifact).

Side A is the reference ONNX (or the first artifact when two are given), side B the artifact. Both are captured with
their intermediates exposed where the backend allows (see ``capture.py`` and ``native.py``), their tensors are
matched to reference tensor names, and ``drift.layer_drift`` finds the first layers where the drift jumps, named by
ONNX node and PyTorch module (``modules.py``). The fused end-to-end drift of each artifact, measured on the untouched
artifact through its own runner, is reported beside it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgeconv.core.artifact import Artifact
from edgeconv.core.compare import compare_outputs
from edgeconv.core.console import status
from edgeconv.core.errors import ConfigError
from edgeconv.core.tensors import TensorSpec
from edgeconv.diagnose.capture import Capture, capture_onnx, capture_openvino, capture_reference
from edgeconv.diagnose.drift import Graph, LayerDrift, culprits, first_jumps, layer_drift
from edgeconv.diagnose.modules import ModuleName, module_map

BACKENDS = ("onnxruntime", "tensorrt", "openvino", "ncnn", "tflite")


@dataclass
class Side:
    """One thing being compared: the reference ONNX, an ONNX file, or an artifact folder."""

    label: str
    backend: str
    reference: Path
    artifact: Artifact | None = None
    onnx: Path | None = None


@dataclass
class Diagnosis:
    a: str
    b: str
    samples: int
    rows: list[LayerDrift]
    fused: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    matched: dict[str, int] = field(default_factory=dict)

    def jumps(self, k: int = 5) -> list[LayerDrift]:
        return first_jumps(self.rows, k)

    def culprits(self, k: int = 5) -> list[LayerDrift]:
        return culprits(self.rows, k)

    def to_json(self, all_rows: bool = True) -> dict[str, Any]:
        return {"schema": "edgeconv.diagnose/1", "a": self.a, "b": self.b, "samples": self.samples,
                "matched": self.matched, "fused": self.fused, "notes": self.notes,
                "first_jumps": [r.to_dict() for r in self.jumps()],
                "culprits": [r.to_dict() for r in self.culprits()],
                "layers": [r.to_dict() for r in self.rows] if all_rows else None}


def open_side(path: str | Path) -> Side:
    p = Path(path)
    if p.is_file() and p.suffix == ".onnx":
        return Side(p.name, "onnx", p, onnx=p)
    art = Artifact.load(p)
    ref = p / (art.manifest.get("reference") or {}).get("file", "reference.onnx")
    if not ref.is_file():
        raise ConfigError(f"{p} has no reference ONNX beside its files", hint="re-convert with this edgeconv")
    if art.target not in BACKENDS:
        raise ConfigError(f"diagnose cannot expose the intermediates of {art.target} artifacts",
                          hint=f"supported: {', '.join(BACKENDS)}")
    return Side(f"{art.manifest.get('profile_name', art.target)}-{art.precision}", art.target, ref, art)


def capture(side: Side, feeds: list[dict[str, np.ndarray]], ref_capture: Capture, graph: Graph,
            threads: int | None = None) -> Capture:
    """The side's intermediates, keyed by reference tensor names."""
    names = set(graph.order)
    art = side.artifact
    with status(f"capturing intermediates of {side.label}"):
        if side.onnx is not None:
            return capture_onnx(side.onnx, feeds, names, label=side.label, backend="onnx", threads=threads)
        assert art is not None
        if side.backend == "onnxruntime":
            return capture_onnx(art.file("model"), feeds, names, label=side.label, backend=side.backend,
                                threads=threads)
        if side.backend == "tensorrt":
            role = "proxy" if "proxy" in art.manifest.get("roles", {}) else "model"
            cap = capture_onnx(art.file(role), feeds, names, label=side.label, backend=side.backend,
                               threads=threads)
            cap.notes.append("TensorRT artifact diagnosed on its Q/DQ ONNX (ONNX Runtime, unfused): the proxy")
            return cap
        if side.backend == "openvino":
            outs = [o["name"] for o in art.manifest.get("outputs", [])]
            return capture_openvino(art.file("model"), feeds, names, outs, label=side.label, threads=threads)
        if side.backend == "ncnn":
            from edgeconv.diagnose.native import capture_ncnn

            return capture_ncnn(art, feeds, ref_capture.values, graph.order, label=side.label, threads=threads)
        if side.backend == "tflite":
            from edgeconv.diagnose.native import capture_tflite

            return capture_tflite(art, feeds, ref_capture.values, graph.order, label=side.label, threads=threads)
    raise ConfigError(f"diagnose: no capture for backend {side.backend}")


def fused_drift(side: Side, feeds: list[dict[str, np.ndarray]], refs: list[dict[str, np.ndarray]],
                cap: Capture, threads: int | None = None) -> dict[str, Any] | None:
    """End-to-end drift of the untouched artifact (its own runner: fusions and integer kernels included)."""
    gots = cap.fused
    if gots is None and side.artifact is not None:
        from edgeconv.targets.registry import get_target

        target = get_target(side.backend)
        with target.runner(side.artifact, threads=threads) as r:
            gots = [r.infer(f) for f in feeds]
    elif gots is None and side.onnx is not None:
        from edgeconv.targets.base import OrtRunner

        with OrtRunner(side.onnx, threads=threads) as r:
            gots = [r.infer(f) for f in feeds]
    if gots is None:
        return None
    per_sample = [compare_outputs([r], [g])["cosine"] for r, g in zip(refs, gots, strict=True)]
    d = compare_outputs(refs, gots)
    return {"cosine_worst": float(min(per_sample)), "cosine_p10": float(np.percentile(per_sample, 10)),
            "max_abs": d.get("max_abs"), "snr_db": d.get("snr_db"), "tap_effect": cap.tap_effect,
            "per_output": {k: {m: v.get(m) for m in ("cosine", "max_abs", "snr_db")}
                           for k, v in d.get("per_output", {}).items()}}


def diagnose_feeds(side: Side, data: str | None, samples: int) -> list[dict[str, np.ndarray]]:
    """Inputs to diagnose on: ``data`` (a folder, tensors, or ``zoo``), through the artifact's preprocessing."""
    from edgeconv.bench.evaluate import load_eval_data
    from edgeconv.calibration.preprocess import Preprocess

    m = side.artifact.manifest if side.artifact else {}
    if m.get("inputs"):
        spec = TensorSpec.from_dict(m["inputs"][0])
    else:
        from edgeconv.export.reference import graph_specs

        spec = graph_specs(side.reference)[0][0]
    task = (m.get("task") or {}).get("task")
    if data is None:
        if not (m.get("task") or {}).get("bundled"):
            raise ConfigError("diagnose needs inputs like the real ones", hint="pass --data DIR (images or tensors)")
        data = "zoo"
    if data == "zoo" and task:
        data = f"zoo:{task}"
    pp = Preprocess.from_dict(m["preprocess"]) if m.get("preprocess") else None
    ev = load_eval_data(data, input_spec=spec, preprocess=pp, task=task, limit=samples, labels=False)
    batch = spec.static_shape[0] if spec.static_shape and spec.static_shape[0] else 1
    out: list[dict[str, np.ndarray]] = []
    for f in ev.feeds:  # a batched .npy is one feed of N rows: split it into the model's batch
        x = f[spec.name]
        for i in range(0, max(1, x.shape[0]) if x.ndim else 1, batch):
            out.append({spec.name: np.ascontiguousarray(x[i:i + batch] if x.ndim else x)})
    return out[:samples]


def _modules_for(side: Side, reexport: bool, module: Any = None) -> dict[str, ModuleName]:
    m = side.artifact.manifest if side.artifact else {}
    shapes = [tuple(s["shape"]) for s in m.get("inputs", [])] or None
    if shapes is None:
        from edgeconv.export.reference import graph_specs

        shapes = [tuple(s.static_shape) for s in graph_specs(side.reference)[0]]
    bundled = (m.get("task") or {}).get("bundled")
    if reexport and module is None and bundled:
        from edgeconv import zoo

        module = zoo.load(bundled)
    key = (m.get("reference") or {}).get("sha256")
    return module_map(side.reference, module=module, input_shapes=shapes, key=key, reexport=reexport)


def diagnose(artifact: str | Path, other: str | Path | None = None, *, data: str | None = None, samples: int = 8,
             feeds: list[dict[str, np.ndarray]] | None = None, threads: int | None = None,
             reexport: bool = True, min_added: float | None = None, module: Any = None) -> Diagnosis:
    """Compare ``artifact`` with its reference (or ``other`` with ``artifact``) layer by layer.

    Two artifacts are compared tensor by tensor through their shared reference names (they must come from the
    same reference ONNX); ``feeds`` overrides ``data``. ``module``: the torch module the reference was exported
    from, to recover module names of nodes without weights (bundled models are found by name).
    """
    first = open_side(artifact)
    second = open_side(other) if other is not None else None
    if second is not None and second.reference.read_bytes() != first.reference.read_bytes():
        raise ConfigError("the two artifacts were converted from different reference ONNX graphs",
                          hint="diagnose two conversions of the same model")
    if second is not None and second.label == first.label:
        first.label, second.label = f"{first.label} ({Path(artifact).name})", f"{second.label} ({Path(other).name})"
    ref_path = first.reference
    feeds = feeds if feeds is not None else diagnose_feeds(first, data, samples)
    if not feeds:
        raise ConfigError("diagnose: no input could be read", hint="check --data")
    graph = Graph.load(ref_path)
    with status("capturing reference intermediates (unfused)"):
        ref_cap = capture_reference(ref_path, feeds)
    refs = [{o: v[o] for o in graph.outputs} for v in ref_cap.values]
    if second is None:
        a_cap, b_side, b_cap = ref_cap, first, capture(first, feeds, ref_cap, graph, threads)
        label_a = "reference"
    else:
        a_cap = capture(first, feeds, ref_cap, graph, threads)
        b_side, b_cap = second, capture(second, feeds, ref_cap, graph, threads)
        label_a = first.label
    modules = _modules_for(first, reexport, module)
    kw = {"min_added": min_added} if min_added is not None else {}
    rows = layer_drift(graph, a_cap, b_cap, modules, **kw)
    sides = [(first, b_cap)] if second is None else [(first, a_cap), (second, b_cap)]
    fused = {side.label: fused_drift(side, feeds, refs, cap, threads) for side, cap in sides}
    notes = list(dict.fromkeys(a_cap.notes + b_cap.notes))
    matched = {"reference_tensors": len(graph.order), "compared": len(rows)}
    return Diagnosis(label_a, b_side.label, len(feeds), rows, fused, notes, matched)
