"""litert-torch conversion: the torch module → .tflite (fp32, fp16 weights, PT2E int8, dynamic-range int8).

The module is wrapped so that (a) its outputs are a flat tuple in the reference ONNX's output order, and (b) for
NHWC, inputs arrive channel-last and 4-D outputs leave channel-last (litert-torch's ``to_channel_last_io``).  After
conversion the .tflite signature is read back and every TFLite input/output is matched to a reference name by
position *and checked by shape*; that mapping (``meta['io']``) is what the runner uses, so a reordered or
mis-shaped output is a conversion error, not a silent mismatch.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Iterator
from typing import Any

import numpy as np

from edgeconv.core.console import log, status
from edgeconv.core.errors import ConfigError, ConversionError, EdgeconvError
from edgeconv.core.lazy import require
from edgeconv.core.tensors import TensorSpec
from edgeconv.targets.base import ConversionResult, ConvertContext, flat_module
from edgeconv.targets.pt2e_observers import DEFAULT_OBSERVER

MODEL_FILE = "model.tflite"
INT8_MODES = ("static", "dynamic")


def resolve_layout(ctx: ConvertContext) -> str:
    """``layout`` option first (per call), then the profile's layout: NHWC is the mobile convention."""
    layout = str(ctx.option("layout") or ctx.profile.layout or "NCHW").upper()
    if layout not in ("NCHW", "NHWC"):
        raise ConfigError(f"tflite layout must be NCHW or NHWC, not {layout!r}")
    return layout


def prepare_module(module: Any, inputs: list[TensorSpec], outputs: list[TensorSpec], layout: str) -> Any:
    """The module litert-torch traces: flat outputs, and channel-last I/O for 4-D tensors when NHWC.

    A separate function so tests can corrupt the conversion here and prove verification catches it.
    """
    import litert_torch

    flat = flat_module(module)
    if layout != "NHWC":
        return flat
    ins = [i for i, s in enumerate(inputs) if len(s.shape) == 4]
    outs = [i for i, s in enumerate(outputs) if len(s.shape) == 4]
    return litert_torch.to_channel_last_io(flat, args=ins, outputs=outs)


def _inference_flag(wrapper: Any) -> None:
    """``training = False`` on edgeconv's own wrapper modules (not on the user's: see convert())."""
    import torch

    stack = [wrapper]
    while stack:
        m = stack.pop()
        if type(m).__module__.startswith(("edgeconv.", "litert_torch.")):
            object.__setattr__(m, "training", False)
            stack.extend(v for v in m.__dict__.get("_modules", {}).values() if isinstance(v, torch.nn.Module))


def warm_up(module: Any, sample: tuple[Any, ...]) -> None:
    """Run the model once before tracing, as Ultralytics does before its exports: heads that compute anchors on
    their first call (``if self.anchors is None: ... stride.item()``) then trace with concrete anchors instead of
    ``aten._local_scalar_dense``, which litert-torch cannot lower."""
    import torch

    try:
        with torch.no_grad():
            module(*sample)
    except Exception as e:
        raise ConversionError(f"the model fails on a sample input in PyTorch: {type(e).__name__}: {e}".splitlines()[0],
                              hint="check --input shapes; the reference ONNX was exported from the same model") from e


def _tensor_layout(spec: TensorSpec, layout: str) -> str:
    return "NHWC" if layout == "NHWC" and len(spec.shape) == 4 else "NCHW"


def _to_layout(x: np.ndarray, tensor_layout: str) -> np.ndarray:
    return np.transpose(x, (0, 2, 3, 1)) if tensor_layout == "NHWC" else x


def _expected_shape(spec: TensorSpec, tensor_layout: str) -> tuple[int | None, ...]:
    """The shape the .tflite tensor must have, None where the reference leaves a dim open (the batch is 1: the
    converter traces one sample)."""
    s = tuple(d if isinstance(d, int) and d > 0 else (1 if i == 0 else None) for i, d in enumerate(spec.shape))
    return (s[0], s[2], s[3], s[1]) if tensor_layout == "NHWC" else s


def _index(name: str) -> int:
    m = re.search(r"(\d+)$", name)
    return int(m.group(1)) if m else 0


def map_io(model: bytes, inputs: list[TensorSpec], outputs: list[TensorSpec], layout: str) -> dict[str, Any]:
    """Match the .tflite signature's tensors to reference names: by position (litert names them ``args_N`` /
    ``output_N`` in trace order), confirmed by shape; if positions disagree with shapes, fall back to unique
    shapes; otherwise fail loudly."""
    from edgeconv.targets.tflite.runner import open_interpreter

    interp = open_interpreter(model_content=model)
    sigs = interp.get_signature_list()
    if len(sigs) != 1:
        raise ConversionError(f"expected one signature in the .tflite model, found {list(sigs)}")
    key = next(iter(sigs))
    runner = interp.get_signature_runner(key)
    in_det, out_det = runner.get_input_details(), runner.get_output_details()

    def match(kind: str, specs: list[TensorSpec], det: dict[str, Any]) -> list[dict[str, Any]]:
        names = sorted(det, key=_index)
        if len(names) != len(specs):
            raise ConversionError(f"the .tflite model has {len(names)} {kind}s but the reference has {len(specs)}",
                                  hint="the module's forward must return what the reference ONNX outputs")
        want = [_expected_shape(s, _tensor_layout(s, layout)) for s in specs]
        got = {n: tuple(int(d) for d in det[n]["shape"]) for n in names}
        chosen = list(names)

        def fits(g: tuple[int, ...], w: tuple[int | None, ...]) -> bool:  # None: an open dim (--dynamic)
            return len(g) == len(w) and all(b is None or a == b for a, b in zip(g, w, strict=True))

        if not all(fits(got[n], w) for n, w in zip(names, want, strict=True)):
            by_shape = {}
            for w in want:
                hits = [n for n in names if fits(got[n], w)]
                if len(hits) != 1 or want.count(w) != 1:
                    raise ConversionError(
                        f"cannot map .tflite {kind}s to the reference: shapes {[got[n] for n in names]} vs expected "
                        f"{want}", hint="report this model; the converter changed the I/O signature")
                by_shape[w] = hits[0]
            chosen = [by_shape[w] for w in want]
            log.warning("tflite %s order differs from the reference; mapped by shape: %s", kind, chosen)
        rows = []
        for spec, n in zip(specs, chosen, strict=True):
            d = det[n]
            scale, zp = d.get("quantization", (0.0, 0))
            rows.append({"tflite": n, "reference": spec.name, "shape": list(got[n]),
                         "layout": _tensor_layout(spec, layout), "dtype": np.dtype(d["dtype"]).name,
                         "scale": float(scale), "zero_point": int(zp)})
        return rows

    return {"signature": key, "inputs": match("input", inputs, in_det), "outputs": match("output", outputs, out_det)}


@contextlib.contextmanager
def integer_powers_as_products() -> Iterator[None]:
    """While tracing, ``x ** 2`` is ``x * x`` and ``x ** n`` (a Python int) ``x ** float(n)``.

    Why: YOLOv5's head computes ``(y[..., 2:4] * 2) ** 2 * anchor_grid`` on a 5-D tensor; litert-torch lowers it
    to ``tfl.pow`` with an integer exponent, which its converter then refuses ("failed to legalize operation
    'tfl.pow'"), so every YOLOv5-family model failed at fp32 and int8. ``x * x`` is what torch computes for
    ``pow(x, 2)`` anyway (the same bits) and a MUL every TFLite kernel set has, int8 included.
    """
    import torch
    from torch.overrides import TorchFunctionMode

    pows = {torch.pow, torch.Tensor.pow, torch.Tensor.__pow__}

    class _Powers(TorchFunctionMode):
        def __torch_function__(self, func: Any, types: Any, args: tuple[Any, ...] = (),
                               kwargs: dict[str, Any] | None = None) -> Any:
            kwargs = kwargs or {}
            if (func in pows and len(args) == 2 and not kwargs and isinstance(args[0], torch.Tensor)
                    and type(args[1]) is int and args[0].is_floating_point()):
                base, exp = args
                return base * base if exp == 2 else func(base, float(exp))
            return func(*args, **kwargs)

    with _Powers():
        yield


def float_model(ctx: ConvertContext, torch: Any, litert_torch: Any, wrapped: Any, sample: tuple[Any, ...],
                layout: str, meta: dict[str, Any]) -> bytes:
    """The fp32 flatbuffer, or for fp16 that flatbuffer with its weights cast to fp16 by ai-edge-quantizer (what
    litert-torch's ``full_fp16_recipe`` does after the same fp32 lowering: byte-identical output). The fp32
    lowering — batch norms folded, litert-torch convert: nearly all of the time — is a stage the fp32 and fp16 rows
    of one reference and layout share, so the second costs a cast instead of a conversion."""
    def lower() -> dict[str, bytes]:
        from edgeconv.targets.fold_bn import fold_batch_norms

        folded, n = fold_batch_norms(wrapped, sample)  # (int8 never comes here: PT2E folds them itself)
        with status(f"litert-torch: converting (fp32, {layout})"), torch.no_grad(), integer_powers_as_products():
            edge = litert_torch.convert(folded, sample)
        return {MODEL_FILE: bytes(edge.model_content()), "stage.json": json.dumps({"folded_batch_norms": n}).encode()}

    files, hit = ctx.stage_files("tflite-fp32", {"layout": layout}, lower)
    meta["folded_batch_norms"] = json.loads(files["stage.json"])["folded_batch_norms"]
    meta["fp32_lowering"] = "shared stage (cache)" if hit else "converted"
    model = files[MODEL_FILE]
    if ctx.precision == "fp16":
        from litert_torch.generative.quantize import quant_recipes
        from litert_torch.quantize import translate_recipe

        recipe = translate_recipe.translate_to_ai_edge_recipe(quant_recipes.full_fp16_recipe().generative_recipe)
        with status("ai-edge-quantizer: fp16 weights"):
            model = bytes(translate_recipe.quantize_model(model, recipe))
        meta["quantization"] = "fp16 weights (float compute), ai-edge-quantizer float_casting"
    return model


def convert(ctx: ConvertContext) -> ConversionResult:
    """Convert ``ctx.reference.module`` with litert-torch and write ``model.tflite`` into ``ctx.out_dir``."""
    ref = ctx.reference
    if ref.module is None:
        raise ConfigError("tflite converts from the PyTorch model (litert-torch), but only ONNX was given",
                          hint="pass --model FILE.py:FACTORY --weights ... instead of an .onnx file")
    torch = require("torch", "torch")
    litert_torch = require("litert_torch", "tflite")
    from litert_torch._config import config as lt_config

    from edgeconv.core.console import log as _log

    lt_config.show_progress = _log.isEnabledFor(10)  # litert-torch's own step log only with --verbose
    layout = resolve_layout(ctx)
    int8_io = bool(ctx.option("int8_io", False))
    int8_mode = str(ctx.option("int8_mode", "static")).lower()
    if int8_mode not in INT8_MODES:
        raise ConfigError(f"tflite int8_mode must be one of {INT8_MODES}, not {int8_mode!r}")
    if ctx.precision == "int8" and int8_mode == "dynamic" and int8_io:
        raise ConfigError("int8_io needs full-integer (static) int8; dynamic-range int8 keeps float I/O",
                          hint="drop int8_io or use int8_mode=static")
    if ctx.keep_fp32 and ctx.precision != "int8":
        log.warning("--keep-fp32 only applies to int8; ignored for %s", ctx.precision)

    # The user's module itself, wrapped, never deep-copied: a model holding a Python module (or a lock, a file) as an
    # attribute cannot be copied ("cannot pickle 'module' object"), and torch.export / PT2E do not modify it (they
    # trace and build new graph modules). The wrappers are put in inference mode by flag, not by .eval(), which
    # would call methods a model may shadow (``self.train = {...}``); the intake already did it for the model.
    wrapped = prepare_module(ref.module, ref.inputs, ref.outputs, layout)
    _inference_flag(wrapped)
    sample = tuple(torch.from_numpy(np.ascontiguousarray(_to_layout(x, _tensor_layout(s, layout))))
                   for s, x in zip(ref.inputs, (ref.random_feeds(1)[0][s.name] for s in ref.inputs), strict=True))
    warm_up(wrapped, sample)
    meta: dict[str, Any] = {"format": "tflite", "converter": "litert-torch", "layout": layout}
    quant_config = None
    if ctx.precision == "int8":
        from litert_torch.quantize.quant_config import QuantConfig

        from edgeconv.targets.tflite.int8 import pt2e_quantize, torch_feeds

        dynamic = int8_mode == "dynamic"
        feeds = None
        if not dynamic:
            if ctx.calibration is None:
                raise ConfigError("int8 needs calibration data", hint="pass --calib DIR (or use the bundled sample)")
            names = [s.name for s in ref.inputs]
            lay = {s.name: _tensor_layout(s, layout) for s in ref.inputs}
            feeds = torch_feeds(ctx.calibration.feeds(), names, lambda n, x: _to_layout(x, lay[n]))
        record: dict[str, Any] = {}
        keep_fn = None
        if ctx.keep_fp32:
            from edgeconv.targets.pt2e_keep import map_keep_nodes

            onnx_feeds = ref.random_feeds(1)[0]

            def keep_fn(gm: Any) -> set[str]:
                kept, record["keep_fp32"] = map_keep_nodes(ref.onnx_path, tuple(ctx.keep_fp32), gm, sample,
                                                           onnx_feeds)
                return kept
        with status("int8: PT2E calibration" if not dynamic else "int8: dynamic-range PT2E"):
            wrapped, quantizer, seen = pt2e_quantize(
                wrapped, sample, feeds, dynamic=dynamic, per_channel=bool(ctx.option("per_channel", True)),
                observer=str(ctx.option("observer", DEFAULT_OBSERVER)).lower(),
                total=len(ctx.calibration) if ctx.calibration is not None and not dynamic else None,
                keep=keep_fn, record=record)
        quant_config = QuantConfig(pt2e_quantizer=quantizer)
        meta["quantization"] = {"method": "pt2e", "mode": int8_mode, "per_channel": bool(ctx.option("per_channel",
                                                                                                     True)),
                                "calibration_samples": seen, "int8_io": int8_io,
                                "observer": None if dynamic else str(ctx.option("observer", DEFAULT_OBSERVER)).lower(),
                                **record}
    elif ctx.precision not in ("fp32", "fp16"):
        raise ConfigError(f"tflite has no '{ctx.precision}' route", hint="use fp32, fp16 or int8")

    try:
        if ctx.precision in ("fp32", "fp16"):
            model = float_model(ctx, torch, litert_torch, wrapped, sample, layout, meta)
        else:
            with status(f"litert-torch: converting ({ctx.precision}, {layout})"), torch.no_grad():
                model = bytes(litert_torch.convert(wrapped, sample, quant_config=quant_config).model_content())
        if ctx.precision == "int8" and int8_mode == "static" and not int8_io:
            from edgeconv.targets.tflite.int8 import add_float_io

            model, changed = add_float_io(model)
            meta["float_io_added"] = changed
        (ctx.out_dir / MODEL_FILE).write_bytes(model)
        meta["io"] = map_io(model, ref.inputs, ref.outputs, layout)
    except EdgeconvError:
        raise
    except Exception as e:
        from edgeconv.targets.tflite.errors import explain

        raise explain(e, ctx.precision, ctx.keep_fp32) from e
    in_types = sorted({r["dtype"] for r in meta["io"]["inputs"]})
    log.debug("tflite I/O mapping: %s", meta["io"])
    return ConversionResult([MODEL_FILE], {"model": MODEL_FILE}, meta, input_layout=layout,
                            verify_note=None if in_types == ["float32"] else f"quantized I/O {in_types}: "
                            "the runner (de)quantizes with the model's scales")
