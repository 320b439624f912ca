"""OpenCV-friendly ONNX: exact rewrites applied only when OpenCV's importer rejects an operator of the reference.

The one rewrite here is generic: an operator that ONNX itself defines as a *function* (MeanVarianceNormalization,
Celu, Shrink-like ops in newer opsets, ...) is replaced by its defining subgraph from the ONNX schema, which uses
only primitive operators OpenCV implements.  That is exact by the ONNX specification (the function body *is* the
operator's definition) and is checked again by the pipeline's verification against the reference.
"""

from __future__ import annotations

from typing import Any


def _opset(model: Any, domain: str = "") -> int:
    for imp in model.opset_import:
        if imp.domain in (domain, "ai.onnx" if domain == "" else domain):
            return int(imp.version)
    return 0


def function_body(op_type: str, opset: int) -> Any | None:
    """The schema's function body for a standard operator at ``opset``, or None when it is not a function."""
    import onnx

    try:
        schema = onnx.defs.get_schema(op_type, opset, "")
    except onnx.defs.SchemaError:
        return None
    if not schema.has_function:
        return None  # not a function (or a context-dependent one, whose body needs input types): not expanded
    body = onnx.FunctionProto()
    body.ParseFromString(schema.get_function_with_opset_version(opset))
    return body if len(body.node) and len(body.input) else None  # empty: no body defined for this opset


def expand_functions(model: Any, op_types: set[str]) -> tuple[Any, list[dict[str, Any]]]:
    """Replace every node of ``op_types`` that has a schema function body by that body, inlined.

    The node is moved to a private domain and the body is added as a model-local function with the node's
    attributes filled from the schema defaults, then ``onnx.inliner`` expands it.  Returns the new model and a
    record per expanded operator (type, nodes, primitive operators used).
    """
    import onnx
    from onnx import helper, inliner

    opset = _opset(model)
    domain = "edgeconv.opencv.expanded"
    m = onnx.ModelProto()
    m.CopyFrom(model)
    done: list[dict[str, Any]] = []
    for op in sorted(op_types):
        body = function_body(op, opset)
        nodes = [n for n in m.graph.node if n.op_type == op and n.domain in ("", "ai.onnx")]
        if body is None or not nodes:
            continue
        schema = onnx.defs.get_schema(op, opset, "")
        fn = onnx.FunctionProto()
        fn.CopyFrom(body)
        fn.domain, fn.name = domain, op
        # The body is the schema's definition for this opset range; its primitives are read at the model's opset.
        del fn.opset_import[:]
        fn.opset_import.append(helper.make_opsetid("", opset))
        for n in nodes:
            have = {a.name for a in n.attribute}
            for name, attr in schema.attributes.items():
                if name not in have and attr.default_value is not None and attr.default_value.type != 0:
                    default = onnx.AttributeProto()
                    default.CopyFrom(attr.default_value)
                    default.name = name
                    n.attribute.append(default)
            n.domain = domain
        m.functions.append(fn)
        done.append({"rewrite": "expand-onnx-function", "op": op, "nodes": [n.name or n.output[0] for n in nodes],
                     "into": sorted({b.op_type for b in fn.node})})
    if not done:
        return model, []
    if not any(i.domain == domain for i in m.opset_import):
        m.opset_import.append(helper.make_opsetid(domain, 1))
    m = inliner.inline_local_functions(m)
    del m.opset_import[:]
    m.opset_import.extend([helper.make_opsetid("", opset)] +
                          [i for i in model.opset_import if i.domain not in ("", "ai.onnx", domain)])
    onnx.checker.check_model(m)
    return m, done
