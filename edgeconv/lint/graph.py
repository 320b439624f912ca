"""A light view of an ONNX graph for the lint rules: producers, consumers, constants, op types, reduction axes."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgeconv.core.lazy import require

WEIGHTED = ("Conv", "ConvTranspose", "Gemm", "MatMul")
#: Ops that move or reshape values without computing new ones: a tensor seen through them is the same tensor.
PASSTHROUGH = ("Reshape", "Transpose", "Flatten", "Squeeze", "Unsqueeze", "Identity", "Cast", "Concat", "Split",
               "Slice", "Gather", "Expand")


@dataclass
class Node:
    name: str
    op: str
    inputs: list[str]
    outputs: list[str]
    attrs: dict[str, Any]


class LintGraph:
    """Nodes in graph order with their producers/consumers; constants (initializers, Constant nodes) as arrays."""

    def __init__(self, model: Any) -> None:
        onnx = require("onnx", "onnx")
        from onnx import numpy_helper

        self.model = model
        self.consts: dict[str, np.ndarray] = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
        self.nodes: list[Node] = []
        for n in model.graph.node:
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute}
            if n.op_type == "Constant" and "value" in attrs:
                self.consts[n.output[0]] = numpy_helper.to_array(attrs["value"])
                continue
            self.nodes.append(Node(n.name, n.op_type, list(n.input), list(n.output), attrs))
        self.producer = {o: n for n in self.nodes for o in n.outputs}
        self.consumers: dict[str, list[Node]] = {}
        for n in self.nodes:
            for i in n.inputs:
                self.consumers.setdefault(i, []).append(n)
        self.inputs = [i.name for i in model.graph.input if i.name not in self.consts]
        self.outputs = [o.name for o in model.graph.output]
        self.ranks = self._ranks()

    @classmethod
    def load(cls, path: str | Path) -> LintGraph:
        onnx = require("onnx", "onnx")
        return cls(onnx.load(str(path)))

    def _ranks(self) -> dict[str, int]:
        """Tensor ranks from the graph's own shape information (shape inference where it is missing)."""
        onnx = require("onnx", "onnx")
        try:
            inferred = onnx.shape_inference.infer_shapes(self.model)
        except Exception:  # noqa: BLE001 - ranks are an aid to the reduction rule only
            inferred = self.model
        out = {}
        for vi in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output):
            t = vi.type.tensor_type
            if t.HasField("shape"):
                out[vi.name] = len(t.shape.dim)
        return out

    def activation_inputs(self, n: Node) -> list[str]:
        return [i for i in n.inputs if i and i not in self.consts]

    def const_inputs(self, n: Node) -> list[np.ndarray]:
        return [self.consts[i] for i in n.inputs if i in self.consts]

    def downstream_to_output(self, tensor: str, limit: int = 12) -> bool:
        """Whether ``tensor`` reaches a graph output through pass-through ops only."""
        seen, stack = set(), [(tensor, 0)]
        while stack:
            t, d = stack.pop()
            if t in self.outputs:
                return True
            if d > limit or t in seen:
                continue
            seen.add(t)
            for c in self.consumers.get(t, []):
                if c.op in PASSTHROUGH:
                    stack.extend((o, d + 1) for o in c.outputs)
        return False

    def reduction_axes(self, n: Node) -> list[int] | None:
        """The axes a Reduce* node reduces (None = all axes), normalised to non-negative indices."""
        axes = n.attrs.get("axes")
        if axes is None and len(n.inputs) > 1 and n.inputs[1] in self.consts:
            axes = [int(a) for a in np.asarray(self.consts[n.inputs[1]]).ravel()]
        if axes is None or len(axes) == 0:
            return None if not n.attrs.get("noop_with_empty_axes", 0) else []
        rank = self.ranks.get(n.inputs[0])
        return sorted(int(a) % rank if rank else int(a) for a in axes)

    def upstream_has_weighted(self, tensor: str, limit: int = 64) -> bool:
        seen, stack = set(), [tensor]
        while stack and len(seen) < limit * 8:
            t = stack.pop()
            p = self.producer.get(t)
            if p is None or p.name in seen:
                continue
            seen.add(p.name)
            if p.op in WEIGHTED:
                return True
            stack.extend(self.activation_inputs(p))
        return False
