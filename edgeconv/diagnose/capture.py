"""Intermediate tensors of the reference and of ONNX / OpenVINO artifacts, keyed by reference tensor names.

Every capture returns, per input sample, ``{reference tensor name: array in the reference's shape}``.

How the measurement avoids changing what it measures:

- ONNX graphs (the reference, ORT's QDQ INT8, TensorRT's Q/DQ proxy) are tapped on a *copy* with every float node
  output added as a graph output, run with ``ORT_DISABLE_ALL`` **on both sides**: with graph optimizations off no
  node is fused away or folded, so adding outputs cannot change which kernels run, and every QuantizeLinear /
  DequantizeLinear executes as written (exact fake-quant). The fused end-to-end drift — the artifact through its own
  runner, fusions and integer kernels included — is measured separately on the untouched artifact
  (``Capture.fused``), so the per-layer table never stands in for the deployed numbers.
- A quantized tensor is read *after* its Q→DQ pair (OpenVINO: after its FakeQuantize), i.e. the value its consumers
  see: a wrong scale then shows up at the tensor it was set for, named by the node that produced that tensor.
- OpenVINO cannot disable its plugin's transformations; there extra Results are added to the ov.Model by tensor
  name, and ``Capture.tap_effect`` reports how far the tapped run's final outputs moved from the untapped compiled
  model's (0 means the extra outputs did not change the computation).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgeconv.core.errors import ConfigError
from edgeconv.core.lazy import require

FLOAT_TYPES = (1, 10, 11, 16)  # FLOAT, FLOAT16, DOUBLE, BFLOAT16


@dataclass
class Capture:
    """What one side of a comparison produced on the samples."""

    label: str
    backend: str
    values: list[dict[str, np.ndarray]]  # per sample: reference tensor name -> value
    fused: list[dict[str, np.ndarray]] | None = None  # untapped end-to-end outputs (reference output names)
    tap_effect: float | None = None  # max |tapped final output - untapped final output|
    matched_by: str = "name"
    match_quality: dict[str, float] = field(default_factory=dict)  # value matching: reference tensor -> cosine
    sources: dict[str, str] = field(default_factory=dict)  # value matching: reference tensor -> backend tensor
    notes: list[str] = field(default_factory=list)


def _ort_session(model_bytes: bytes, threads: int | None = None) -> Any:
    ort = require("onnxruntime", "onnxruntime")
    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    if threads:
        so.intra_op_num_threads = threads
    return ort.InferenceSession(model_bytes, so, providers=["CPUExecutionProvider"])


def tapped_onnx(onnx_path: str | Path) -> tuple[bytes, list[str], Any]:
    """A copy of the graph with every float node output as a graph output; (bytes, tapped names, original model)."""
    onnx = require("onnx", "onnx")
    model = onnx.load(str(onnx_path))
    inferred = onnx.shape_inference.infer_shapes(model)
    infos = {vi.name: vi for vi in inferred.graph.value_info}
    have = {o.name for o in model.graph.output}
    names: list[str] = []
    for n in model.graph.node:
        for o in n.output:
            vi = infos.get(o)
            if o and o not in have and vi is not None and vi.type.tensor_type.elem_type in FLOAT_TYPES:
                model.graph.output.append(vi)
                names.append(o)
                have.add(o)
    return model.SerializeToString(), names, model


def qdq_view(model: Any) -> dict[str, str]:
    """tensor -> the DequantizeLinear output its consumers read, for every tensor behind a Q→DQ pair."""
    q_out = {n.output[0]: n.input[0] for n in model.graph.node if n.op_type == "QuantizeLinear"}
    out: dict[str, str] = {}
    for n in model.graph.node:
        if n.op_type == "DequantizeLinear" and n.input[0] in q_out:
            out.setdefault(q_out[n.input[0]], n.output[0])
    return out


class TappedSession:
    """An unfused ORT session over a copy of the graph with every float tensor exposed; ``run`` one feed at a time
    (a caller streaming many inputs never holds more than one sample's intermediates)."""

    def __init__(self, onnx_path: str | Path, threads: int | None = None) -> None:
        data, _, self.model = tapped_onnx(onnx_path)
        self.session = _ort_session(data, threads)
        self.out_names = [o.name for o in self.session.get_outputs()]
        self.in_names = [i.name for i in self.session.get_inputs()]

    def run(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        vals = self.session.run(self.out_names, {n: np.ascontiguousarray(feed[n]) for n in self.in_names})
        d = {n: np.asarray(v) for n, v in zip(self.out_names, vals, strict=True)}
        d.update({n: np.asarray(feed[n]) for n in self.in_names})
        return d


def _run_onnx(onnx_path: str | Path, feeds: list[dict[str, np.ndarray]], threads: int | None = None
              ) -> tuple[list[dict[str, np.ndarray]], Any]:
    s = TappedSession(onnx_path, threads)
    return [s.run(f) for f in feeds], s.model


def capture_reference(onnx_path: str | Path, feeds: list[dict[str, np.ndarray]], label: str = "reference",
                      threads: int | None = None) -> Capture:
    """Every float tensor of the reference (inputs included), unfused."""
    vals, _ = _run_onnx(onnx_path, feeds, threads)
    return Capture(label, "onnx-reference", [{k: v.astype(np.float32, copy=False) for k, v in d.items()}
                                             for d in vals])


def capture_onnx(onnx_path: str | Path, feeds: list[dict[str, np.ndarray]], reference_names: set[str], *,
                 label: str, backend: str, threads: int | None = None) -> Capture:
    """A (Q/DQ) ONNX artifact tapped unfused; tensors named as in the reference, read after their Q→DQ pair."""
    vals, model = _run_onnx(onnx_path, feeds, threads)
    view = qdq_view(model)
    out = []
    for d in vals:
        row = {}
        for name in reference_names:
            src = view.get(name, name)
            if src in d:
                row[name] = d[src].astype(np.float32, copy=False)
        out.append(row)
    notes = [f"{len(view)} tensors read after their Q/DQ pair"] if view else []
    return Capture(label, backend, out, notes=notes)


# -- OpenVINO ---------------------------------------------------------------------------------------------------------


def capture_openvino(xml: str | Path, feeds: list[dict[str, np.ndarray]], reference_names: set[str],
                     output_names: list[str], *, label: str, threads: int | None = None) -> Capture:
    """Extra Results on the ov.Model for every reference tensor found by name (after its FakeQuantize, if any)."""
    ov = require("openvino", "openvino")
    core = ov.Core()
    model = core.read_model(str(xml))
    cfg: dict[str, Any] = {"INFERENCE_PRECISION_HINT": "f32"}
    if threads:
        cfg["INFERENCE_NUM_THREADS"] = int(threads)
    plain = core.compile_model(model, "CPU", cfg)
    if any(p.get_element_type() != ov.Type.f32 for p in plain.inputs):
        raise ConfigError("diagnose: this OpenVINO IR takes non-float inputs (embedded preprocessing)",
                          hint="diagnose an IR converted without embed_preprocess")
    ports: dict[str, Any] = {}
    for op in model.get_ordered_ops():
        if op.get_type_name() in ("Constant", "Result"):
            continue
        for out in op.outputs():
            names = out.get_names() & reference_names
            if not names or not out.get_element_type().is_real():
                continue
            port = out
            fq = [t.get_node() for t in out.get_target_inputs() if t.get_node().get_type_name() == "FakeQuantize"]
            if fq:
                port = fq[0].output(0)
            for n in names:
                ports.setdefault(n, port)
    taps = sorted(ports)

    def key(port: Any) -> tuple[str, int]:
        return port.get_node().get_friendly_name(), port.get_index()

    unique = list({key(ports[n]): ports[n] for n in taps}.values())
    model.add_outputs(unique)
    index = {key(r.input_value(0)): i for i, r in enumerate(model.get_results())}
    compiled = core.compile_model(model, "CPU", cfg)
    n_orig = len(plain.outputs)
    req, preq = compiled.create_infer_request(), plain.create_infer_request()
    in_names = [p.get_any_name() for p in plain.inputs]
    values, fused, effect = [], [], 0.0
    for f in feeds:
        inputs = {n: np.ascontiguousarray(f[n]) for n in in_names}
        req.infer(inputs)
        preq.infer(inputs)
        row = {n: np.array(req.get_output_tensor(index[key(ports[n])]).data, dtype=np.float32, copy=True)
               for n in taps if key(ports[n]) in index}
        row.update({n: np.asarray(f[n], np.float32) for n in in_names if n in reference_names})
        values.append(row)
        outs = {}
        for i, name in enumerate(output_names[:n_orig]):
            a = np.array(preq.get_output_tensor(i).data, copy=True)
            b = np.array(req.get_output_tensor(i).data, copy=True)
            outs[name] = a
            effect = max(effect, float(np.max(np.abs(a.astype(np.float64) - b))) if a.size else 0.0)
        fused.append(outs)
    return Capture(label, "openvino", values, fused=fused, tap_effect=effect,
                   notes=[f"{sum(1 for n in taps if ports[n].get_node().get_type_name() == 'FakeQuantize')} "
                          "tensors read after their FakeQuantize"])
