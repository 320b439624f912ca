"""Structural checks of a saved ``.mlpackage``, done without the Core ML runtime (which exists only on Apple OSes).

What can be proven on Linux is proven here, from the saved spec (what the device will load), not from the
converter's in-memory program: the inputs (an image of the right size and colour space with the contract's
scale/bias, or a multi-array of the right shape), the outputs (reference names, shapes, float32), and that every
operation of the ML program exists in coremltools' op registry for an opset the chosen deployment target has
(an op introduced after the target would fail to load on the device).
"""

from __future__ import annotations

from typing import Any

#: ML-program opset of each deployment target (the key of ``block_specializations`` in the spec).
OPSETS = {"iOS15": "CoreML5", "iOS16": "CoreML6", "iOS17": "CoreML7", "iOS18": "CoreML8"}
_ARRAY_DTYPES = {65568: "float32", 65552: "float16", 131104: "int32", 65600: "float64", 131080: "int8"}


def _ops(block: Any) -> list[str]:
    out = []
    for op in block.operations:
        out.append(op.type)
        for inner in op.blocks:
            out.extend(_ops(inner))
    return out


def program_ops(spec: Any) -> tuple[str, list[str]]:
    """(opset name, every op type, nested blocks included) of the spec's main function."""
    fn = spec.mlProgram.functions["main"]
    opset = fn.opset
    return opset, _ops(fn.block_specializations[opset])


def unsupported_ops(op_types: list[str], target: str) -> list[str]:
    """Op types that coremltools does not register for ``target`` (or at all)."""
    import coremltools as ct
    from coremltools.converters.mil.mil.ops.registry import SSAOpRegistry

    want = getattr(ct.target, target)
    bad = []
    for t in sorted(set(op_types)):
        versions = SSAOpRegistry.core_ops.get(t) or {}
        if not versions or min(versions) > want:
            bad.append(t)
    return bad


def describe_feature(f: Any) -> dict[str, Any]:
    kind = f.type.WhichOneof("Type")
    if kind == "imageType":
        it = f.type.imageType
        return {"name": f.name, "kind": "image", "height": it.height, "width": it.width,
                "color": it.ColorSpace.Name(it.colorSpace)}
    if kind == "multiArrayType":
        ma = f.type.multiArrayType
        return {"name": f.name, "kind": "array", "shape": list(ma.shape),
                "dtype": _ARRAY_DTYPES.get(ma.dataType, str(ma.dataType))}
    return {"name": f.name, "kind": kind}


def check_package(path: str, *, inputs: list[dict[str, Any]], outputs: list[dict[str, Any]], target: str,
                  image: dict[str, Any] | None) -> dict[str, Any]:
    """Compare the saved model with the reference I/O; returns ``{"ok", "problems", ...}`` (never raises on a
    mismatch: the caller decides).  ``image``: the expected image input (``color``, ``scale``, ``bias``) or None."""
    import coremltools as ct

    model = ct.models.MLModel(path, skip_model_load=True)
    spec = model.get_spec()
    problems: list[str] = []
    got_in = [describe_feature(f) for f in spec.description.input]
    got_out = [describe_feature(f) for f in spec.description.output]
    if [f["name"] for f in got_in] != [i["name"] for i in inputs]:
        problems.append(f"inputs {[f['name'] for f in got_in]} != reference {[i['name'] for i in inputs]}")
    for want, got in zip(inputs, got_in):
        shape = list(want["shape"])
        if image is not None:
            if got["kind"] != "image" or [got.get("height"), got.get("width")] != shape[2:]:
                problems.append(f"input {want['name']}: expected a {shape[2]}x{shape[3]} image, got {got}")
            elif got["color"] != image["color"]:
                problems.append(f"input {want['name']}: colour space {got['color']} != contract {image['color']}")
        elif got["kind"] != "array" or got.get("shape") != shape:
            problems.append(f"input {want['name']}: expected array {shape}, got {got}")
    if [f["name"] for f in got_out] != [o["name"] for o in outputs]:
        problems.append(f"outputs {[f['name'] for f in got_out]} != reference {[o['name'] for o in outputs]}")
    for want, got in zip(outputs, got_out):
        if got.get("shape") != list(want["shape"]):
            problems.append(f"output {want['name']}: shape {got.get('shape')} != reference {list(want['shape'])}")
        if got.get("dtype") != "float32":
            problems.append(f"output {want['name']}: dtype {got.get('dtype')} != float32")
    pre = _preprocessing(spec)
    if image is not None:
        scale = pre.get("scale", 1.0)  # the converter omits a multiply by 1 and an add of zeros
        bias = pre.get("bias", [0.0] * len(image["bias"]))
        if not isinstance(scale, float) or abs(scale - image["scale"]) > 1e-3 * abs(image["scale"]) or \
                len(bias) != len(image["bias"]) or any(abs(a - b) > 1e-3 * max(1.0, abs(b))
                                                       for a, b in zip(bias, image["bias"])):
            problems.append(f"embedded preprocessing {pre} != contract scale {image['scale']} bias {image['bias']}")
    opset, op_types = program_ops(spec)
    bad_ops = unsupported_ops(op_types, target)
    if OPSETS.get(target) and opset > OPSETS[target]:
        problems.append(f"ML program opset {opset} is newer than {target} ({OPSETS[target]})")
    if bad_ops:
        problems.append(f"op(s) not available on {target}: {', '.join(bad_ops)}")
    counts: dict[str, int] = {}
    for t in op_types:
        counts[t] = counts.get(t, 0) + 1
    return {"ok": not problems, "problems": problems, "inputs": got_in, "outputs": got_out,
            "specification_version": spec.specificationVersion, "opset": opset, "deployment_target": target,
            "ops": dict(sorted(counts.items())), "unsupported_ops": bad_ops, "preprocessing": pre}


def _preprocessing(spec: Any) -> dict[str, Any]:
    """The image scale/bias the converter stored (an ML program keeps them as the first mul/add ops on the input)."""
    fn = spec.mlProgram.functions["main"]
    block = fn.block_specializations[fn.opset]
    consts: dict[str, Any] = {}
    found: dict[str, Any] = {}
    for op in block.operations:
        if op.type == "const":
            val = op.attributes.get("val")
            if val is not None and val.WhichOneof("value") == "immediateValue":
                tensor = val.immediateValue.tensor
                which = tensor.WhichOneof("value")
                if which in ("floats", "halfs"):
                    consts[op.outputs[0].name] = list(getattr(tensor, which).values) if which == "floats" else None
        elif op.type in ("mul", "add") and len(found) < 2:
            args = [a.name for arg in op.inputs.values() for a in arg.arguments if a.name]
            vals = [consts[a] for a in args if a in consts and consts[a] is not None]
            if vals:
                v = vals[0]
                if op.type == "mul" and "scale" not in found:
                    found["scale"] = float(v[0]) if len(v) == 1 else [float(x) for x in v]
                elif op.type == "add" and "bias" not in found:
                    found["bias"] = [float(x) for x in v]
        elif found and op.type not in ("cast",):
            break
    return found
