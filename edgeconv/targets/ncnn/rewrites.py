"""ONNX graph rewrites applied before pnnx, for patterns ncnn cannot run.

ncnn's Crop layer has no step, and pnnx leaves step-2 ``Slice`` as an unconvertible ``Tensor.slice`` (it even exits
0).  Two exact rewrites:

* **Focus** (YOLOv5 stem: four ``x[..., a::2, b::2]`` slices of one tensor, concatenated on channels, feeding a
  convolution) becomes ``Reshape → Transpose → Reshape`` = ``pixel_unshuffle(x, 2)``, which pnnx fuses into ncnn's
  ``Reorg`` layer, and the channel order is folded into the next convolution's weights (a permutation: exact).
  Not ONNX ``SpaceToDepth``: pnnx maps it to ``Reorg`` mode 0, which is pixel_unshuffle order, not ONNX's DCR
  order — silently wrong outputs (measured).
* **Any other positive step on the H/W axes of a 4-D tensor** (ResNet "option A" shortcuts ``x[:, :, ::2, ::2]``,
  Focus without a convolution after it) becomes a step-1 ``Slice`` (only when it crops) plus a 1×1 ``MaxPool``
  with the steps as strides: picking one element per window is exact, and ncnn runs it as ``Pooling``.
Anything else with a step (channel/batch axes, negative steps, unknown shapes) is a ``ConversionError`` naming the
node.

ncnn has no comparison layers either (pnnx leaves ``torch.eq`` / ``Tensor.to`` unconverted). The one comparison
detectors put in the graph is CenterNet's peak test ``heat * (max_pool3x3(heat) == heat)``: a stride-1 max pool
over a window that holds the element itself is never below it, so ``d = pool - x >= 0`` and
``(pool == x) = 1 - min(ceil(d), 1)`` — exact for every finite input (``ceil`` of any positive ``d`` is >= 1).
``Equal`` of such a pair read through ``Cast(to=float)`` or ``Where(eq, x, 0)`` becomes that arithmetic.
Every rewrite is recorded for the artifact's manifest.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edgeconv.core.errors import ConversionError
from edgeconv.core.lazy import require

INT_MAX = 2**62


class _Graph:
    """Tiny helpers over an onnx ModelProto: constants, producers, consumers, static shapes."""

    def __init__(self, model: Any) -> None:
        onnx = require("onnx", "onnx")
        self.onnx = onnx
        self.nh = onnx.numpy_helper
        self.model = model
        self.g = model.graph
        self.inits = {i.name: i for i in self.g.initializer}
        self.consts = {n.output[0]: n for n in self.g.node if n.op_type == "Constant"}
        inferred = onnx.shape_inference.infer_shapes(model)
        self.shapes: dict[str, list[int | None]] = {}
        for vi in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output):
            dims = vi.type.tensor_type.shape.dim
            self.shapes[vi.name] = [d.dim_value if d.HasField("dim_value") else None for d in dims]
        self._names = {n.name for n in self.g.node} | {o for n in self.g.node for o in n.output}
        self._count = 0

    def const(self, name: str) -> np.ndarray | None:
        if name in self.inits:
            return self.nh.to_array(self.inits[name])
        if name in self.consts:
            for a in self.consts[name].attribute:
                if a.name == "value":
                    return self.nh.to_array(a.t)
        return None

    def producer(self, tensor: str) -> Any:
        return next((n for n in self.g.node if tensor in n.output), None)

    def consumers(self, tensor: str) -> list[Any]:
        return [n for n in self.g.node if tensor in n.input]

    def is_graph_output(self, tensor: str) -> bool:
        return any(o.name == tensor for o in self.g.output)

    def fresh(self, base: str) -> str:
        while True:
            self._count += 1
            name = f"{base}__ec{self._count}"
            if name not in self._names and name not in self.inits:
                self._names.add(name)
                return name

    def add_init(self, base: str, arr: np.ndarray) -> str:
        name = self.fresh(base)
        self.g.initializer.append(self.nh.from_array(arr, name))
        self.inits[name] = self.g.initializer[-1]
        return name


def _slice_spec(G: _Graph, node: Any) -> dict[int, tuple[int, int, int]] | None:
    """{axis: (start, end, step)} of a Slice with constant parameters (None when not constant)."""
    ins = list(node.input) + [""] * (5 - len(node.input))
    starts, ends = G.const(ins[1]), G.const(ins[2])
    if starts is None or ends is None:
        return None
    axes = G.const(ins[3]) if ins[3] else np.arange(len(starts))
    steps = G.const(ins[4]) if ins[4] else np.ones(len(starts), np.int64)
    if axes is None or steps is None:
        return None
    rank = len(G.shapes.get(node.input[0], []) or [])
    out = {}
    for a, s, e, st in zip(axes.tolist(), starts.tolist(), ends.tolist(), steps.tolist(), strict=True):
        out[a + rank if a < 0 and rank else a] = (int(s), int(e), int(st))
    return out


def _focus_source(G: _Graph, tensor: str) -> tuple[str, list[Any], dict[int, tuple[int, int, int]]] | None:
    """Walk back through a chain of Slice nodes: (source tensor, slice nodes, merged per-axis spec)."""
    nodes, spec = [], {}
    node = G.producer(tensor)
    while node is not None and node.op_type == "Slice":
        s = _slice_spec(G, node)
        if s is None or set(s) & set(spec):
            return None
        spec.update(s)
        nodes.append(node)
        tensor = node.input[0]
        node = G.producer(tensor)
    return (tensor, nodes, spec) if nodes else None


def _rewrite_focus(G: _Graph, concat: Any) -> dict[str, Any] | None:
    axis = next((a.i for a in concat.attribute if a.name == "axis"), None)
    if axis not in (1, -3) or len(concat.input) != 4:
        return None
    srcs = [_focus_source(G, t) for t in concat.input]
    if any(s is None for s in srcs) or len({s[0] for s in srcs}) != 1:  # type: ignore[index]
        return None
    x = srcs[0][0]  # type: ignore[index]
    shape = G.shapes.get(x)
    if not shape or len(shape) != 4 or any(d is None for d in shape) or shape[2] % 2 or shape[3] % 2:
        return None
    n, c, h, w = shape  # type: ignore[misc]
    offsets = []
    for _, _, spec in srcs:  # type: ignore[misc]
        if set(spec) != {2, 3}:
            return None
        (sy, ey, ty), (sx, ex, tx) = spec[2], spec[3]
        if ty != 2 or tx != 2 or sy not in (0, 1) or sx not in (0, 1) or ey < h or ex < w:
            return None
        offsets.append((sy, sx))
    if sorted(offsets) != [(0, 0), (0, 1), (1, 0), (1, 1)]:
        return None
    users = G.consumers(concat.output[0])
    conv = users[0] if len(users) == 1 and users[0].op_type == "Conv" and users[0].input[0] == concat.output[0] \
        else None
    weight = G.const(conv.input[1]) if conv is not None else None
    group = next((a.i for a in conv.attribute if a.name == "group"), 1) if conv is not None else 1
    if conv is None or weight is None or group != 1 or G.is_graph_output(concat.output[0]):
        return None  # the generic step-slice rewrite handles it (still exact)
    # pixel_unshuffle channel p = ci*4 + dy*2 + dx holds what the concat had at k*C + ci, k = offsets.index((dy, dx))
    old_of_new = np.array([offsets.index((p % 4 // 2, p % 2)) * c + p // 4 for p in range(4 * c)])
    new_w = np.ascontiguousarray(weight[:, old_of_new])
    oh = G.onnx.helper
    s1 = G.add_init("focus_shape6", np.array([n, c, h // 2, 2, w // 2, 2], np.int64))
    s2 = G.add_init("focus_shape4", np.array([n, 4 * c, h // 2, w // 2], np.int64))
    t1, t2 = G.fresh("focus_r6"), G.fresh("focus_t6")
    base = concat.name or "focus"
    new_nodes = [oh.make_node("Reshape", [x, s1], [t1], name=G.fresh(base + "_reshape6")),
                 oh.make_node("Transpose", [t1], [t2], perm=[0, 1, 3, 5, 2, 4], name=G.fresh(base + "_transpose")),
                 oh.make_node("Reshape", [t2, s2], [concat.output[0]], name=G.fresh(base + "_pixel_unshuffle"))]
    conv.input[1] = G.add_init((conv.name or "conv") + "_focus_w", new_w.astype(weight.dtype))
    slices = list({id(nd): nd for _, nodes, _ in srcs for nd in nodes}.values())  # type: ignore[misc]
    idx = list(G.g.node).index(concat)
    G.g.node.remove(concat)
    for i, nd in enumerate(new_nodes):
        G.g.node.insert(idx + i, nd)
    _drop_dead(G, slices)  # slices may be shared between the four branches (legacy export CSE)
    return {"rewrite": "focus->pixel_unshuffle", "nodes": [nd.name for nd in slices] + [concat.name],
            "offsets": [list(o) for o in offsets], "folded_into": conv.name, "input": x}


def _drop_dead(G: _Graph, candidates: list[Any]) -> None:
    """Remove candidate nodes whose outputs nothing reads any more (repeat: chains die from the end)."""
    changed = True
    while changed:
        changed = False
        for nd in list(candidates):
            if nd in G.g.node and not any(G.consumers(o) or G.is_graph_output(o) for o in nd.output):
                G.g.node.remove(nd)
                candidates.remove(nd)
                changed = True


def _rewrite_step_slice(G: _Graph, node: Any) -> dict[str, Any]:
    spec = _slice_spec(G, node)
    where = f"Slice node '{node.name}' (output {node.output[0]})"
    if spec is None:
        raise ConversionError(f"{where} has a step and non-constant parameters; ncnn has no strided slice",
                              hint="make slice bounds constant (static shapes) or avoid step slicing")
    shape = G.shapes.get(node.input[0])
    stepped = {a: v for a, v in spec.items() if v[2] != 1}
    if any(v[2] < 1 for v in stepped.values()):
        raise ConversionError(f"{where} has a negative step (reversal); ncnn cannot run it",
                              hint="flip with a constant permutation/gather in the model instead")
    if not shape or len(shape) != 4 or not set(stepped) <= {2, 3}:
        raise ConversionError(f"{where} steps over axis {sorted(stepped)} of a rank-{len(shape or [])} tensor; "
                              "only H/W steps of a 4-D tensor can be rewritten exactly for ncnn",
                              hint="restructure the slicing (e.g. reshape + plain slices) in the model")
    oh = G.onnx.helper
    x = node.input[0]
    new_nodes = []
    crops = {a: (s, e) for a, (s, e, _) in spec.items()}
    if any(s != 0 or (shape[a] is None or e < shape[a]) for a, (s, e) in crops.items()):
        axes = sorted(crops)
        st = G.add_init("slice_starts", np.array([crops[a][0] for a in axes], np.int64))
        en = G.add_init("slice_ends", np.array([min(crops[a][1], INT_MAX) for a in axes], np.int64))
        ax = G.add_init("slice_axes", np.array(axes, np.int64))
        cropped = G.fresh(x + "_crop")
        new_nodes.append(oh.make_node("Slice", [x, st, en, ax], [cropped], name=G.fresh(node.name + "_crop")))
        x = cropped
    strides = [stepped.get(2, (0, 0, 1))[2], stepped.get(3, (0, 0, 1))[2]]
    new_nodes.append(oh.make_node("MaxPool", [x], [node.output[0]], kernel_shape=[1, 1], strides=strides,
                                  name=G.fresh(node.name + "_subsample")))
    idx = list(G.g.node).index(node)
    G.g.node.remove(node)
    for i, nd in enumerate(new_nodes):
        G.g.node.insert(idx + i, nd)
    return {"rewrite": "step-slice->maxpool1x1", "nodes": [node.name], "strides": strides}


def _peak_pair(G: _Graph, eq: Any) -> tuple[str, str] | None:
    """``(pool, x)`` when ``eq`` compares a stride-1, same-size MaxPool of ``x`` with ``x`` (either order)."""
    for a, b in ((0, 1), (1, 0)):
        pool = G.producer(eq.input[a])
        if pool is None or pool.op_type != "MaxPool" or pool.input[0] != eq.input[b]:
            continue
        attrs = {x.name: G.onnx.helper.get_attribute_value(x) for x in pool.attribute}
        shape_in, shape_out = G.shapes.get(pool.input[0]), G.shapes.get(pool.output[0])
        if any(st != 1 for st in attrs.get("strides", [1])) or any(d != 1 for d in attrs.get("dilations", [1])):
            continue
        if not shape_in or None in shape_in or shape_in != shape_out:
            continue
        return pool.output[0], pool.input[0]
    return None


def _rewrite_peak_equal(G: _Graph, eq: Any) -> dict[str, Any] | None:
    """``Equal(max_pool(x), x)`` read as a float mask (``Cast``) or by ``Where(eq, x, 0)``, as exact arithmetic."""
    pair = _peak_pair(G, eq)
    users = G.consumers(eq.output[0])
    if pair is None or G.is_graph_output(eq.output[0]) or not users:
        return None
    def zeros_for(t: str, like: str) -> bool:  # a constant 0 that does not widen the output beyond ``like``
        c = G.const(t)
        return c is not None and not np.any(c) and (c.size == 1 or list(c.shape) == G.shapes.get(like))

    for u in users:
        to = next((G.onnx.helper.get_attribute_value(a) for a in u.attribute if a.name == "to"), None)
        if not (u.op_type == "Cast" and to == G.onnx.TensorProto.FLOAT) and not (
                u.op_type == "Where" and u.input[0] == eq.output[0] and zeros_for(u.input[2], u.input[1])):
            return None
    pool, x = pair
    oh = G.onnx.helper
    one = G.add_init("one", np.array(1.0, np.float32))
    d, c, mn = G.fresh(eq.output[0] + "_d"), G.fresh(eq.output[0] + "_ceil"), G.fresh(eq.output[0] + "_min")
    mask = G.fresh(eq.output[0] + "_mask")
    new = [oh.make_node("Sub", [pool, x], [d], name=G.fresh(eq.name + "_d")),
           oh.make_node("Ceil", [d], [c], name=G.fresh(eq.name + "_ceil")),
           oh.make_node("Min", [c, one], [mn], name=G.fresh(eq.name + "_min")),
           oh.make_node("Sub", [one, mn], [mask], name=G.fresh(eq.name + "_mask"))]
    for u in users:  # each reader becomes an Identity of the mask or a product with it, under its own output name
        idx = list(G.g.node).index(u)
        G.g.node.remove(u)
        G.g.node.insert(idx, oh.make_node("Identity", [mask], [u.output[0]], name=u.name) if u.op_type == "Cast"
                        else oh.make_node("Mul", [u.input[1], mask], [u.output[0]], name=u.name))
    idx = list(G.g.node).index(eq)
    G.g.node.remove(eq)
    for i, nd in enumerate(new):
        G.g.node.insert(idx + i, nd)
    return {"rewrite": "peak-equal->arithmetic", "nodes": [eq.name] + [u.name for u in users], "pool": pool}


def _dynamic_tensors(G: _Graph) -> set[str]:
    """Tensors that depend on a graph input (slices of constants are folded by pnnx: leave them alone)."""
    dyn = {i.name for i in G.g.input if i.name not in G.inits}
    for n in G.g.node:  # nodes are topologically sorted in a valid ONNX graph
        if any(i in dyn for i in n.input):
            dyn.update(n.output)
    return dyn


def _has_step(G: _Graph, node: Any, dynamic: set[str]) -> bool:
    if node.op_type != "Slice" or len(node.input) < 5 or not node.input[4] or node.input[0] not in dynamic:
        return False
    steps = G.const(node.input[4])
    return steps is None or bool(np.any(steps != 1))


def apply_rewrites(model: Any) -> tuple[Any, list[dict[str, Any]]]:
    """Rewrite ``model`` (an onnx ModelProto, modified in place) for ncnn; returns it and the list of rewrites."""
    G = _Graph(model)
    done: list[dict[str, Any]] = []
    for concat in [n for n in G.g.node if n.op_type == "Concat"]:
        rec = _rewrite_focus(G, concat)
        if rec:
            done.append(rec)
    if done:
        G = _Graph(model)
    n_before = len(done)
    for eq in [n for n in G.g.node if n.op_type == "Equal"]:
        rec = _rewrite_peak_equal(G, eq)
        if rec:
            done.append(rec)
    if len(done) > n_before:
        G = _Graph(model)
    dynamic = _dynamic_tensors(G)
    for node in [n for n in G.g.node if _has_step(G, n, dynamic)]:
        done.append(_rewrite_step_slice(G, node))
    if done:  # drop initializers/constants nothing uses any more (the old Focus weights)
        used = {i for n in model.graph.node for i in n.input}
        keep = [i for i in model.graph.initializer if i.name in used]
        del model.graph.initializer[:]
        model.graph.initializer.extend(keep)
        G.onnx.checker.check_model(model)
    return model, done
