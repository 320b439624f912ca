"""The ONNX Runtime Q/DQ proxy used to measure layer sensitivity: one fully quantized graph, and variants of the
reference in which exactly one node reads quantized inputs.

The full graph comes from ``quantize_static`` on the shared statistics (the same ranges every backend calibrates
with), with nothing excluded, so every node ORT can quantize has its Q/DQ chains. A variant for node ``n`` is the
*reference* graph with only ``n``'s input chains copied in from the full graph (activation Q→DQ pairs, quantized
weights and biases with their DQ): "quantize this layer only". Building a variant is graph surgery on protobufs —
milliseconds — instead of one ``quantize_static`` call per layer.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

from edgeconv.core.errors import ConversionError
from edgeconv.core.lazy import require


def full_qdq(reference_onnx: str | Path, stats: Any, out: str | Path, *, per_channel: bool = True,
             reduce_range: bool = True, activation_type: str = "uint8") -> Path:
    """``reference_onnx`` quantized everywhere ORT can (QDQ, ranges from ``stats.ort_cache_path``)."""
    require("onnxruntime", "onnxruntime")
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    cache = getattr(stats, "ort_cache_path", None)
    if cache is None or not Path(cache).is_file():
        raise ConversionError("sensitivity ranking needs the shared statistics' ORT calibration cache",
                              hint="pass ctx.statistics() (edgeconv.calibration.stats.compute_stats)")
    method = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
              "percentile": CalibrationMethod.Percentile}[getattr(stats, "method", "minmax")]
    work = Path(tempfile.mkdtemp(prefix="edgeconv-sens-"))
    try:
        c = work / "calibration.json"
        shutil.copyfile(cache, c)
        act = QuantType.QUInt8 if activation_type == "uint8" else QuantType.QInt8
        quantize_static(str(reference_onnx), str(out), None, quant_format=QuantFormat.QDQ, per_channel=per_channel,
                        reduce_range=reduce_range, activation_type=act, weight_type=QuantType.QInt8,
                        calibrate_method=method, calibration_cache_path=str(c),
                        extra_options={"WeightSymmetric": True})
    except Exception as e:
        raise ConversionError(f"quantize_static (sensitivity proxy) failed: {type(e).__name__}: {e}") from e
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return Path(out)


class Variants:
    """Builds "only this node quantized" variants of a reference from its fully quantized Q/DQ twin."""

    def __init__(self, reference_onnx: str | Path, qdq_onnx: str | Path) -> None:
        onnx = require("onnx", "onnx")
        self.onnx = onnx
        self.reference = onnx.load(str(reference_onnx))
        self.qdq = onnx.load(str(qdq_onnx))
        self.producer = {o: n for n in self.qdq.graph.node for o in n.output}
        self.inits = {i.name: i for i in self.qdq.graph.initializer}
        self.qnodes = {n.name: n for n in self.qdq.graph.node if n.op_type not in ("QuantizeLinear",
                                                                                  "DequantizeLinear")}

    def quantized_nodes(self) -> list[str]:
        """Reference nodes that read at least one dequantized input in the full Q/DQ graph."""
        ref_names = {n.name for n in self.reference.graph.node}
        out = []
        for name, n in self.qnodes.items():
            if name in ref_names and any(self._chain(i) for i in n.input if i):
                out.append(name)
        order = {n.name: i for i, n in enumerate(self.reference.graph.node)}
        return sorted(out, key=lambda x: order[x])

    def _chain(self, tensor: str) -> list[Any]:
        """The DQ (and its Q) producing ``tensor`` in the Q/DQ graph, [] when it is not dequantized."""
        dq = self.producer.get(tensor)
        if dq is None or dq.op_type != "DequantizeLinear":
            return []
        q = self.producer.get(dq.input[0])
        return [q, dq] if q is not None and q.op_type == "QuantizeLinear" else [dq]

    def only(self, nodes: list[str] | tuple[str, ...]) -> bytes:
        """The reference with only ``nodes`` reading quantized inputs (their chains from the Q/DQ graph)."""
        model = self.onnx.ModelProto()
        model.CopyFrom(self.reference)
        have_inits = {i.name for i in model.graph.initializer}
        new_nodes: dict[str, Any] = {}
        rewire: dict[str, dict[int, str]] = {}
        outputs_to: dict[str, str] = {}  # a quantized node's float output -> the DQ its consumers now read
        ref_tensors = {o for n in model.graph.node for o in n.output}
        for name in nodes:
            qn = self.qnodes.get(name)
            if qn is None:
                continue
            for idx, t in enumerate(qn.input):
                chain = self._chain(t) if t else []
                if not chain:
                    continue
                for c in chain:
                    new_nodes.setdefault(c.name or c.output[0], self._copy(c))
                    for i in c.input:
                        if i in self.inits and i not in have_inits:
                            model.graph.initializer.append(self.inits[i])
                            have_inits.add(i)
                rewire.setdefault(name, {})[idx] = t
            ref_node = next((n for n in model.graph.node if n.name == name), None)
            for k, qo in enumerate(qn.output):
                chain = self._output_chain(qo)
                if ref_node is None or not chain or k >= len(ref_node.output):
                    continue
                ro, dq_out = ref_node.output[k], chain[-1].output[0]
                for c in chain:
                    new_nodes.setdefault(c.name or c.output[0], self._copy(c))
                    for i in c.input[1:]:
                        if i in self.inits and i not in have_inits:
                            model.graph.initializer.append(self.inits[i])
                            have_inits.add(i)
                if qo != ro and qo not in ref_tensors:  # ORT renamed the output; its DQ produces the reference name
                    ref_node.output[k] = qo
                else:  # qo == ro, or a fused activation's output (Conv+Relu): quantize that tensor
                    outputs_to[qo] = dq_out
        produced = {o for c in new_nodes.values() for o in c.output}
        if produced & have_inits:  # ORT's bias DQ outputs the float bias's own name: the DQ replaces it
            keep = [i for i in model.graph.initializer if i.name not in produced]
            del model.graph.initializer[:]
            model.graph.initializer.extend(keep)
        pos = {n.name: i for i, n in enumerate(model.graph.node)}
        inserted: list[tuple[int, Any]] = []
        for c in new_nodes.values():
            src = c.input[0]
            at = next((pos[n.name] + 1 for n in model.graph.node if src in n.output), 0)
            inserted.append((at, c))
        chain_names = {c.name for c in new_nodes.values()}
        for n in model.graph.node:
            for idx, t in rewire.get(n.name, {}).items():
                n.input[idx] = t
            if n.name not in chain_names:
                for idx, t in enumerate(n.input):
                    if t in outputs_to and idx not in rewire.get(n.name, {}):
                        n.input[idx] = outputs_to[t]
        for o in model.graph.output:
            if o.name in outputs_to:  # a graph output keeps its name: quantize it in place
                src = o.name
                q = next(c for c in new_nodes.values() if c.op_type == "QuantizeLinear" and c.input[0] == src)
                dq = next(c for c in new_nodes.values()
                          if c.op_type == "DequantizeLinear" and c.input[0] == q.output[0])
                prod = next(n for n in model.graph.node if src in n.output)
                prod.output[list(prod.output).index(src)] = src + "_float"
                q.input[0] = src + "_float"
                dq.output[0] = src
                for n in model.graph.node:
                    for idx, t in enumerate(n.input):
                        if t == outputs_to[src]:
                            n.input[idx] = src
        nodes_out = list(model.graph.node)
        # keep topological order: each chain right after the producer of its float source (Q before DQ)
        for at, c in sorted(inserted, key=lambda x: (-x[0], 0 if x[1].op_type == "DequantizeLinear" else 1)):
            nodes_out.insert(at, c)
        del model.graph.node[:]
        model.graph.node.extend(nodes_out)
        self._opset(model)
        return model.SerializeToString()

    def _copy(self, node: Any) -> Any:
        c = self.onnx.NodeProto()
        c.CopyFrom(node)
        return c

    def _output_chain(self, tensor: str) -> list[Any]:
        """The Q→DQ pair quantizing a node's output ``tensor`` in the Q/DQ graph, [] when there is none."""
        q = next((n for n in self.qdq.graph.node if n.op_type == "QuantizeLinear" and n.input[0] == tensor), None)
        if q is None:
            return []
        dq = next((n for n in self.qdq.graph.node if n.op_type == "DequantizeLinear" and n.input[0] == q.output[0]),
                  None)
        return [q, dq] if dq is not None else []

    def _opset(self, model: Any) -> None:
        """Q/DQ with per-channel axes need the Q/DQ graph's opset (ORT raises the reference's to 13+)."""
        want = {o.domain: o.version for o in self.qdq.opset_import}
        for o in model.opset_import:
            if o.domain in want and want[o.domain] > o.version:
                o.version = want[o.domain]
