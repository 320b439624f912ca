"""Reference ONNX → ``.mnn`` with MNNConvert (fp32, fp16 weights); INT8 with MNN's quantization tool.

After conversion the model is opened once with MNN's session API and run on a random input next to the reference:
input and output tensors are matched by name (MNNConvert keeps ONNX names) and checked by shape, so a renamed or
mis-shaped tensor is a conversion error here rather than a confusing verification failure later.  The same probe
lists MNN's operators (names and types), which is what ``keep_fp32`` patterns and ``head_fp32`` are matched on.
"""

from __future__ import annotations

import fnmatch
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

from edgeconv.core.compare import tensor_drift
from edgeconv.core.console import log, status
from edgeconv.core.errors import ConfigError, ConversionError
from edgeconv.targets.base import ConversionResult, ConvertContext
from edgeconv.targets.mnn import calib as mcal
from edgeconv.targets.mnn.tools import ToolRun, describe, mnnconvert, mnnquant

MODEL_FILE = "model.mnn"
# edgeconv's calib_method names → quantized.out's feature_quantize_method ("EMA" is its moving-average min/max).
CALIB_METHODS = {"minmax": "EMA", "entropy": "KL"}
# Chosen by measurement on the bundled detector (benchmarks/results/mnn_int8_*.json): see DEFAULT_* in __init__.
QUANTIZED_OPS = ("Convolution", "ConvolutionDepthwise", "Deconvolution")
# Below this cosine on the calibration sample an EMA quantization has collapsed (quantization noise stays >= 0.95 on
# every model measured: benchmarks/results/thirdparty_*), and KL is tried instead.
EMA_SANITY = 0.9


def _tool_record(run: ToolRun) -> dict[str, Any]:
    return {"ok": run.ok, "returncode": run.returncode, "log_tail": run.tail(8), "unsupported": run.unsupported}


def probe(model: Path, ref: Any) -> tuple[dict[str, Any], list[dict[str, str]]]:
    """Map MNN tensors to reference names (by name, confirmed by shape and value); list MNN's operators."""
    from edgeconv.targets.base import OrtRunner
    from edgeconv.targets.mnn.runner import MnnRunner

    io = {"inputs": {s.name: s.name for s in ref.inputs}, "outputs": {s.name: s.name for s in ref.outputs}}
    feeds = ref.random_feeds(1, seed=123)[0]
    with OrtRunner(ref.onnx_path) as r:
        want = r.infer(feeds)
    try:
        runner = MnnRunner(model, io=io, threads=1, precision_mode="normal")
    except Exception as e:
        raise ConversionError(f"MNN cannot open the converted model: {type(e).__name__}: {e}") from e
    with runner:
        names_in = set(runner.interpreter_inputs())
        names_out = set(runner.interpreter_outputs())
        missing = [n for n in io["inputs"] if n not in names_in] + [n for n in io["outputs"] if n not in names_out]
        if missing:
            raise ConversionError(f"the .mnn model lacks reference tensor(s) {missing} (it has inputs "
                                  f"{sorted(names_in)}, outputs {sorted(names_out)})",
                                  hint="MNNConvert renamed a tensor; give the ONNX outputs unique names")
        got = runner.infer(feeds)
        ops = runner.operators()
    report = {}
    for spec in ref.outputs:
        a, b = want[spec.name], got[spec.name]
        if a.shape != b.shape:
            raise ConversionError(f"MNN output '{spec.name}' has shape {b.shape}, the reference {a.shape}")
        d = tensor_drift(a.ravel(), b.ravel())
        report[spec.name] = {"probe_max_abs": d["max_abs"], "probe_cosine": d["cosine"]}
    return {**io, "probe": report}, ops


def _nodes(onnx_path: Path) -> dict[str, tuple[str, str]]:
    """Reference node name -> (first output tensor: the name MNNConvert gives the operator, ONNX op type)."""
    import onnx

    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    return {n.name: (n.output[0], n.op_type) for n in graph.node if n.name and n.output}


def head_ops(onnx_path: Path) -> list[str]:
    """MNN names of the layers that compute the model outputs (Conv/Gemm/MatMul reached from each output through
    layout-only ops).  MNNConvert names an operator after its node's first output tensor."""
    import onnx

    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    producer = {o: n for n in graph.node for o in n.output}
    passthrough = {"Reshape", "Transpose", "Flatten", "Identity", "Squeeze", "Unsqueeze"}
    heads = []
    for out in graph.output:
        node = producer.get(out.name)
        while node is not None and node.op_type in passthrough:
            node = producer.get(node.input[0])
        if node is not None and node.op_type in ("Conv", "Gemm", "MatMul") and node.output[0] not in heads:
            heads.append(node.output[0])
    return heads


def _computing(ops: list[dict[str, str]], tensor: str) -> list[str]:
    """MNN convolutions that compute ``tensor``: MNNConvert names an operator after its node's first output, and a
    Gemm/MatMul it turns into a convolution ``<tensor>__matmul_converted``.  Only convolutions: skipping other ops
    (BinaryOp, Pooling) by name made quantized.out's graph worse, not better (Yolo-FastestV2: the more ops kept,
    the larger the drop)."""
    return [o["name"] for o in ops if (o["name"] == tensor or o["name"].startswith(tensor + "__"))
            and o["type"].split()[0] in QUANTIZED_OPS]


def _match_ops(ops: list[dict[str, str]], patterns: tuple[str, ...],
               node_outputs: dict[str, str] | None = None, node_types: dict[str, str] | None = None) -> list[str]:
    """MNN operator names selected by keep_fp32 patterns: NAME, glob, or ``op:Type`` (an MNN operator type, or an
    ONNX op type of the reference graph, as ``--keep-fp32`` means it everywhere: ``op:Conv`` is MNN's
    ``Convolution``).

    A reference ONNX node name (what ``--keep-fp32`` and the INT8 float-fallback search use: ``node_linear``) is
    translated to the MNN operators computing that node's output, since MNN does not keep node names.
    """
    node_outputs = node_outputs or {}
    node_types = node_types or {}
    hits: list[str] = []
    for pat in patterns:
        if pat.startswith("op:"):
            found = [o["name"] for o in ops if o["type"].split()[:1] == [pat[3:]]]  # "Convolution [ DT_INT8 ] "
            nodes = [n for n, t in node_types.items() if t == pat[3:] and n in node_outputs] if not found else []
            for node in nodes:
                found += [n for n in _computing(ops, node_outputs[node]) if n not in found]
            if nodes and not found:
                continue  # ONNX ops MNN does not quantize: already float, nothing to skip
        else:
            found = [o["name"] for o in ops if fnmatch.fnmatchcase(o["name"], pat)]
            nodes = fnmatch.filter(node_outputs, pat) if not found else []
            for node in nodes:
                found += [n for n in _computing(ops, node_outputs[node]) if n not in found]
            if nodes and not found:
                # reference nodes MNN does not quantize (Add, Concat, Sigmoid...): already float, nothing to skip
                continue
        if not found:
            raise ConfigError(f"keep_fp32 pattern '{pat}' matches no MNN operator",
                              hint="MNN operator names follow the ONNX node names; op:Conv (ONNX) or "
                                   "op:Convolution (MNN) selects a type")
        hits += [h for h in found if h not in hits]
    return hits


def _int8(ctx: ConvertContext, fp32: Path, work: Path, ops: list[dict[str, str]], meta: dict[str, Any]) -> None:
    from edgeconv.targets.mnn import DEFAULT_BATCH, DEFAULT_FEATURE, DEFAULT_WEIGHT, DEFAULT_WINOGRAD

    if ctx.calibration is None:
        raise ConfigError("int8 needs calibration data", hint="pass --calib DIR (or use the bundled sample)")
    feature = ctx.option("feature_method")
    if feature is None:
        method = ctx.option("calib_method")
        if method is not None and method not in CALIB_METHODS:
            raise ConfigError(f"MNN's quantization tool has no '{method}' activation method",
                              hint="calib_method minmax (EMA) or entropy (KL); or feature_method EMA|KL|ADMM")
        feature = CALIB_METHODS.get(method, DEFAULT_FEATURE)
    weight = str(ctx.option("weight_method", DEFAULT_WEIGHT))
    nodes = _nodes(ctx.reference.onnx_path)
    skip = _match_ops(ops, tuple(ctx.keep_fp32), {n: o for n, (o, _) in nodes.items()},
                      {n: t for n, (_, t) in nodes.items()})
    if ctx.option("head_fp32", False):
        for h in head_ops(ctx.reference.onnx_path):
            skip += [n for n in _computing(ops, h) if n not in skip]
    chosen = ctx.option("feature_method") is not None or ctx.option("calib_method") is not None
    if skip and feature == "EMA":
        if chosen:
            raise ConfigError("MNN's EMA quantization ignores skip_quant_op_names (keep_fp32 / head_fp32)",
                              hint="use feature_method KL or ADMM with keep_fp32, or drop keep_fp32")
        # the default, not the user's choice: KL honours the skip list (the INT8 float-fallback search relies on it;
        # refusing here made every one of its attempts fail)
        log.info("mnn int8: %d layer(s) kept in float: KL activations (EMA ignores skip_quant_op_names)", len(skip))
        meta["feature_method_reason"] = "keep_fp32 with the default method: EMA ignores skip_quant_op_names"
        feature = "KL"
    ref = ctx.reference
    mode = str(ctx.option("calib_input", "auto"))
    why = mcal.images_possible(ctx.calibration, tuple(ref.inputs[0].static_shape), len(ref.inputs))
    if mode == "images" and why:
        raise ConfigError(f"calib_input=images cannot reproduce this calibration set: {why}",
                          hint="use calib_input=tensors (exact) or auto")
    data_dir = work / "calib"
    data = None
    if mode in ("auto", "images") and why is None:
        data = mcal.write_images(ctx.calibration, data_dir)
        if data["contract_max_rel"] > mcal.EXACT:
            if mode == "images":
                raise ConversionError(f"MNN's image preprocessing differs from the contract by "
                                      f"{data['contract_max_rel']:.3g}", hint="use calib_input=tensors")
            log.warning("MNN's image preprocessing differs from the contract by %.3g; feeding tensors instead",
                        data["contract_max_rel"])
            shutil.rmtree(data_dir)
            data = None
    if data is None:
        if feature == "ADMM":
            raise ConfigError("MNN's ADMM calibration on tensor input uses only the last sample (quantized.out "
                              "overwrites its inputs per file)", hint="use feature_method EMA or KL, or image data")
        data = mcal.write_tensors(ctx.calibration, data_dir, [s.name for s in ref.inputs])
    cfg = mcal.quant_config(data, data_dir, feature=str(feature), weight=weight,
                            batch=int(ctx.option("calib_batch", DEFAULT_BATCH)), skip_ops=skip,
                            winograd=bool(ctx.option("winograd", DEFAULT_WINOGRAD)))
    cfg_path = work / "quant.json"
    cfg_path.write_text(json.dumps(cfg, indent=1))
    with status(f"MNN quantization tool ({feature} activations, {weight} weights, {data['written']} samples)"):
        run = mnnquant(fp32, ctx.out_dir / MODEL_FILE, cfg_path, timeout=float(ctx.option("quant_timeout", 1800.0)))
    if not run.ok and feature == "EMA" and cfg["batch_size"] > 1:
        # EMA runs the graph on batches; a graph whose Reshape fixes the batch (a flatten to 1xN) cannot take
        # them ("Reshape error: 8192 -> 256", then a crash): calibrate one sample at a time instead.
        log.warning("%s; retrying with calib_batch 1", describe(run, "MNN quantization tool (batched EMA)"))
        meta["calib_batch_fallback"] = {"from": cfg["batch_size"], "to": 1, "reason": run.tail(2)}
        cfg["batch_size"] = 1
        cfg_path.write_text(json.dumps(cfg, indent=1))
        run = mnnquant(fp32, ctx.out_dir / MODEL_FILE, cfg_path, timeout=float(ctx.option("quant_timeout", 1800.0)))
    if not run.ok:
        raise ConversionError(describe(run, "MNN quantization tool"),
                              hint="try feature_method=EMA|KL|ADMM or another calibration sample")
    if feature == "EMA" and not chosen:
        sanity = int8_sanity(ctx, ctx.out_dir / MODEL_FILE)
        if sanity < EMA_SANITY:
            # quantized.out's EMA collapses on some graphs (CIFAR ResNets: cosine -0.25 on real images, with or
            # without Winograd or batching) where KL on the same sample is at quantization-noise level (0.996)
            log.warning("mnn int8: EMA activations give cosine %.3f on the calibration sample; re-quantizing with KL",
                        sanity)
            cfg = mcal.quant_config(data, data_dir, feature="KL", weight=weight, batch=1, skip_ops=skip)
            cfg_path.write_text(json.dumps(cfg, indent=1))
            with status(f"MNN quantization tool (KL activations, {weight} weights, {data['written']} samples)"):
                run = mnnquant(fp32, ctx.out_dir / MODEL_FILE, cfg_path,
                               timeout=float(ctx.option("quant_timeout", 1800.0)))
            if not run.ok:
                raise ConversionError(describe(run, "MNN quantization tool (KL after EMA)"),
                                      hint="try feature_method=ADMM or another calibration sample")
            meta["feature_fallback"] = {"from": "EMA", "to": "KL", "ema_cosine": sanity,
                                        "kl_cosine": int8_sanity(ctx, ctx.out_dir / MODEL_FILE),
                                        "threshold": EMA_SANITY}
            feature = "KL"
    meta["quantization"] = {
        "tool": "MNN quantized.out", "feature_method": feature, "weight_method": weight,
        "samples": data["written"], "skipped_samples": data["skipped"], "calib_input": data["mode"],
        "contract_max_rel": data["contract_max_rel"], "fp32_ops": skip,
        "config": {k: v for k, v in cfg.items() if k != "path"}, "tool_log": run.tail(4)}


def _weight_int8(ctx: ConvertContext, work: Path, meta: dict[str, Any], timeout: float) -> None:
    """``int8_mode=weight``: MNNConvert's 8-bit weight quantization of the reference (no calibration: activations
    stay float). The artifact is verified like any INT8 one; its manifest says that only weights are int8."""
    if ctx.keep_fp32:
        log.warning("--keep-fp32 does not apply to MNN's weight-only int8 (activations are float); ignored")
    with status("MNNConvert: ONNX → MNN (8-bit weights)"):
        run = mnnconvert(ctx.reference.onnx_path, ctx.out_dir / MODEL_FILE, extra=["--weightQuantBits", "8"],
                         timeout=timeout)
    meta["mnnconvert_weight_quant"] = _tool_record(run)
    if not run.ok:
        raise ConversionError(describe(run, "MNNConvert --weightQuantBits 8"),
                              hint="use int8_mode=full (MNN's quantization tool) or fp16")
    meta["quantization"] = {"tool": "MNNConvert --weightQuantBits 8", "mode": "weight",
                            "activations": "float", "samples": 0}
    meta["int8_route"] = "weight-only (8-bit weights, float arithmetic)"


def int8_sanity(ctx: ConvertContext, model: Path, n: int = 8) -> float:
    """Cosine of the quantized model against the reference on the first ``n`` calibration inputs (all outputs).

    Not the verification (the pipeline does that, on held-out inputs): a cheap check that tells a collapsed
    quantization (cosine far below quantization noise) from an ordinary one, so the target can pick another method.
    """
    import numpy as np

    from edgeconv.targets.base import OrtRunner
    from edgeconv.targets.mnn.runner import MnnRunner

    ref = ctx.reference
    io = {"inputs": {s.name: s.name for s in ref.inputs}, "outputs": {s.name: s.name for s in ref.outputs}}
    calib = ctx.calibration
    skipped = list(calib.skipped)  # type: ignore[union-attr]  # a partial pass must not change what the manifest says
    feeds = []
    for feed in calib.feeds():  # type: ignore[union-attr]
        feeds.append(feed)
        if len(feeds) >= n:
            break
    calib.skipped = skipped  # type: ignore[union-attr]
    want, got = [], []
    with OrtRunner(ref.onnx_path) as r, MnnRunner(model, io=io, threads=1, precision_mode="normal") as m:
        for feed in feeds:
            a, b = r.infer(feed), m.infer(feed)
            want += [np.asarray(a[s.name], np.float64).ravel() for s in ref.outputs]
            got += [np.asarray(b[s.name], np.float64).ravel() for s in ref.outputs]
    if not want:
        return 1.0
    return float(tensor_drift(np.concatenate(want), np.concatenate(got))["cosine"])


def convert(ctx: ConvertContext) -> ConversionResult:
    ref = ctx.reference
    if ctx.precision not in ("fp32", "fp16", "int8"):
        raise ConfigError(f"mnn has no '{ctx.precision}' route", hint="use fp32, fp16 or int8")
    timeout = float(ctx.option("tool_timeout", 300.0))
    work = Path(tempfile.mkdtemp(prefix="edgeconv-mnn-"))
    meta: dict[str, Any] = {"format": "mnn", "converter": "MNNConvert"}
    try:
        fp16 = ctx.precision == "fp16"
        first = work / "fp32.mnn" if ctx.precision == "int8" else ctx.out_dir / MODEL_FILE
        with status("MNNConvert: ONNX → MNN" + (" (fp16 weights)" if fp16 else "")):
            run = mnnconvert(ref.onnx_path, first, fp16=fp16, timeout=timeout)
        meta["mnnconvert"] = _tool_record(run)
        if not run.ok:
            raise ConversionError(describe(run, "MNNConvert"),
                                  hint="MNN lacks these operators: change the model, or pick another target"
                                  if run.unsupported else "see the MNNConvert log with --verbose")
        io, ops = probe(first, ref)
        meta["io"] = {"inputs": io["inputs"], "outputs": io["outputs"]}
        meta["probe"] = io["probe"]
        meta["operators"] = {t: sum(1 for o in ops if o["type"] == t) for t in sorted({o["type"] for o in ops})}
        weight_only = ctx.precision == "int8" and str(ctx.option("int8_mode", "full")) == "weight"
        if weight_only:
            _weight_int8(ctx, work, meta, timeout)
        elif ctx.precision == "int8":
            _int8(ctx, first, work, ops, meta)
        meta["weights_storage"] = {"fp32": "fp32", "fp16": "fp16 (conv/matmul), computed in fp32 on CPUs without "
                                   "fp16 arithmetic", "int8": "int8 (conv), fp32 rest"}[ctx.precision]
        if weight_only:
            meta["weights_storage"] = "int8 (conv/matmul, per-channel symmetric), float activations and arithmetic"
        mode = str(ctx.option("precision_mode"))
        if mode == "low-for-fp16":
            mode = "low" if ctx.precision == "fp16" else "normal"
        meta["runtime"] = {"precision_mode": mode, "memory_mode": ctx.option("memory_mode")}
        meta["output_shapes"] = {s.name: list(s.static_shape) for s in ref.outputs}
        return ConversionResult([MODEL_FILE], {"model": MODEL_FILE}, meta)
    finally:
        shutil.rmtree(work, ignore_errors=True)

