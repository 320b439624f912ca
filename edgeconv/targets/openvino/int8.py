"""INT8 by NNCF post-training quantization, fed by edgeconv's calibration subsystem.

The calibration sample (its preprocessing contract, size and seed) is the same one every other backend calibrates
with, so INT8 results are comparable across backends.  ``--keep-fp32`` entries become an NNCF ``IgnoredScope``
resolved against the OpenVINO graph (ONNX node names carry over as friendly names; ``op:Type`` takes ONNX or
OpenVINO op types).  ``--max-drop`` switches to ``quantize_with_accuracy_control`` with the task metric as the
validation function (see ``validation.py``), which reverts the most damaging layers to float until the budget holds.
"""

from __future__ import annotations

import contextlib
import fnmatch
from collections.abc import Iterator
from typing import Any

from edgeconv.calibration.dataset import CalibrationSet
from edgeconv.core.console import log, status
from edgeconv.core.errors import ConfigError, ConversionError
from edgeconv.core.isolate import child_threads
from edgeconv.core.lazy import require
from edgeconv.targets.base import ConvertContext

COMPUTE_TYPES = ("Convolution", "GroupConvolution", "MatMul", "ConvolutionBackpropData", "GroupConvolutionBackpropData")
# ONNX op types → the OV types they become (OV fuses x*sigmoid(x) into Swish, so op:Sigmoid also protects SiLU)
_ONNX_TO_OV = {"Conv": ("Convolution", "GroupConvolution"), "Gemm": ("MatMul",), "MatMul": ("MatMul",),
               "ConvTranspose": ("ConvolutionBackpropData", "GroupConvolutionBackpropData"),
               "Sigmoid": ("Sigmoid", "Swish"), "Add": ("Add",), "Mul": ("Multiply", "Swish"), "Concat": ("Concat",),
               "MaxPool": ("MaxPool",), "AveragePool": ("AvgPool",), "Resize": ("Interpolate",)}


@contextlib.contextmanager
def nncf_threads(threads: int | None) -> Iterator[None]:
    """While NNCF runs, the models it compiles (statistics, bias correction) use ``threads`` inference threads.

    NNCF compiles on an ``ov.Core()`` of its own and takes no runtime properties, so ``Core.compile_model`` is
    wrapped for the duration (a property the caller set wins). Used with one thread in a forked conversion worker,
    where the plan runs one worker per core: YOLO11n 320, 256 samples, ``nncf.quantize`` costs 13.7 CPU s on one
    thread against 16.9 CPU s (12.1 s wall) on two. ``None``: OpenVINO's default."""
    if not threads:
        yield
        return
    ov = require("openvino", "openvino", target="openvino")
    original = ov.Core.compile_model

    def compile_model(self: Any, model: Any, device_name: str | None = None, config: dict[str, Any] | None = None,
                      **kw: Any) -> Any:
        merged = dict(config or {})
        if (device_name or "CPU").upper().startswith("CPU"):
            merged.setdefault("INFERENCE_NUM_THREADS", threads)
        return original(self, model, device_name, merged or None, **kw)

    ov.Core.compile_model = compile_model
    try:
        yield
    finally:
        ov.Core.compile_model = original


class _Feeds:
    """Re-iterable view of a CalibrationSet: NNCF walks the data more than once (statistics, bias correction)."""

    def __init__(self, calib: CalibrationSet) -> None:
        self.calib = calib

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return self.calib.feeds()

    def __len__(self) -> int:
        return len(self.calib)


def _names(op: Any) -> set[str]:
    """Names a user may call an OV op by: its friendly name (= the ONNX node name) without OV's suffixes, its output
    tensor names, and for conv/matmul the PyTorch module path of its weight (``head`` for ``inner.head.weight``),
    because dynamo-exported ONNX node names (``node_conv2d_2``) mean nothing to the model's author."""
    fn = op.get_friendly_name()
    out = {fn, fn.split("/WithoutBiases")[0]}
    for o in op.outputs():
        out |= set(o.get_names())
    if op.get_type_name() in COMPUTE_TYPES and op.get_input_size() > 1:
        src = op.input(1).get_source_output().get_node()
        while src.get_type_name() in ("Convert", "Subtract", "Multiply", "Reshape") and src.get_input_size():
            src = src.input(0).get_source_output().get_node()
        for n in src.get_output_tensor(0).get_names() | {src.get_friendly_name()}:
            mod = n.rsplit(".weight", 1)[0]
            out |= {mod, mod.removeprefix("inner.")}
    return out


def resolve_ignored_scope(model: Any, patterns: tuple[str, ...]) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """Map ``--keep-fp32`` entries to OV op names/types for ``nncf.IgnoredScope``.

    Returns (scope kwargs, per-pattern matches).  Names are resolved here rather than passed as NNCF regex patterns
    because users write ONNX node names and fnmatch globs. The patterns were already matched against the reference
    graph (``core.keep``: a pattern matching nothing there is the user's error); one that names reference nodes the
    OpenVINO model no longer has (folded into a constant or fused on reading the ONNX, e.g. a Concat of a decode
    head) has nothing left to quantize or protect, and matches ``[]`` here — the float-fallback search ranks
    reference nodes, and refusing those made every one of its attempts a config error.
    """
    ops = list(model.get_ordered_ops())
    ov_types = {op.get_type_name() for op in ops}
    names: set[str] = set()
    types: set[str] = set()
    matched: dict[str, list[str]] = {}
    for p in patterns:
        hits: list[str] = []
        if p.startswith("op:"):
            t = p[3:]
            cand = [t] if t in ov_types else [x for x in _ONNX_TO_OV.get(t, ()) if x in ov_types]
            types.update(cand)
            hits = [op.get_friendly_name() for op in ops if op.get_type_name() in cand]
        else:
            for op in ops:
                if op.get_type_name() in ("Parameter", "Result", "Constant"):
                    continue
                fn = op.get_friendly_name()
                if any(n == p or fnmatch.fnmatchcase(n, p) for n in _names(op)) or fn.startswith(p + "/"):
                    hits.append(fn)
            names.update(hits)
        matched[p] = hits
    return {"names": sorted(names), "types": sorted(types)}, matched


def _int8_weights(op: Any) -> bool:
    """Whether a compute op's weights are quantized: a FakeQuantize, or an int8 Constant behind NNCF's
    decompression chain (Convert → Subtract → Multiply), feeds its weight input.  The activation side is not looked
    at: NNCF puts activation quantizers before a Concat, not on the conv that follows it."""
    if op.get_input_size() < 2:
        return False
    node = op.input(1).get_source_output().get_node()
    for _ in range(8):
        t = node.get_type_name()
        if t == "FakeQuantize":
            return True
        if t == "Constant":
            return node.get_output_element_type(0).get_type_name() in ("i8", "u8", "i4", "u4")
        if t not in ("Convert", "Subtract", "Multiply", "Reshape", "Transpose") or not node.get_input_size():
            return False
        node = node.input(0).get_source_output().get_node()
    return False


def float_compute_layers(model: Any) -> list[str]:
    """Compute layers (conv/matmul) of a quantized model whose weights stayed float, i.e. kept in float."""
    return [op.get_friendly_name() for op in model.get_ordered_ops()
            if op.get_type_name() in COMPUTE_TYPES and not _int8_weights(op)]


def _preset(nncf: Any, name: str) -> Any:
    try:
        return {"performance": nncf.QuantizationPreset.PERFORMANCE, "mixed": nncf.QuantizationPreset.MIXED}[name]
    except KeyError:
        raise ConfigError(f"unknown NNCF preset '{name}'", hint="preset=performance or preset=mixed") from None


def _device(nncf: Any, device: str) -> Any:
    return {"CPU": nncf.TargetDevice.CPU, "GPU": nncf.TargetDevice.GPU, "NPU": nncf.TargetDevice.NPU}.get(
        device.split(".")[0].upper(), nncf.TargetDevice.ANY)


def _overflow_fix(choice: str, device: str) -> str:
    """NNCF's ``OverflowFix`` value for ``choice``.

    Without VNNI (or AMX), the CPU plugin multiplies u8 activations by s8 weights with ``vpmaddubsw``, whose pairwise
    int16 sums saturate; NNCF's fix quantizes weights to 7 bits so they cannot. Its default applies the fix to the
    first layer only. ``auto`` enables it everywhere when the CPU that serves the artifact (this one, for the CPU
    device) lacks VNNI and AMX."""
    if choice == "auto":
        from edgeconv.core.env import isa_features

        isa = isa_features()
        cpu = device.split(".")[0].upper() == "CPU"
        choice = "enable" if cpu and isa.get("AVX2") and not (isa.get("VNNI") or isa.get("AMX")) else "first_layer"
    return {"first_layer": "first_layer_only"}.get(choice, choice)


def quantize(ctx: ConvertContext, model: Any) -> tuple[Any, dict[str, Any]]:
    """Quantize an ov.Model; returns (quantized model, manifest meta)."""
    nncf = require("nncf", "openvino", target="openvino")
    calib = ctx.calibration
    if calib is None:
        raise ConfigError("openvino int8 needs calibration data", hint="pass --calib DIR (or use a bundled model)")
    preset_name = str(ctx.option("preset", "performance")).lower()
    subset = int(ctx.option("subset_size", 0) or min(300, len(calib)))
    fbc = bool(ctx.option("fast_bias_correction", True))
    model_type = nncf.ModelType.TRANSFORMER if ctx.option("model_type") == "transformer" else None
    scope_kw, matched = resolve_ignored_scope(model, ctx.keep_fp32)
    absent = [p for p, hits in matched.items() if not hits]
    if absent:
        log.info("openvino int8: layer(s) to keep in float %s (--keep-fp32 or the float-fallback search): no such "
                 "layer in the OpenVINO model (folded or fused on reading the ONNX): nothing to keep",
                 ", ".join(absent))
    scope = nncf.IgnoredScope(**scope_kw, validate=False) if scope_kw["names"] or scope_kw["types"] else None
    calib_ds = nncf.Dataset(_Feeds(calib))
    overflow = _overflow_fix(str(ctx.option("overflow_fix", "auto")).lower(), ctx.profile.device)
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, OverflowFix

    advanced = AdvancedQuantizationParameters(overflow_fix=OverflowFix(overflow))
    common = {"preset": _preset(nncf, preset_name), "target_device": _device(nncf, ctx.profile.device),
              "subset_size": subset, "fast_bias_correction": fbc, "model_type": model_type, "ignored_scope": scope,
              "advanced_parameters": advanced}
    meta: dict[str, Any] = {"quantizer": "nncf.quantize", "nncf": nncf.__version__, "preset": preset_name,
                            "subset_size": subset, "fast_bias_correction": fbc, "overflow_fix": overflow,
                            "target_device": common["target_device"].value, "ignored_scope": scope_kw,
                            "keep_fp32_matches": matched, "calibration": calib.manifest()}
    max_drop = ctx.option("max_drop")
    if max_drop is None:
        with status(f"NNCF: calibrating on {subset} samples and quantizing"), nncf_threads(child_threads(None)):
            try:
                q = nncf.quantize(model, calib_ds, **common)
            except nncf.errors.ValidationError as e:
                raise ConfigError(f"NNCF rejected the quantization settings: {e}") from e
            except Exception as e:
                raise ConversionError(f"nncf.quantize failed: {type(e).__name__}: {e}") from e
    else:
        from edgeconv.targets.openvino.validation import resolve_validation

        fn, items, vmeta = resolve_validation(ctx)
        val_ds = nncf.Dataset(items, lambda item: item[0] if isinstance(item, tuple) else item)
        meta.update(quantizer="nncf.quantize_with_accuracy_control", max_drop=float(max_drop), validation=vmeta)
        with status(f"NNCF: quantizing with accuracy control (max drop {max_drop} on {vmeta['metric']})"), \
                nncf_threads(child_threads(None)):
            try:
                acc = {k: v for k, v in common.items() if k != "advanced_parameters"}
                q = nncf.quantize_with_accuracy_control(model, calib_ds, val_ds, fn, max_drop=float(max_drop),
                                                        drop_type=nncf.DropType.ABSOLUTE,
                                                        advanced_quantization_parameters=advanced, **acc)
            except Exception as e:
                raise ConversionError(f"nncf.quantize_with_accuracy_control failed: {type(e).__name__}: {e}") from e
        meta["accuracy"] = _score(fn, items, model, q, ctx.profile.device)
        log.info("accuracy control: %s fp32 %.4f → int8 %.4f (budget %.4f)", vmeta["metric"],
                 meta["accuracy"]["fp32"], meta["accuracy"]["int8"], float(max_drop))
    kept = float_compute_layers(q)
    ignored = set(scope_kw["names"])
    meta["float_layers"] = kept
    meta["reverted_by_accuracy_control"] = [k for k in kept if k not in ignored and
                                            k.split("/WithoutBiases")[0] not in ignored] if max_drop is not None else []
    return q, meta


def _score(fn: Any, items: list[Any], fp32: Any, int8: Any, device: str) -> dict[str, float]:
    """The validation metric of the float and the quantized model, so the manifest states the achieved drop."""
    ov = require("openvino", "openvino")
    core = ov.Core()
    cfg = {"INFERENCE_PRECISION_HINT": "f32"}
    a = float(_first(fn(core.compile_model(fp32, device, cfg), items)))
    b = float(_first(fn(core.compile_model(int8, device, cfg), items)))
    return {"fp32": round(a, 5), "int8": round(b, 5), "drop": round(a - b, 5)}


def _first(v: Any) -> Any:
    return v[0] if isinstance(v, tuple) else v
