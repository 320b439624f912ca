"""PyTorch module → ``torch.export`` → ``to_edge_transform_and_lower`` (XNNPACK partitioner) → ``.pte``.

INT8 is PT2E with ExecuTorch's ``XNNPACKQuantizer`` (symmetric int8, per-channel weights), calibrated on the shared
calibration sample, then exported again and lowered the same way.  The conversion metadata records how much of the
graph XNNPACK took (``delegation``): operators left outside the delegate run on ExecuTorch's portable kernels, which
are slow on a device, so the fraction is worth reading.

The user's module is wrapped (``targets.base.flat_module``; never copied, never sent ``.eval()``) so its outputs
are a flat tuple in the reference ONNX's output order; the ``.pte`` is then run once on a random input next to the
reference and each output is checked by shape, so a reordered or mis-shaped output is a conversion error, not a
silent mismatch.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from edgeconv.core.compare import tensor_drift
from edgeconv.core.console import log, status, track
from edgeconv.core.errors import CalibrationError, ConfigError, ConversionError
from edgeconv.core.lazy import require
from edgeconv.targets.base import ConversionResult, ConvertContext, flat_module
from edgeconv.targets.pt2e_observers import DEFAULT_OBSERVER, ObserveConstantsOnce, with_observer

MODEL_FILE = "model.pte"


def quantize_pt2e(module: Any, sample: tuple[Any, ...], feeds: Any, *, names: list[str], per_channel: bool,
                  observer: str, total: int | None, keep: Callable[[Any], set[str]] | None = None,
                  record: dict[str, Any] | None = None) -> tuple[Any, int]:
    """PT2E with the XNNPACK quantizer: export, insert observers, run the calibration feeds, convert to Q/DQ.

    ``keep`` maps the exported graph to the names of the nodes to leave in float: the quantizer's filter function
    skips every pattern touching one (a float node's inputs and outputs get no Q/DQ of their own; a quantized
    neighbour still quantizes its side of the edge, so a tensor is float only when its producer and consumers are
    kept). ``record`` receives the nodes left in float."""

    import torch
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    config = with_observer(get_symmetric_quantization_config(is_per_channel=per_channel), observer, "executorch")
    quantizer = XNNPACKQuantizer().set_global(config)
    graph = torch.export.export(module, sample).module()
    kept = keep(graph) if keep is not None else set()
    if kept:
        quantizer.set_filter_function(lambda n: n.name not in kept)
        if record is not None:
            present = {n.name for n in graph.graph.nodes}
            record["kept_float"] = sorted(kept & present)
    graph = prepare_pt2e(graph, quantizer)
    seen = 0
    once = ObserveConstantsOnce(graph)
    with torch.no_grad():
        try:
            for feed in track(feeds, "calibrating (PT2E, XNNPACK quantizer)", total=total):
                graph(*(torch.from_numpy(np.ascontiguousarray(feed[n])) for n in names))
                seen += 1
                once.after_sample()
        finally:
            once.restore()
    if seen == 0:
        raise CalibrationError("int8 calibration saw no samples", hint="check --calib holds readable inputs")
    return convert_pt2e(graph), seen


def delegation(edge: Any) -> dict[str, Any]:
    """How much of the lowered graph XNNPACK took, from ExecuTorch's own ``get_delegation_info``."""
    from executorch.devtools.backend_debug import get_delegation_info

    info = get_delegation_info(edge.exported_program().graph_module)
    # getitem nodes only unpack a delegate call's tuple of outputs and alloc nodes are memory planning: neither is
    # an operator that runs on portable kernels.
    left = {k: int(v.non_delegated) for k, v in info.delegation_by_operator.items()
            if v.non_delegated and k not in ("getitem", "alloc")}
    d, nd = int(info.num_delegated_nodes), sum(left.values())
    return {"delegate": "XnnpackBackend", "subgraphs": int(info.num_delegated_subgraphs), "delegated_nodes": d,
            "non_delegated_nodes": nd, "fraction": round(d / (d + nd), 4) if d + nd else 0.0,
            "portable_ops": dict(sorted(left.items()))}


def check_outputs(pte: bytes, ref: Any, feeds: dict[str, np.ndarray]) -> dict[str, Any]:
    """Run the .pte once beside the reference: output count and shapes must match, in the reference's order."""
    from edgeconv.targets.base import OrtRunner
    from edgeconv.targets.executorch.runner import ExecuTorchRunner

    with OrtRunner(ref.onnx_path) as r:
        want = r.infer(feeds)
    with ExecuTorchRunner(pte, inputs=[s.name for s in ref.inputs], outputs=[s.name for s in ref.outputs],
                          check_count=True) as r:
        got = r.infer(feeds)
    report = {}
    for spec in ref.outputs:
        a, b = want[spec.name], got[spec.name]
        if a.shape != b.shape:
            raise ConversionError(f"ExecuTorch output '{spec.name}' has shape {b.shape}, the reference {a.shape}",
                                  hint="the module's forward must return what the reference ONNX outputs, in order")
        d = tensor_drift(a.ravel(), b.ravel())
        report[spec.name] = {"probe_max_abs": d["max_abs"], "probe_cosine": d["cosine"]}
    return report


def convert(ctx: ConvertContext) -> ConversionResult:
    ref = ctx.reference
    if ref.module is None:
        raise ConfigError("executorch converts from the PyTorch model (torch.export), but only ONNX was given",
                          hint="pass --model FILE.py:FACTORY --weights ... instead of an .onnx file")
    if ctx.precision not in ("fp32", "int8"):
        raise ConfigError(f"executorch has no '{ctx.precision}' route", hint="use fp32 or int8")
    torch = require("torch", "torch")
    require("executorch", "executorch")
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    names = [s.name for s in ref.inputs]
    feeds0 = ref.random_feeds(1)[0]
    sample = tuple(torch.from_numpy(np.ascontiguousarray(feeds0[n])) for n in names)
    # The user's module itself, wrapped, never deep-copied: a model holding a Python module (or a lock, a file) as an
    # attribute cannot be copied, and torch.export / PT2E do not modify it (they trace into new graph modules). No
    # .eval() either, which would call methods a model may shadow (``self.eval = ...``, ``self.modules = [...]``):
    # the intake already put the model in inference mode; only edgeconv's own wrapper gets the flag here.
    module = flat_module(ref.module)
    object.__setattr__(module, "training", False)
    meta: dict[str, Any] = {"format": "pte", "converter": "torch.export → to_edge_transform_and_lower (XNNPACK)"}
    if ctx.keep_fp32 and ctx.precision != "int8":
        log.warning("--keep-fp32 only applies to int8; ignored for %s", ctx.precision)
    if ctx.precision == "fp32":  # int8: PT2E's prepare folds them itself, before observing
        from edgeconv.targets.fold_bn import fold_batch_norms

        module, meta["folded_batch_norms"] = fold_batch_norms(module, sample)
    if ctx.precision == "int8":
        if ctx.calibration is None:
            raise ConfigError("int8 needs calibration data", hint="pass --calib DIR (or use the bundled sample)")
        observer = str(ctx.option("observer", DEFAULT_OBSERVER))
        per_channel = bool(ctx.option("per_channel", True))
        record: dict[str, Any] = {}
        keep_fn = None
        if ctx.keep_fp32:
            from edgeconv.targets.pt2e_keep import map_keep_nodes

            def keep_fn(gm: Any) -> set[str]:
                kept, record["keep_fp32"] = map_keep_nodes(ref.onnx_path, tuple(ctx.keep_fp32), gm, sample, feeds0,
                                                           route="ExecuTorch")
                return kept
        with status("int8: PT2E calibration (XNNPACK quantizer)"):
            module, seen = quantize_pt2e(module, sample, ctx.calibration.feeds(), names=names,
                                         per_channel=per_channel, observer=observer, total=len(ctx.calibration),
                                         keep=keep_fn, record=record)
        meta["quantization"] = {"method": "pt2e", "quantizer": "XNNPACKQuantizer (symmetric int8)",
                                "per_channel": per_channel, "observer": observer, "calibration_samples": seen,
                                **record}
    with status(f"ExecuTorch: torch.export + XNNPACK lowering ({ctx.precision})"):
        try:
            with torch.no_grad():
                ep = torch.export.export(module, sample)
        except Exception as e:
            raise ConversionError(f"torch.export cannot capture the model: {type(e).__name__}: "
                                  f"{' '.join(str(e).split())[:300]}",
                                  hint="make forward() exportable (no data-dependent control flow)") from e
        try:
            edge = to_edge_transform_and_lower(ep, partitioner=[XnnpackPartitioner()])
            program = edge.to_executorch()
        except Exception as e:
            why = f"{type(e).__name__}: {' '.join(str(e).split())[:300]}"
            if ctx.precision == "int8":  # quantized ops need the delegate's kernels
                raise ConversionError(f"ExecuTorch XNNPACK lowering failed: {why}",
                                      hint="an operator XNNPACK cannot take (a PReLU on a 2-D tensor, max(dim) "
                                           "without keepdim); see --verbose, or use another target") from e
            # XNNPACK's own passes reject some graphs outright (a PReLU on a 2-D tensor: "ChannelsLastTaggedReshape
            # Pass"); ExecuTorch's portable kernels run every core ATen op, slower but correct, and verification
            # judges the result as any other
            log.warning("ExecuTorch: the XNNPACK delegate cannot lower this model (%s); lowering to ExecuTorch's "
                        "portable kernels instead (no delegate: slower)", why)
            try:
                with torch.no_grad():
                    ep = torch.export.export(module, sample)
                edge = to_edge_transform_and_lower(ep, partitioner=[])
                program = edge.to_executorch()
            except Exception as e2:
                raise ConversionError(f"ExecuTorch lowering failed: {why}; without the delegate too: "
                                      f"{type(e2).__name__}: {' '.join(str(e2).split())[:200]}",
                                      hint="an operator has no ExecuTorch kernel; see --verbose") from e2
            meta["xnnpack_lowering_failed"] = why
    pte = bytes(program.buffer)
    (ctx.out_dir / MODEL_FILE).write_bytes(pte)
    meta["delegation"] = delegation(edge)
    try:
        meta["probe"] = check_outputs(pte, ref, feeds0)
    except ConversionError as e:  # the runtime cannot load it: say which ops ran outside the delegate
        left = meta["delegation"].get("portable_ops") or {}
        if left:
            e.message = f"{e.message}; outside the XNNPACK delegate: {', '.join(sorted(left))}"
        raise
    meta["io"] = {"inputs": names, "outputs": [s.name for s in ref.outputs]}
    return ConversionResult([MODEL_FILE], {"model": MODEL_FILE}, meta)
