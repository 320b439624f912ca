"""Reference ONNX → (rewrites) → pnnx → ncnn ``.param``/``.bin``; torch → pnnx as the fallback route.

After pnnx, the produced net is run once on a random input next to the reference, to map pnnx's blob names
(``out0``...) onto the reference outputs by size and value and to reject wrong shapes early: pnnx can be silently
wrong, and the pipeline's verification only sees what the blob table says.

Routes: ``--route onnx`` or ``--route torch`` converts by that route only. Without one, the onnx route is tried
first and the torch route (TorchScript → pnnx, when the PyTorch module is at hand) follows when the first leaves
operators ncnn cannot run, fails, or gives a float model that differs from the reference on the sample inputs;
every attempt is recorded in ``conversion.attempts``. A failure ends in one line naming the operators, their ONNX
nodes and what to try, never pnnx's log (that stays in the attempt record, last lines only).
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from edgeconv.core.compare import compare_outputs, tensor_drift, within
from edgeconv.core.console import log, status
from edgeconv.core.errors import ConfigError, ConversionError, EdgeconvError
from edgeconv.core.lazy import require
from edgeconv.targets.base import ConversionResult, ConvertContext
from edgeconv.targets.ncnn.fuse import optimize_param
from edgeconv.targets.ncnn.pnnx_log import PnnxRun, describe_failure, run_pnnx

MAX_IR = 10  # pnnx's bundled onnxruntime rejects newer IR versions (IR 14 measured: "Unsupported model IR version")

# ncnn2table's default is KL; on the bundled detector KL thresholds cost 1.96 points of mAP50-95 and minmax 0.49
# (benchmarks/results/ncnn_int8_2026-11-25.json), so minmax is the default here; --calib-method entropy selects KL.
DEFAULT_CALIB = "minmax"


def prepare_onnx(onnx_path: Path, out: Path, rewrite: bool = True) -> list[dict[str, Any]]:
    """Write the pnnx input: the reference with ncnn rewrites applied and an IR version pnnx can read."""
    onnx = require("onnx", "onnx")
    from edgeconv.targets.ncnn.rewrites import apply_rewrites

    model = onnx.load(str(onnx_path))
    done: list[dict[str, Any]] = []
    if rewrite:
        model, done = apply_rewrites(model)
    model.ir_version = min(model.ir_version, MAX_IR)
    onnx.save(model, str(out))
    return done


def _input_shapes(ref: Any) -> list[tuple[list[int], str]]:
    return [(list(s.static_shape), s.dtype) for s in ref.inputs]


def _torch_route(ref: Any, work: Path, fp16: bool, timeout: float) -> PnnxRun:
    """pnnx's own route: trace the module to TorchScript and let pnnx convert it (no ONNX rewrites apply)."""
    torch = require("torch", "torch")
    feeds = ref.random_feeds(1)[0]
    args = tuple(torch.from_numpy(feeds[s.name]) for s in ref.inputs)
    # No .eval(): the intake put the model in inference mode without calling methods a model may shadow.
    with torch.no_grad():
        traced = torch.jit.trace(ref.module, args, check_trace=False, strict=False)
    pt = work / "model.pt"
    traced.save(str(pt))
    return run_pnnx(pt, work / "torch", _input_shapes(ref), fp16=fp16, timeout=timeout, route="torch")


def map_blobs(ref: Any, param: Path, bin_: Path) -> tuple[dict[str, dict[str, str]], dict[str, Any]]:
    """Match ncnn input/output blobs to reference names: inputs in order, outputs by size then by value."""
    from edgeconv.targets.base import OrtRunner
    from edgeconv.targets.ncnn import ncnnfile
    from edgeconv.targets.ncnn.runner import NcnnRunner

    layers, _ = ncnnfile.parse_param(param.read_text())
    model = ncnnfile.NcnnModel(layers, 0)
    in_blobs, out_blobs = model.input_blobs, model.output_blobs
    if len(in_blobs) != len(ref.inputs) or len(out_blobs) != len(ref.outputs):
        raise ConversionError(f"pnnx produced {len(in_blobs)} input(s)/{len(out_blobs)} output(s), the reference has "
                              f"{len(ref.inputs)}/{len(ref.outputs)}")
    feeds = ref.random_feeds(1, seed=123)[0]
    with OrtRunner(ref.onnx_path) as r:
        want = r.infer(feeds)
    ins = {s.name: (b, tuple(s.static_shape)) for s, b in zip(ref.inputs, in_blobs, strict=True)}
    probe = NcnnRunner(param, bin_, inputs=ins, outputs={}, runtime={})
    ex = probe.net.create_extractor()
    owned = [np.array(feeds[s.name][0], np.float32, order="C", copy=True) for s in ref.inputs]  # Mat does not own it
    mats = [probe.ncnn.Mat(a) for a in owned]
    for s, m in zip(ref.inputs, mats, strict=True):
        ex.input(ins[s.name][0], m)
    got = {}
    for b in out_blobs:
        ret, mat = ex.extract(b)
        if ret != 0:
            raise ConversionError(f"the ncnn model cannot compute its output blob '{b}' (code {ret})")
        got[b] = np.array(mat, dtype=np.float32, copy=True)
        del mat
    del ex, mats  # Mats and extractors must die before the net: its pool allocator aborts the process otherwise
    probe.close()
    outs, report, free = {}, {}, list(out_blobs)
    for spec in ref.outputs:
        ref_arr = want[spec.name]
        same = [b for b in free if got[b].size == ref_arr.size]
        if not same:
            raise ConversionError(
                f"reference output '{spec.name}' has shape {tuple(ref_arr.shape)} but pnnx produced "
                f"{', '.join(f'{b}{tuple(got[b].shape)}' for b in out_blobs)}",
                hint="pnnx changed a shape (e.g. a reduction keeping an axis); try the torch route or another opset")
        best = max(same, key=lambda b: tensor_drift(ref_arr.ravel(), got[b].ravel())["cosine"])
        free.remove(best)
        outs[spec.name] = best
        d = tensor_drift(ref_arr.ravel(), got[best].ravel())
        report[spec.name] = {"blob": best, "ncnn_shape": list(got[best].shape), "probe_max_abs": d["max_abs"],
                             "probe_cosine": d["cosine"]}
    return {"inputs": {k: v[0] for k, v in ins.items()}, "outputs": outs}, report


def keep_layers(ctx: ConvertContext, run: PnnxRun, blobs: dict[str, dict[str, str]],
                runtime: dict[str, Any]) -> tuple[set[str], dict[str, Any] | None]:
    """The ncnn layers ``--keep-fp32`` keeps in float (its patterns matched on the reference graph, their nodes mapped
    onto the fp32 ncnn net by value, ``layermap``; a pattern no ncnn layer computes is a ConfigError), and a record
    with the node → layer map (None when it could not be made; without --keep-fp32 that only costs the record)."""
    from edgeconv.targets.ncnn import ncnnfile
    from edgeconv.targets.ncnn.layermap import keep_layers as match_layers
    from edgeconv.targets.ncnn.layermap import node_and_tensor_map

    realistic, _ = ctx.blocking_samples()
    probes = list(realistic[:1])  # every probe holds every tensor of both nets in memory: a few, not many
    if ctx.calibration is not None:
        probes.append(next(iter(ctx.calibration.feeds())))
    from edgeconv.core.tensors import random_feeds

    probes.append(random_feeds(ctx.reference.inputs, seed=321, low=-3.0, high=3.0))  # past ReLU-ish thresholds
    try:
        with status("ncnn int8: mapping reference nodes onto ncnn layers"):
            mapping, tensor_blobs = node_and_tensor_map(ctx.reference.onnx_path, run.param, run.bin, blobs["inputs"],
                                                        probes, runtime)
    except Exception as e:
        if ctx.keep_fp32:
            raise ConversionError(f"ncnn: could not map --keep-fp32 onto ncnn layers: {type(e).__name__}: {e}",
                                  hint="drop --keep-fp32 for ncnn, or report the model") from e
        log.debug("ncnn: reference nodes not mapped onto layers (%s)", e)
        return set(), None
    layers, _ = ncnnfile.parse_param(run.param.read_text())
    ctx_map = {"node_layers": mapping, "tensor_blobs": tensor_blobs}
    if not ctx.keep_fp32:
        return set(), ctx_map
    names = [la.name for la in layers if la.type in ("Convolution", "ConvolutionDepthWise", "InnerProduct")] or \
        [la.name for la in layers if la.type != "Input"]
    kept, per_pattern = match_layers(ctx.reference.onnx_path, tuple(ctx.keep_fp32), mapping, names)
    return kept, {**ctx_map, "patterns": per_pattern, "layers": sorted(kept)}


#: ncnn layers whose every top holds its bottom's values (copied, reshaped or reordered): the same absmax.
SAME_VALUES = frozenset({"Split", "Reshape", "Flatten", "Permute", "Noop", "Squeeze", "ExpandDims"})


def shared_absmax(ctx: ConvertContext, tensor_blobs: dict[str, str], input_blobs: dict[str, str],
                  param: Path) -> dict[str, float]:
    """ncnn blob -> absmax over the calibration sample, from the reference's shared minmax statistics (computed once
    for every INT8 target of the plan and cached: the ONNX Runtime, TensorRT and lint paths read the same ones).

    A blob is taken only where ``layermap`` matched it by value to a reference tensor on the probes (so it holds
    that tensor's values, to fp32 rounding); the model inputs' ranges come from the calibration pass's own input
    statistics. Saves the 256 non-light ncnn forwards of the calibration (~9 of the 15 s the ncnn int8 row cost on
    YOLO11n, where ORT had already paid the statistics)."""
    stats = ctx.statistics("minmax")
    out: dict[str, float] = {}
    for t, b in tensor_blobs.items():
        r = stats.ranges.get(t)
        if r is not None and np.isfinite(r).all():
            out[b] = max(out.get(b, 0.0), -float(r[0]), float(r[1]))
    ins = stats.input_stats or {}
    for name, blob in input_blobs.items():
        r = stats.ranges.get(name)
        if r is not None and np.isfinite(r).all():
            out[blob] = max(-float(r[0]), float(r[1]))
        elif name == getattr(ctx.calibration, "input_name", None) and ins.get("min") and ins.get("max"):
            out[blob] = max(-min(ins["min"]), max(ins["max"]))
    from edgeconv.targets.ncnn import ncnnfile

    layers, _ = ncnnfile.parse_param(param.read_text())
    for la in layers:  # topological: a Split's copies and a Concat of known blobs are known too
        if la.type in SAME_VALUES and la.bottoms and la.bottoms[0] in out:
            for t in la.tops:
                out.setdefault(t, out[la.bottoms[0]])
        elif la.type == "Concat" and la.bottoms and all(b in out for b in la.bottoms):
            for t in la.tops:
                out.setdefault(t, max(out[b] for b in la.bottoms))
    return out


def quantized_layers(param: Path) -> list[str]:
    """Names of the layers an ncnn .param runs in int8 (``int8_scale_term``, param 8, set)."""
    from edgeconv.targets.ncnn import ncnnfile

    layers, _ = ncnnfile.parse_param(param.read_text())
    return [la.name for la in layers if la.pint(8)]


def as_layer_patterns(layers: set[str]) -> tuple[str, ...]:
    """Exact ncnn layer names as the fnmatch patterns ``int8.quantize`` takes (glob characters escaped)."""
    return tuple("".join(f"[{c}]" if c in "*?[" else c for c in n) for n in sorted(layers))


ROUTES = ("onnx", "torch")


def route_check(ctx: ConvertContext, run: PnnxRun, blobs: dict[str, dict[str, str]],
                runtime: dict[str, Any], precision: str) -> dict[str, Any] | None:
    """The pnnx output on the sample inputs against the reference, at ``precision``'s tolerance (None: no samples)."""
    from edgeconv.targets.ncnn.runner import NcnnRunner

    feeds, refs = ctx.blocking_samples()
    if not feeds or not refs:
        return None
    ref = ctx.reference
    ins = {s.name: (blobs["inputs"][s.name], tuple(s.static_shape)) for s in ref.inputs}
    outs = {s.name: (blobs["outputs"][s.name], open_shape(s)) for s in ref.outputs}
    runner = NcnnRunner(run.param, run.bin, inputs=ins, outputs=outs, runtime=runtime)
    try:
        gots = [runner.infer(f) for f in feeds]
    finally:
        runner.close()
    drift = compare_outputs(refs, gots)
    tol = {k: v for k, v in ctx.profile.tol(precision).items() if k in ("max_abs", "rel_l2", "cosine", "snr_db")}
    ok, fails = within(drift, tol)
    return {"passed": ok, "failures": fails, "samples": len(feeds), "precision": precision,
            "drift": {k: drift.get(k) for k in ("max_abs", "rel_l2", "cosine") if k in drift}}


def _routes(ctx: ConvertContext) -> tuple[list[str], bool]:
    explicit = ctx.option("route")
    if explicit is not None:
        route = str(explicit).lower()
        if route not in ROUTES:
            raise ConfigError(f"ncnn has no route '{explicit}'", hint=f"routes: {', '.join(ROUTES)}")
        if route == "torch" and ctx.reference.module is None:
            raise ConfigError("ncnn --route torch needs the PyTorch model, but only ONNX was given",
                              hint="pass --model FILE.py:FACTORY --weights ..., or use the default onnx route")
        return [route], True
    torch_ok = ctx.reference.module is not None and bool(ctx.option("torch_fallback", True))
    return ["onnx", *(["torch"] if torch_ok else [])], False


def _failure_hint(ctx: ConvertContext, tried: list[str], unsupported: list[str]) -> str:
    """What to try next: a route not tried yet, else what works around operators ncnn has no kernel for."""
    untried = [r for r in ROUTES if r not in tried]
    if "onnx" in untried:
        return ("try the default onnx route (drop --route torch): edgeconv's exact rewrites (Focus → pixel-unshuffle, "
                "strided slices → pooling) apply only there")
    if "torch" in untried and ctx.reference.module is not None:
        return "try --route torch (pnnx's TorchScript route maps some operators the ONNX route cannot)"
    if "torch" in untried:
        return ("the torch route needs the PyTorch model: pass --model FILE.py:FACTORY --weights ... so it can be "
                "tried; --keep-fp32 does not help (the operator has no ncnn kernel in any precision)")
    if unsupported:
        return (f"ncnn has no kernel for {', '.join(dict.fromkeys(unsupported))} on either route: replace it in the "
                "model, or use a target that runs it (openvino, onnxruntime, tflite)")
    return "see --verbose for pnnx's log; another --opset or exporter may convert"


def convert(ctx: ConvertContext) -> ConversionResult:
    ref = ctx.reference
    if ctx.precision not in ("fp32", "fp16", "int8"):
        raise ConfigError(f"ncnn has no '{ctx.precision}' route", hint="use fp32, fp16 or int8")
    if any(len(s.static_shape) == 0 or None in s.static_shape for s in ref.inputs):
        raise ConfigError("ncnn conversion needs static input shapes", hint="pass --input NAME:1x3xHxW")
    timeout = float(ctx.option("pnnx_timeout", 300))
    fp16_weights = ctx.precision == "fp16"
    routes, explicit = _routes(ctx)
    runtime = {
        "fp16_storage": ctx.precision == "fp16",
        "fp16_arithmetic": ctx.precision == "fp16" and bool(ctx.option("fp16_arithmetic", False)),
        "int8": ctx.precision == "int8",
        "light_mode": bool(ctx.option("light_mode", True)),
        "winograd": not (ctx.precision == "int8" and not ctx.option("int8_winograd", True)),
    }
    float_runtime = {**runtime, "int8": False, "winograd": True}
    check_precision = "fp32" if ctx.precision == "int8" else ctx.precision
    work = Path(tempfile.mkdtemp(prefix="edgeconv-ncnn-"))
    meta: dict[str, Any] = {"format": "ncnn", "converter": "pnnx"}
    try:
        onnx_in = work / "model.onnx"
        if "onnx" in routes:
            with status("rewriting the ONNX graph for ncnn"):
                meta["rewrites"] = prepare_onnx(ref.onnx_path, onnx_in, rewrite=bool(ctx.option("rewrites", True)))
            for r in meta["rewrites"]:
                log.info("ncnn rewrite: %s (%s)", r["rewrite"], ", ".join(r["nodes"]))
        attempts: list[dict[str, Any]] = []
        failures: list[str] = []
        unsupported: list[str] = []
        chosen: tuple[PnnxRun, dict[str, Any], dict[str, Any]] | None = None
        candidates: list[tuple[PnnxRun, dict[str, Any], dict[str, Any], dict[str, Any]]] = []
        for route in routes:
            rec: dict[str, Any] = {"route": route, "ok": False}
            attempts.append(rec)
            try:
                with status(f"pnnx: {'ONNX' if route == 'onnx' else 'TorchScript'} → ncnn"):
                    run = run_pnnx(onnx_in, work / "onnx", _input_shapes(ref), fp16=fp16_weights, timeout=timeout,
                                   route="onnx") if route == "onnx" else _torch_route(ref, work, fp16_weights, timeout)
            except EdgeconvError as e:
                rec["error"] = e.message if hasattr(e, "message") else str(e)
                failures.append(f"{route} route: {rec['error']}")
                continue
            except Exception as e:  # noqa: BLE001 - tracing user code: any failure is this route's failure
                rec["error"] = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:300]
                failures.append(f"{route} route: {rec['error']}")
                continue
            rec.update(unsupported=run.unsupported, messages=[m[:200] for m in run.messages[-5:]])
            if not run.ok:
                failures.append(describe_failure(run, onnx_in if route == "onnx" else None))
                unsupported += [u["type"] for u in run.unsupported]
                continue
            if not run.bin.exists():
                run.bin.write_bytes(b"")
            if ctx.option("fuse", True):
                rec["fused_swish"] = optimize_param(run.param)
                if rec["fused_swish"]:
                    log.info("ncnn: %d Split+Sigmoid+Mul fused into Swish", len(rec["fused_swish"]))
            try:
                blobs, probe = map_blobs(ref, run.param, run.bin)
            except ConversionError as e:
                rec["error"] = e.message
                failures.append(f"{route} route: {e.message}")
                continue
            check = None if explicit else route_check(ctx, run, blobs, float_runtime, check_precision)
            rec.update(ok=check is None or check["passed"], check=check)
            if check is None or check["passed"]:
                chosen = (run, blobs, probe)
                break
            failures.append(f"{route} route differs from the reference: {'; '.join(check['failures'])}")
            log.warning("ncnn %s route differs from the reference (%s)%s", route, "; ".join(check["failures"]),
                        "; trying the next route" if route != routes[-1] else "")
            candidates.append((run, blobs, probe, check))
        if chosen is None and candidates:  # none matched: keep the closest; verification names its drift
            run, blobs, probe, _ = min(candidates, key=lambda c: c[3]["drift"].get("rel_l2", float("inf")))
            chosen = (run, blobs, probe)
        if chosen is None:
            tried = [a["route"] for a in attempts]
            raise ConversionError("ncnn: " + " | ".join(failures), hint=_failure_hint(ctx, tried, unsupported))
        if len(attempts) > 1:
            log.info("ncnn: converted by the %s route after: %s", chosen[0].route, " | ".join(failures))
        run, blobs, probe = chosen
        meta["route"] = run.route
        meta["attempts"] = attempts
        meta["blobs"] = blobs
        meta["probe"] = probe
        meta["output_shapes"] = {s.name: list(open_shape(s)) for s in ref.outputs}
        files = ["model.param", "model.bin"]
        if ctx.precision == "int8":
            if ctx.calibration is None:
                raise ConfigError("int8 needs calibration data", hint="pass --calib DIR (or use the bundled sample)")
            from edgeconv.targets.ncnn.int8 import quantize

            kept, keep_record = keep_layers(ctx, run, blobs, float_runtime)
            method = str(ctx.option("calib_method", DEFAULT_CALIB))
            known: dict[str, float] = {}
            if keep_record is not None and method == "minmax":  # kl/entropy measure on ncnn itself
                known = shared_absmax(ctx, keep_record.get("tensor_blobs") or {}, blobs["inputs"], run.param)
            with status("ncnn int8: calibrating and quantizing weights"):
                meta["int8"] = quantize(run.param, run.bin, ctx.out_dir / "model.param", ctx.out_dir / "model.bin",
                                        ctx.calibration, blobs["inputs"],
                                        method=method, known_absmax=known, known_samples=len(ctx.calibration),
                                        keep_fp32=as_layer_patterns(kept), table=ctx.out_dir / "model.table",
                                        keep_output_blobs=frozenset(blobs["outputs"].values())
                                        if ctx.option("keep_outputs_fp32", False) else frozenset(),
                                        winograd=bool(ctx.option("int8_winograd", True)))
            files.append("model.table")
            if keep_record is not None:
                node_layers = keep_record.pop("node_layers")
                keep_record.pop("tensor_blobs", None)
                if ctx.keep_fp32:
                    meta["int8"]["keep_fp32"] = keep_record
                # reference nodes ncnn computes in float anyway (every non-conv/fc layer, kept and skipped ones): the
                # float-fallback search skips them instead of spending an attempt on no change
                int8_layers = set(quantized_layers(ctx.out_dir / "model.param"))
                meta["float_layers"] = sorted(n for n, la in node_layers.items() if la not in int8_layers)
                meta["node_layers"] = node_layers
        else:
            shutil.copyfile(run.param, ctx.out_dir / "model.param")
            shutil.copyfile(run.bin, ctx.out_dir / "model.bin")
        meta["weights_storage"] = {"fp32": "fp32", "fp16": "fp16", "int8": "int8 (conv/fc), fp32 rest"}[ctx.precision]
        meta["runtime"] = runtime
        roles = {"model": "model.param", "weights": "model.bin"}
        if ctx.precision == "int8":
            roles["table"] = "model.table"
        return ConversionResult(files, roles, meta)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def open_shape(spec: Any) -> tuple[int, ...]:
    """An output's shape with the dims the reference leaves open (``--dynamic spatial``: an FCN's H and W) as -1,
    so the runner takes them from the mat instead of demanding a size of 1."""
    return tuple(d if isinstance(d, int) and d > 0 else -1 for d in spec.shape)
