"""INT8 for TFLite: PT2E quantization (torchao) calibrated by the shared calibration set, and float I/O restoration.

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
from edgeconv.core.errors import CalibrationError, ConfigError, ConversionError

OBSERVERS = ("histogram", "minmax")


def pt2e_quantize(module: Any, sample_args: tuple[Any, ...], feeds: Iterable[tuple[Any, ...]] | None, *,
                  dynamic: bool = False, per_channel: bool = True, observer: str = "histogram",
                  total: int | None = None) -> tuple[Any, Any, int]:
    """Export ``module``, insert observers, run the calibration feeds, convert to Q/DQ.

    Returns ``(quantized graph module, quantizer, samples seen)``; the quantizer is what litert-torch needs to know
    whether to lower static or dynamic Q/DQ.  Dynamic-range quantization observes nothing, so needs no feeds.
    ``observer``: litert-torch's default ``histogram`` (outlier-robust ranges, ~1-2 s per 256x256 sample on a small
    CPU) or ``minmax`` (several times faster, ranges set by the extremes).
    """
    import dataclasses

    import torch
    from litert_torch.quantize.pt2e_quantizer import PT2EQuantizer, get_symmetric_quantization_config
    from torchao.quantization.pt2e import move_exported_model_to_eval
    from torchao.quantization.pt2e.observer import MinMaxObserver
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    if observer not in OBSERVERS:
        raise ConfigError(f"tflite int8 observer must be one of {OBSERVERS}, not {observer!r}")
    config = get_symmetric_quantization_config(is_per_channel=per_channel, is_dynamic=dynamic)
    if observer == "minmax" and not dynamic:
        act = dataclasses.replace(config.input_activation,
                                  observer_or_fake_quant_ctr=MinMaxObserver.with_args(eps=2**-12))
        config = dataclasses.replace(config, input_activation=act, output_activation=act)
    quantizer = PT2EQuantizer().set_global(config)
    graph = torch.export.export(module, sample_args).module()
    graph = prepare_pt2e(graph, quantizer)
    graph = move_exported_model_to_eval(graph)
    seen = 0
    with torch.no_grad():
        if dynamic:
            graph(*sample_args)  # per-channel weight observers need one pass to see the weights
        else:
            for args in track(feeds or (), "calibrating (PT2E)", total=total):
                graph(*args)
                seen += 1
            if seen == 0:
                raise CalibrationError("int8 calibration saw no samples", hint="check --calib holds readable inputs")
    graph = convert_pt2e(graph, fold_quantize=False)
    graph = move_exported_model_to_eval(graph)
    graph.training = False  # the ops are eval already; this flag is what litert-torch's training warning reads
    return graph, quantizer, seen


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
