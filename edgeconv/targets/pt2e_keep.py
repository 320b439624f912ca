"""``--keep-fp32`` on the PT2E routes (TFLite, ExecuTorch): the reference ONNX nodes the one matcher resolved → nodes
of the traced graph, which TFLite leaves unannotated and ExecuTorch's XNNPACK quantizer filters out (its
``set_module_name(name, None)`` asserts "not supported yet"). Shared by both torch-route targets, which may not
import each other.

A PT2E route quantizes the graph ``torch.export`` traces from the module, not the reference ONNX, so the matched
ONNX nodes are found again there: by name first (the dynamo exporter names a node ``node_<fx name>`` when it maps
one traced op to one ONNX op), else by value — each ONNX node's output on one sample input against every traced
node's output of the same shape, the closest within 1e-3 relative. A Conv that the simplifier fused with its
BatchNorm matches the traced BatchNorm; PT2E folds that BatchNorm into its conv before annotating, so the conv is
kept. Every ``--keep-fp32`` pattern must keep at least one traced node (else a ConfigError: a silently ignored
pattern quantizes exactly what the user meant to protect); single nodes without a counterpart (pieces of an op
the exporter decomposed) are reported in the manifest.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgeconv.core import keep as keep_matcher
from edgeconv.core.errors import ConfigError
from edgeconv.core.isolate import child_threads
from edgeconv.core.lazy import require

REL_TOL = 1e-3
_BN = ("_native_batch_norm_legit_no_training", "batch_norm", "native_batch_norm")


def onnx_values(onnx_path: Path, names: list[str], feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The first output of each named ONNX node on ``feeds`` (the graph re-run with those tensors as outputs)."""
    onnx = require("onnx", "onnx")
    ort = require("onnxruntime", "onnxruntime")
    model = onnx.load(str(onnx_path))
    by_name = {n.name: n for n in model.graph.node}
    graph_outs = {o.name for o in model.graph.output}
    tensors = {}
    for n in names:
        if n in by_name and by_name[n].output:
            tensors[n] = by_name[n].output[0]
            if tensors[n] not in graph_outs:
                model.graph.output.append(onnx.ValueInfoProto(name=tensors[n]))
                graph_outs.add(tensors[n])
    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.intra_op_num_threads = child_threads(None) or 0  # ORT's pools are not fork-safe: 1 in a forked child
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    wanted = sorted(set(tensors.values()))
    outs = dict(zip(wanted, sess.run(wanted, feeds), strict=True))
    return {n: np.asarray(outs[t]) for n, t in tensors.items()}


def traced_values(gm: Any, args: tuple[Any, ...]) -> dict[str, np.ndarray]:
    """Every tensor-valued node output of an exported graph module on ``args`` (float32 numpy)."""
    import torch

    values: dict[str, np.ndarray] = {}

    class Capture(torch.fx.Interpreter):
        def run_node(self, n: Any) -> Any:
            out = super().run_node(n)
            if isinstance(out, torch.Tensor) and out.is_floating_point() and n.op == "call_function":
                values[n.name] = out.detach().float().numpy().copy()
            return out

    with torch.no_grad():
        Capture(gm).run(*args)
    return values


def _conv_of(node: Any) -> Any:
    """A traced BatchNorm's input conv (what PT2E fuses it into), else the node itself."""
    target = str(getattr(node.target, "_name", node.target))
    if any(b in target for b in _BN) and node.args and "conv" in str(getattr(node.args[0].target, "_name", "")):
        return node.args[0]
    return node


def map_keep_nodes(onnx_path: Path, patterns: tuple[str, ...], gm: Any, args: tuple[Any, ...],
                   onnx_feeds: dict[str, np.ndarray], route: str = "TFLite") -> tuple[set[str], dict[str, Any]]:
    """(traced node names to keep in float, a record per pattern). ``args`` are the traced module's inputs and
    ``onnx_feeds`` the same values in the reference's layout."""
    nodes = keep_matcher.graph_nodes(onnx_path)
    per_pattern = keep_matcher.match(nodes, patterns)
    wanted = sorted({n for hits in per_pattern.values() for n in hits})
    ref_vals = onnx_values(onnx_path, wanted, onnx_feeds)
    fx_vals = traced_values(gm, args)
    fx_nodes = {n.name: n for n in gm.graph.nodes}
    mapping: dict[str, str | None] = {}
    for name in wanted:
        r = ref_vals.get(name)
        if r is None:
            mapping[name] = None
            continue
        scale = float(np.abs(r).max()) + 1e-6

        def err(fx: str, r: np.ndarray = r, scale: float = scale) -> float:
            v = fx_vals[fx]
            return float(np.abs(v - r).max()) / scale if v.shape == r.shape else np.inf

        direct = name.removeprefix("node_")
        if direct in fx_vals and err(direct) <= REL_TOL:
            best = direct
        else:
            scored = [(err(fx), fx) for fx in fx_vals]
            score, best = min(scored, default=(np.inf, ""))
            best = best if score <= REL_TOL else ""
        mapping[name] = _conv_of(fx_nodes[best]).name if best else None
    record: dict[str, Any] = {"patterns": {}, "unmapped": sorted(n for n, v in mapping.items() if v is None)}
    kept: set[str] = set()
    for p, hits in per_pattern.items():
        fx = sorted({mapping[h] for h in hits if mapping.get(h)})
        if not fx:
            raise ConfigError(f"--keep-fp32 '{p}' matches reference node(s) {', '.join(hits[:4])} that have no "
                              f"counterpart in the PyTorch graph the {route} route quantizes",
                              hint="name the layer by another node (see `edgeconv inspect`) or use op:TYPE")
        record["patterns"][p] = {"onnx": hits, "traced": fx}
        kept.update(fx)
    return kept, record
