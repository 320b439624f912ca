"""INT8 for TFLite: PT2E quantization (torchao) calibrated by the shared calibration set, and float I/O restoration.

Annotation is litert-torch's ``PT2EQuantizer`` plus two passes of ours (``EdgeconvQuantizer``):

- Fixed-range activations get the quantization parameters TFLite's int8 kernels require, whatever their position:
  softmax and logistic output scale 1/256, zero point −128; tanh 1/128, 0; log-softmax 16/256, 127
  (``tflite/kernels/activations.cc``: "output->params.scale not near 1.f / 256" otherwise). litert-torch's own
  annotator skips a softmax whose input is unannotated (after a transpose, as in YOLOv8/11's DFL), and the
  consumer's calibrated observer then lands on the softmax output. Consumers share the fixed parameters, and a
  concatenation mixing a fixed-range tensor with a calibrated one (boxes in pixels beside class probabilities)
  stays float, so probabilities are not requantized onto the box scale.
- ``--keep-fp32``: the reference ONNX nodes the one matcher resolved are mapped onto the traced graph
  (``map_keep_nodes``: by name where the dynamo exporter kept it, else by value on one sample) and left
  unannotated, with every quantization spec that shares with them.

litert-torch lowers a PT2E-quantized graph with the quantize of each input and the dequantize of each output folded
into the model's signature, i.e. the .tflite takes and returns int8.  That is what a microcontroller wants
(``int8_io``), but a phone app usually feeds float32 pixels; so by default :func:`add_float_io` puts an explicit
QUANTIZE op in front of every int8 input and a DEQUANTIZE op behind every int8 output — the same layout the
TensorFlow converter produces for full-integer models with float interfaces.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from edgeconv.core.console import log, track
from edgeconv.core.errors import CalibrationError, ConversionError
from edgeconv.targets.pt2e_observers import DEFAULT_OBSERVER, ObserveConstantsOnce, with_observer


def pt2e_quantize(module: Any, sample_args: tuple[Any, ...], feeds: Iterable[tuple[Any, ...]] | None, *,
                  dynamic: bool = False, per_channel: bool = True, observer: str = DEFAULT_OBSERVER,
                  total: int | None = None, keep: Callable[[Any], set[str]] | None = None,
                  record: dict[str, Any] | None = None) -> tuple[Any, Any, int]:
    """Export ``module``, insert observers, run the calibration feeds, convert to Q/DQ.

    Returns ``(quantized graph module, quantizer, samples seen)``; the quantizer is what litert-torch needs to know
    whether to lower static or dynamic Q/DQ.  Dynamic-range quantization observes nothing, so needs no feeds.
    ``observer``: one of ``pt2e_observers.OBSERVERS`` (default ``histogram``: litert-torch's own
    histogram observer with a faster, identical count, see that module). ``keep`` maps the exported
    graph to the names of the nodes to leave in float; ``record`` receives what the annotation passes changed.
    """
    import torch
    from litert_torch.quantize.pt2e_quantizer import get_symmetric_quantization_config
    from torchao.quantization.pt2e import move_exported_model_to_eval
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    config = get_symmetric_quantization_config(is_per_channel=per_channel, is_dynamic=dynamic)
    if not dynamic:
        config = with_observer(config, observer, "tflite")
    from edgeconv.targets.tflite.convert import integer_powers_as_products

    with integer_powers_as_products():
        graph = torch.export.export(module, sample_args).module()
    if not dynamic:  # decompose first: tag_sources tags the muls it writes
        rewritten = {"silu_decomposed": decompose_silu(graph), "source_tagged": tag_sources(graph)}
        if record is not None:
            record.update(rewritten)
    kept = keep(graph) if keep is not None else set()
    quantizer = make_quantizer(config, kept, record if record is not None else {})
    graph = prepare_pt2e(graph, quantizer)
    graph = move_exported_model_to_eval(graph)
    seen = 0
    with torch.no_grad():
        if dynamic:
            graph(*sample_args)  # per-channel weight observers need one pass to see the weights
        else:
            once = ObserveConstantsOnce(graph)
            try:
                for args in track(feeds or (), "calibrating (PT2E)", total=total):
                    graph(*args)
                    seen += 1
                    once.after_sample()
            finally:
                once.restore()
            if seen == 0:
                raise CalibrationError("int8 calibration saw no samples", hint="check --calib holds readable inputs")
    graph = convert_pt2e(graph, fold_quantize=False)
    graph = move_exported_model_to_eval(graph)
    graph.training = False  # the ops are eval already; this flag is what litert-torch's training warning reads
    return graph, quantizer, seen


#: aten op -> (scale, zero point) TFLite's int8 kernels require for its output (int8, range -128..127)
FIXED_QPARAMS: dict[str, tuple[float, int]] = {
    "softmax.int": (1 / 256, -128), "_softmax.default": (1 / 256, -128), "sigmoid.default": (1 / 256, -128),
    "tanh.default": (1 / 128, 0), "log_softmax.int": (16 / 256, 127), "_log_softmax.default": (16 / 256, 127),
}


def _op(node: Any) -> str | None:
    """``softmax.int`` for ``torch.ops.aten.softmax.int`` (None for anything not an aten call)."""
    t = node.target
    if node.op != "call_function" or getattr(t, "namespace", None) != "aten":
        return None
    return f"{t._opname}.{t._overloadname}"


def _fixed_spec(scale: float, zero_point: int) -> Any:
    import torch
    from torchao.quantization.pt2e.quantizer import FixedQParamsQuantizationSpec

    return FixedQParamsQuantizationSpec(dtype=torch.int8, scale=scale, zero_point=zero_point, quant_min=-128,
                                        quant_max=127, qscheme=torch.per_tensor_affine)


def tag_sources(gm: Any) -> dict[str, int]:
    """Give call nodes without one the ``source_fn_stack`` entry litert-torch's annotators look for; counts by op.

    Its add, mul, cat and pooling annotators find their nodes through ``get_source_partitions``, i.e. by the
    ``source_fn_stack`` torch.export used to record; the torch here records none, so those annotators found nothing
    and every residual add, concatenation and pool stayed float between DEQUANTIZE and QUANTIZE (16 adds in
    YOLO11n). The aten op names its source unambiguously for these."""
    import torch
    import torch.nn.functional as F

    aten = torch.ops.aten
    sources = {aten.add.Tensor: torch.add, aten.mul.Tensor: torch.mul, aten.cat.default: torch.cat,
               aten.max_pool2d.default: F.max_pool2d, aten.adaptive_avg_pool2d.default: F.adaptive_avg_pool2d}
    counts: dict[str, int] = {}
    for node in gm.graph.nodes:
        src = sources.get(node.target) if node.op == "call_function" else None
        if src is None or node.meta.get("source_fn_stack"):
            continue
        node.meta["source_fn_stack"] = [(node.name, src)]
        key = str(node.target).split(".")[1]
        counts[key] = counts.get(key, 0) + 1
    return counts


def decompose_silu(gm: Any) -> int:
    """Rewrite each ``aten.silu`` as ``x * sigmoid(x)``; how many were rewritten.

    torch.export keeps SiLU as one op, and litert-torch's PT2E quantizer has no annotator for it, so every SiLU of
    a YOLO-style network stayed float: CONV_2D → DEQUANTIZE → LOGISTIC, MUL in fp32 → QUANTIZE (77 float islands
    in YOLO11n, its int8 TFLite slower than Ultralytics'). Decomposed, the quantizer annotates both halves —
    the sigmoid with the fixed output parameters TFLite's int8 LOGISTIC requires (``FIXED_QPARAMS``), the mul
    calibrated — and the whole block runs in int8, as the ONNX export (Sigmoid, Mul) already spells it."""
    import torch

    silu = {torch.ops.aten.silu.default, torch.ops.aten.silu_.default}
    n = 0
    for node in list(gm.graph.nodes):
        if node.op != "call_function" or node.target not in silu:
            continue
        x = node.args[0]
        with gm.graph.inserting_before(node):
            sig = gm.graph.call_function(torch.ops.aten.sigmoid.default, (x,))
            mul = gm.graph.call_function(torch.ops.aten.mul.Tensor, (x, sig))
        # the silu's own source_fn_stack (nn.SiLU) is left behind: tag_sources gives the mul the one its
        # annotator looks for; the sigmoid's annotator matches the aten op itself
        keep_meta = ("val", "tensor_meta", "nn_module_stack", "stack_trace")
        sig.meta = {k: v for k, v in node.meta.items() if k in keep_meta}
        mul.meta = dict(sig.meta)
        node.replace_all_uses_with(mul)
        gm.graph.erase_node(node)
        n += 1
    if n:
        gm.graph.lint()
        gm.recompile()
    return n


def fix_fixed_range_ops(gm: Any, config: Any) -> list[str]:
    """Give every softmax/logistic/tanh TFLite's required output parameters (see the module docstring); returns
    the names of the nodes changed, and of the concatenations left in float."""
    from torchao.quantization.pt2e.quantizer import QuantizationAnnotation, SharedQuantizationSpec

    changed: list[str] = []
    fixed: set[Any] = set()
    for node in gm.graph.nodes:
        qp = FIXED_QPARAMS.get(_op(node) or "")
        if qp is None or not node.args or not hasattr(node.args[0], "meta"):
            continue
        src = node.args[0]
        src_ann = src.meta.get("quantization_annotation")
        in_map = {} if src_ann is not None and src_ann.output_qspec is not None else {src: config.input_activation}
        node.meta["quantization_annotation"] = QuantizationAnnotation(input_qspec_map=in_map,
                                                                      output_qspec=_fixed_spec(*qp), _annotated=True)
        fixed.add(node)
        changed.append(node.name)
    for node in gm.graph.nodes:
        ann = node.meta.get("quantization_annotation")
        if ann is None or not any(a in fixed for a in ann.input_qspec_map):
            continue
        for a in list(ann.input_qspec_map):
            if a in fixed:
                ann.input_qspec_map[a] = SharedQuantizationSpec(a)
    for node in gm.graph.nodes:  # a concatenation of fixed-range and calibrated tensors stays float
        if _op(node) != "cat.default" or not node.args or not isinstance(node.args[0], (list, tuple)):
            continue
        ins = [a for a in node.args[0] if hasattr(a, "meta")]
        if not any(a in fixed for a in ins) or all(a in fixed for a in ins):
            continue
        # TFLite's converter gives a quantized CONCATENATION one scale for all operands and propagates it from
        # whichever operand is quantized (measured: class probabilities requantized onto the box scale, or boxes
        # onto 1/256), so every operand's output stays float and the concat with them.
        node.meta.pop("quantization_annotation", None)
        changed.append(f"{node.name} (float)")
        for a in ins:
            aa = a.meta.get("quantization_annotation")
            if aa is not None and aa.output_qspec is not None:
                aa.output_qspec = None
                changed.append(f"{a.name} (float output)")
    return changed


def _refers_to(spec: Any, names: set[str]) -> bool:
    from torchao.quantization.pt2e.quantizer import SharedQuantizationSpec

    if not isinstance(spec, SharedQuantizationSpec):
        return False
    ref = spec.edge_or_node
    nodes = ref if isinstance(ref, tuple) else (ref,)
    return any(getattr(n, "name", None) in names for n in nodes)


def unannotate(gm: Any, names: set[str]) -> list[str]:
    """Leave ``names`` in float: drop their annotations, their consumers' input specs for them, and (to a fixed
    point) every spec shared with a node no longer observed. Returns every node left unannotated."""
    removed = set(names)
    while True:
        grew = False
        for node in gm.graph.nodes:
            ann = node.meta.get("quantization_annotation")
            if ann is None:
                continue
            if node.name in removed or _refers_to(ann.output_qspec, removed):
                del node.meta["quantization_annotation"]
                grew |= node.name not in removed
                removed.add(node.name)
                continue
            for a in list(ann.input_qspec_map):
                if a.name in removed or _refers_to(ann.input_qspec_map[a], removed):
                    del ann.input_qspec_map[a]
        if not grew:
            return sorted(removed)


def _is_float(gm: Any, node: Any) -> bool | None:
    """Whether ``node`` produces a floating-point tensor (None when that is not known)."""
    import torch

    val = node.meta.get("val")
    if val is None and node.op == "get_attr":
        obj: Any = gm
        for part in str(node.target).split("."):
            obj = getattr(obj, part, None)
        val = obj
    return val.is_floating_point() if isinstance(val, torch.Tensor) else None


def drop_integer_specs(gm: Any) -> list[str]:
    """Remove quantization specs on integer tensors: litert-torch's annotator marks both inputs of an ``add``
    whatever their dtype, and YOLOv5's grid offsets are an int64 constant there — its observer then failed the
    whole conversion (``"histogram_cpu" not implemented for 'Long'``). An integer tensor has nothing to quantize."""
    dropped: list[str] = []
    for node in gm.graph.nodes:
        ann = node.meta.get("quantization_annotation")
        if ann is None:
            continue
        for a in list(ann.input_qspec_map):
            if _is_float(gm, a) is False:
                del ann.input_qspec_map[a]
                dropped.append(f"{node.name} <- {a.name}")
    integer = {n.name for n in gm.graph.nodes
               if n.meta.get("quantization_annotation") is not None and _is_float(gm, n) is False}
    if integer:
        dropped += unannotate(gm, integer)
    return dropped


def make_quantizer(config: Any, keep: set[str], record: dict[str, Any]) -> Any:
    """litert-torch's PT2EQuantizer with edgeconv's two annotation passes (fixed ranges, kept nodes)."""
    from litert_torch.quantize.pt2e_quantizer import PT2EQuantizer

    class EdgeconvQuantizer(PT2EQuantizer):
        def annotate(self, model: Any) -> Any:
            model = super().annotate(model)
            integer = drop_integer_specs(model)
            if integer:
                record["integer_unannotated"] = integer
            if config.input_activation is not None:  # static: activations are quantized
                record["fixed_qparams"] = fix_fixed_range_ops(model, config)
            if keep:
                present = {n.name for n in model.graph.nodes}
                record["kept_float"] = unannotate(model, keep & present)
                record["kept_missing"] = sorted(keep - present)
            return model

    return EdgeconvQuantizer().set_global(config)


def add_float_io(model: bytes, *, inputs: bool = True, outputs: bool = True) -> tuple[bytes, dict[str, Any]]:
    """Give a full-integer model float32 inputs/outputs by inserting QUANTIZE/DEQUANTIZE ops at its boundary.

    Only int8/uint8/int16 boundary tensors with quantization parameters are touched; the signature keeps its names
    and now points at the new float tensors.  Returns the new flatbuffer and a record of what was changed.
    """
    from ai_edge_litert import schema_py_generated as fb
    from ai_edge_litert.tools import flatbuffer_utils as fbu

    m = fbu.read_model_from_bytearray(bytearray(model))
    quant_types = {fb.TensorType.INT8, fb.TensorType.UINT8, fb.TensorType.INT16}
    if len(m.subgraphs) != 1:
        raise ConversionError(f"expected one subgraph in the int8 model, found {len(m.subgraphs)}")
    sg = m.subgraphs[0]

    def opcode(builtin: int) -> int:
        for i, oc in enumerate(m.operatorCodes):
            if fbu.get_builtin_code_from_operator_code(oc) == builtin:
                return i
        oc = fb.OperatorCodeT()
        oc.builtinCode, oc.deprecatedBuiltinCode, oc.version = builtin, min(builtin, 127), 2  # v2: int8 kernels
        m.operatorCodes.append(oc)
        return len(m.operatorCodes) - 1

    def float_twin(idx: int, suffix: str) -> int:
        t = sg.tensors[idx]
        nt = fb.TensorT()
        nt.shape, nt.shapeSignature, nt.hasRank = t.shape, t.shapeSignature, t.hasRank
        nt.type, nt.name = fb.TensorType.FLOAT32, f"{fbu_name(t.name)}{suffix}"
        empty = fb.BufferT()
        m.buffers.append(empty)
        nt.buffer = len(m.buffers) - 1
        sg.tensors.append(nt)
        return len(sg.tensors) - 1

    def quantized(idx: int) -> bool:
        t = sg.tensors[idx]
        return t.type in quant_types and t.quantization is not None and t.quantization.scale is not None \
            and len(t.quantization.scale) > 0

    remap: dict[int, int] = {}
    record: dict[str, Any] = {"inputs": [], "outputs": []}
    new_ops_front, new_ops_back = [], []
    if inputs:
        q = opcode(fb.BuiltinOperator.QUANTIZE)
        for pos, idx in enumerate(sg.inputs):
            if not quantized(idx):
                continue
            f = float_twin(idx, "_float")
            op = fb.OperatorT()
            op.opcodeIndex, op.inputs, op.outputs = q, [f], [idx]
            op.builtinOptionsType, op.builtinOptions = fb.BuiltinOptions.QuantizeOptions, fb.QuantizeOptionsT()
            new_ops_front.append(op)
            sg.inputs[pos] = f
            remap[idx] = f
            record["inputs"].append(fbu_name(sg.tensors[idx].name))
    if outputs:
        dq = opcode(fb.BuiltinOperator.DEQUANTIZE)
        for pos, idx in enumerate(sg.outputs):
            if not quantized(idx):
                continue
            f = float_twin(idx, "_float")
            op = fb.OperatorT()
            op.opcodeIndex, op.inputs, op.outputs = dq, [idx], [f]
            op.builtinOptionsType, op.builtinOptions = fb.BuiltinOptions.DequantizeOptions, fb.DequantizeOptionsT()
            new_ops_back.append(op)
            sg.outputs[pos] = f
            remap[idx] = f
            record["outputs"].append(fbu_name(sg.tensors[idx].name))
    sg.operators = new_ops_front + list(sg.operators or []) + new_ops_back
    for sig in m.signatureDefs or []:
        for tm in list(sig.inputs or []) + list(sig.outputs or []):
            tm.tensorIndex = remap.get(tm.tensorIndex, tm.tensorIndex)
    out = fbu.convert_object_to_bytearray(m)
    log.debug("float I/O added around %d input(s), %d output(s)", len(record["inputs"]), len(record["outputs"]))
    return bytes(out), record


def fbu_name(name: bytes | str | None) -> str:
    """Tensor names come back as bytes from the flatbuffer object API."""
    if isinstance(name, bytes):
        return name.decode()
    return name or ""


def torch_feeds(feeds: Iterable[dict[str, np.ndarray]], order: list[str],
                transform: Callable[[str, np.ndarray], np.ndarray]) -> Iterable[tuple[Any, ...]]:
    """Calibration dicts (reference names, NCHW) → positional torch args in the traced module's order/layout."""
    import torch

    for f in feeds:
        yield tuple(torch.from_numpy(np.ascontiguousarray(transform(n, f[n]))) for n in order)
