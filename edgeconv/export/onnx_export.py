"""torch → ONNX with the dynamo and the legacy exporter, each candidate verified before it is accepted.

Real third-party models break one exporter or the other, so both are tried in a configurable order; a candidate
wins only if ``onnx.checker`` (full check) passes, ONNX Runtime loads it and its outputs match torch on sample inputs.
The manifest records the winner and why every other attempt failed, and the opset each one really used (the
dynamo exporter starts at opset 18: a lower ``--opset`` is raised, and that is said in the log and the record).

The user's forward runs here first (to get torch's reference outputs): whatever it raises, returns None or a
non-tensor, or outputs that are not finite, is reported against the user's model, not as an exporter failure.
TorchScript modules are exported as they are by the legacy exporter, and through ``TS2EPConverter`` (TorchScript
→ ExportedProgram) by the dynamo exporter: wrapping them in a Python module breaks both exporters.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgeconv.core.compare import compare_outputs
from edgeconv.core.console import log, native_output_to
from edgeconv.core.errors import ConfigError, ExportError, MissingDependencyError, ModelLoadError
from edgeconv.core.lazy import require
from edgeconv.core.tensors import TensorSpec
from edgeconv.intake.guard import describe, user_code
from edgeconv.intake.modules import is_script_module, set_eval, walk_modules

#: The order exporters are tried in; the first whose graph verifies is the reference. Legacy (TorchScript) first:
#: on the bundled detector it costs 1.4 s CPU against the dynamo exporter's 7.4 s (torch.export, then the FX → ONNX
#: translation, both paid again by every fresh process), keeps the requested opset (dynamo raises it to 18), and its
#: graphs are what converters have been tested on longest. Dynamo takes the models legacy cannot trace or gets wrong
#: (each attempt is verified against torch); ``--exporter dynamo`` puts it first.
EXPORTERS = ("legacy", "dynamo")
DYNAMO_MIN_OPSET = 18  # torchlib's lowest implementation; lower requests are raised to it


def opset_ranges() -> dict[str, tuple[int, int]]:
    """The opsets each exporter accepts, from this torch's own constants (legacy 7-20, dynamo 18-23 on 2.13)."""
    try:
        from torch.onnx import _constants as c

        lo, legacy_hi = int(c.ONNX_MIN_OPSET), int(c.ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET)
        hi = int(c.ONNX_MAX_OPSET)
    except (ImportError, AttributeError):
        lo, legacy_hi, hi = 7, 20, 23
    return {"legacy": (lo, legacy_hi), "dynamo": (DYNAMO_MIN_OPSET, max(hi, DYNAMO_MIN_OPSET))}


def check_opset(opset: Any, exporters: tuple[str, ...] = EXPORTERS) -> dict[str, int | None]:
    """The opset each exporter will use for ``--opset``: ``None`` where that exporter cannot honour it. A value
    no listed exporter can use is a ConfigError naming every range (call this before loading the model)."""
    bad = [e for e in exporters if e not in EXPORTERS]
    if bad:
        raise ConfigError(f"unknown exporter(s) {bad}", hint=f"choose from {list(EXPORTERS)}")
    ranges = opset_ranges()
    text = ", ".join(f"{e} {ranges[e][0]}-{ranges[e][1]}" for e in exporters)
    if isinstance(opset, bool) or not isinstance(opset, int):
        raise ConfigError(f"--opset must be an integer, not {opset!r}", hint=f"accepted: {text}")
    lo = min(ranges["legacy"][0], *(ranges[e][0] for e in exporters))
    plan: dict[str, int | None] = {}
    for e in exporters:
        e_lo, e_hi = ranges[e]
        if e == "dynamo" and lo <= opset < e_lo:
            plan[e] = e_lo  # raised (said in the log and the record)
        else:
            plan[e] = opset if e_lo <= opset <= e_hi else None
    if all(v is None for v in plan.values()):
        raise ConfigError(f"--opset {opset} is out of range: {text}"
                          + (f" (dynamo raises {lo}-{DYNAMO_MIN_OPSET - 1} to {DYNAMO_MIN_OPSET})"
                             if "dynamo" in exporters else ""),
                          hint=f"e.g. --opset 17 (legacy) or --opset {DYNAMO_MIN_OPSET} (dynamo)")
    return plan


@dataclass
class DynamicSpec:
    """Opt-in dynamic axes: which axes of every image input may vary, and the min/opt/max shapes TensorRT needs."""

    batch: bool = False
    spatial: bool = False
    max_batch: int = 8
    min_hw: tuple[int, int] | None = None
    max_hw: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        if isinstance(self.max_batch, bool) or not isinstance(self.max_batch, int) or self.max_batch < 1:
            raise ConfigError(f"--max-batch must be a positive integer, not {self.max_batch!r}",
                              hint="e.g. --max-batch 8")
        for key in ("min_hw", "max_hw"):
            v = getattr(self, key)
            if v is not None and (len(v) != 2 or any(isinstance(x, bool) or not isinstance(x, int) or x < 1
                                                     for x in v)):
                raise ConfigError(f"dynamic {key} must be two positive integers (H, W), not {v!r}")

    @property
    def enabled(self) -> bool:
        return self.batch or self.spatial

    def axes(self, spec: TensorSpec) -> dict[int, str]:
        out: dict[int, str] = {}
        if self.batch:
            out[0] = "batch"
        if self.spatial and len(spec.shape) == 4:
            h, w = (2, 3) if (spec.layout or "NCHW") == "NCHW" else (1, 2)
            out[h], out[w] = "height", "width"
        return out

    def profile(self, spec: TensorSpec) -> dict[str, list[int]]:
        """min/opt/max shapes for one input, opt being the shape the user gave."""
        opt = list(spec.shape)
        lo, hi = list(opt), list(opt)
        if self.batch:
            lo[0], hi[0] = 1, max(self.max_batch, opt[0])
        if self.spatial and len(opt) == 4:
            h, w = (2, 3) if (spec.layout or "NCHW") == "NCHW" else (1, 2)
            mn = self.min_hw or (max(32, opt[h] // 2), max(32, opt[w] // 2))
            mx = self.max_hw or (opt[h] * 2, opt[w] * 2)
            lo[h], lo[w], hi[h], hi[w] = mn[0], mn[1], mx[0], mx[1]
        return {"min": lo, "opt": opt, "max": hi}


class _Flatten:
    """Builds a wrapper module whose forward returns a flat tuple of tensors.

    Wrapping (instead of exporting the user's module directly) sidesteps nested/dict outputs, which both exporters
    handle differently, and attributes that shadow nn.Module methods: the wrapper's own ``train`` and
    ``named_modules`` (which exporters call, and which recurse into every submodule's same-named method) walk the
    module registries instead of calling the user's shadowed attributes.
    """

    @staticmethod
    def wrap(module: Any) -> Any:
        torch = require("torch", "torch")

        class ExportWrapper(torch.nn.Module):
            def __init__(self, inner: Any) -> None:
                super().__init__()
                self.inner = inner

            def forward(self, *args: Any) -> tuple[Any, ...]:
                return tuple(flatten_outputs(self.inner(*args)))

            def train(self, mode: bool = True) -> Any:
                for _, m in walk_modules(self):
                    if is_script_module(m):
                        m.train(mode)
                    elif "training" in vars(m):
                        object.__setattr__(m, "training", bool(mode))
                return self

            def named_modules(self, memo: set[Any] | None = None, prefix: str = "",
                              remove_duplicate: bool = True) -> Any:
                for name, m in walk_modules(self, dedupe=remove_duplicate):
                    if memo is not None:
                        if m in memo:
                            continue
                        memo.add(m)
                    yield (f"{prefix}.{name}" if prefix and name else prefix or name), m

        wrapper = ExportWrapper(module)
        set_eval(wrapper)
        return wrapper


def flatten_outputs(out: Any) -> list[Any]:
    """Tensors of a model's output in a stable order (tuples/lists in order, dicts by insertion order); ``None``
    entries (an auxiliary output a model returns only in training, ``(y, None)``) are no outputs, as both
    exporters drop them."""
    if out is None:
        return []
    if isinstance(out, dict):
        return [t for v in out.values() for t in flatten_outputs(v)]
    if isinstance(out, (list, tuple)):
        return [t for v in out for t in flatten_outputs(v)]
    return [out]


def torch_outputs(module: Any, feeds: dict[str, np.ndarray], inputs: list[TensorSpec],
                  model_name: str = "the model") -> list[np.ndarray]:
    """Run the user's forward on ``feeds``; anything it raises or returns that is not a tensor is a
    ModelLoadError naming ``model_name`` (the user's own file)."""
    torch = require("torch", "torch")
    shapes = ", ".join(f"{s.name}:{'x'.join(map(str, s.static_shape))}" for s in inputs)
    inner = getattr(module, "inner", module)
    hint = _forward_hint(inner, len(inputs))
    # no_grad, not inference_mode: what a forward caches on its first call (YOLOv8/11 heads keep their anchors)
    # would be an inference tensor, and every later torch.export of the module (the PT2E int8 routes) fails with
    # "Inference tensors cannot be saved for backward".
    with user_code(f"running {model_name} on --input {shapes}", hint=hint), torch.no_grad():
        out = module(*[torch.from_numpy(np.ascontiguousarray(feeds[s.name])) for s in inputs])
    flat = flatten_outputs(out)
    if flat and isinstance(out, (tuple, list, dict)) and _has_none(out):
        log.info("%s returns None among its outputs: not an output of the converted model", model_name)
    bad = [i for i, t in enumerate(flat) if not isinstance(t, torch.Tensor)]
    if not flat or bad:
        what = ("no tensor (None, or only empty containers and None)" if not flat
                else f"{type(flat[bad[0]]).__name__} as output {bad[0]}")
        raise ModelLoadError(f"{model_name} returned {what}; edgeconv converts models whose forward returns tensors "
                             "(a tensor, or tuples/lists/dicts of them)",
                             hint="return the tensors from forward (wrap the model if it returns other objects)")
    return [t.detach().cpu().numpy() for t in flat]


def _has_none(out: Any) -> bool:
    if out is None:
        return True
    vals = out.values() if isinstance(out, dict) else out if isinstance(out, (list, tuple)) else ()
    return any(_has_none(v) for v in vals)


def _forward_hint(module: Any, n_inputs: int) -> str:
    """Say how many inputs forward takes when that is knowable (the commonest cause of a failing first run)."""
    import inspect

    try:
        params = [p for p in inspect.signature(module.forward).parameters.values()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty]
    except (TypeError, ValueError, AttributeError):
        params = None
    if params is not None and len(params) != n_inputs:
        return (f"forward takes {len(params)} required input(s) ({', '.join(p.name for p in params)}) but "
                f"{n_inputs} --input was given: give one --input per input")
    return "check --input (names, shapes, channel count) against what the model expects; --verbose shows where"


def check_finite(outputs: list[list[np.ndarray]] | list[dict[str, np.ndarray]], model_name: str,
                 inputs_desc: str = "the sample inputs") -> None:
    """An ExportError when the reference itself returns NaN/Inf: nothing can be verified against it, and the
    fault is the model's (or its weights', or its inputs'), not a converter's."""
    for i, out in enumerate(outputs):
        items = out.items() if isinstance(out, dict) else enumerate(out)
        for name, a in items:
            a = np.asarray(a)
            if np.issubdtype(a.dtype, np.floating) and not np.isfinite(a).all():
                kind = "NaN" if np.isnan(a).any() else "Inf"
                raise ExportError(f"the reference itself is not finite: {model_name} returns {kind} in output "
                                  f"{name!r} on {inputs_desc} (sample {i})", stage="export",
                                  hint="check the weights and the inputs' value range (--preprocess); a model "
                                       "that outputs NaN/Inf cannot be verified")


def onnx_outputs(path: Path | bytes, feeds: dict[str, np.ndarray], *, optimize: bool = True) -> dict[str, np.ndarray]:
    ort = require("onnxruntime", "onnxruntime")
    so = ort.SessionOptions()
    so.log_severity_level = 3
    if not optimize:
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(str(path) if isinstance(path, Path) else path, so, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(names, feeds), strict=True))


@contextlib.contextmanager
def _native_chatter_to_debug(path: Path, route: str) -> Iterator[None]:
    """What an exporter writes to fd 1/2 inside (the legacy exporter writes its whole TorchScript graph to fd 2
    when it fails: "Torch IR graph at exception", ~175 lines on LPRNet) into ``path``, then into the debug log and
    gone; not the terminal (``--verbose`` leaves it on the terminal)."""
    try:
        with native_output_to(path):
            yield
    finally:
        if path.is_file():
            text = path.read_text(errors="replace")
            if text.strip():
                log.debug("%s exporter output (%d lines):\n%s", route, text.count("\n"), text[-4000:])
            path.unlink()


def _export_one(route: str, wrapper: Any, module: Any, args: tuple, path: Path, inputs: list[TensorSpec],
                output_names: list[str], opset: int, dynamic: DynamicSpec) -> int:
    torch = require("torch", "torch")
    in_names = [s.name for s in inputs]
    script = is_script_module(module)
    sink = io.StringIO()
    with warnings.catch_warnings(), contextlib.redirect_stdout(sink), \
            _native_chatter_to_debug(path.with_name(f"{path.name}.log"), route):
        warnings.simplefilter("ignore")
        logging.getLogger("torch").setLevel(logging.ERROR)
        if route == "legacy":
            dyn = {s.name: dynamic.axes(s) for s in inputs} if dynamic.enabled else None
            if dyn is not None and dynamic.batch:
                dyn.update({n: {0: "batch"} for n in output_names})
            torch.onnx.export(module if script else wrapper, args, str(path), dynamo=False, opset_version=opset,
                              input_names=in_names, output_names=output_names, dynamic_axes=dyn,
                              do_constant_folding=True)
            return opset
        if route == "dynamo":
            require("onnxscript", "torch", target=None)
            dyn_shapes = None
            if dynamic.enabled:
                if script:
                    raise ExportError("dynamic axes are not supported for TorchScript through the dynamo exporter")
                dyn_shapes = tuple({ax: torch.export.Dim.AUTO for ax in dynamic.axes(s)} for s in inputs)
            subject = wrapper
            if script:
                from torch._export.converter import TS2EPConverter

                subject = TS2EPConverter(module, args).convert()
            prog = torch.onnx.export(subject, args, dynamo=True, opset_version=opset, input_names=in_names,
                                     output_names=output_names, dynamic_shapes=dyn_shapes, optimize=True,
                                     verbose=False)
            prog.save(str(path), external_data=False)
            return opset
    raise ExportError(f"unknown exporter '{route}'", hint=f"use one of {EXPORTERS}")


def verify_onnx(path: Path, ref_outputs: list[list[np.ndarray]], feeds: list[dict[str, np.ndarray]],
                output_names: list[str], atol: float) -> dict[str, Any]:
    """Full onnx.checker, loads in ONNX Runtime, outputs match ``ref_outputs`` within ``atol`` (scaled by
    magnitude). Raises ExportError with the reason."""
    onnx = require("onnx", "onnx")
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except Exception as e:
        raise ExportError(f"onnx.checker: {str(e).splitlines()[0]}") from e
    try:
        gots = [onnx_outputs(path, f) for f in feeds]
    except Exception as e:
        raise ExportError(f"onnxruntime cannot run it: {str(e).splitlines()[0][:300]}") from e
    got_lists = [[g[n] for n in output_names] if all(n in g for n in output_names) else list(g.values())
                 for g in gots]
    refs = [dict(zip(output_names, r, strict=True)) for r in ref_outputs]
    got_named = [dict(zip(output_names, g, strict=False)) for g in got_lists]
    drift = compare_outputs(refs, got_named)
    if not drift["shape_ok"]:
        raise ExportError(f"output shapes differ from torch: {drift['per_output']}")
    scale = max(1.0, max(float(np.abs(r).max()) for rr in ref_outputs for r in rr))
    if drift["max_abs"] > atol * scale:
        raise ExportError(f"outputs differ from torch: max_abs {drift['max_abs']:.3g} > {atol * scale:.3g}")
    return drift


def _broken_environment(e: BaseException) -> str | None:
    """The one line for an exporter failure that is the installation's, not the model's: protobuf's runtime older
    than the code onnx was generated with (``VersionError`` at ``import onnx``), or onnx/protobuf not importing."""
    chain: list[BaseException] = []
    cur: BaseException | None = e
    while cur is not None and len(chain) < 8:
        chain.append(cur)
        cur = cur.__cause__ or cur.__context__
    for x in chain:
        mod = type(x).__module__ or ""
        if type(x).__name__ == "VersionError" and mod.startswith("google.protobuf"):
            return f"the protobuf installation does not match onnx's: {str(x).splitlines()[0][:240]}"
        if isinstance(x, ImportError) and (x.name or "").split(".")[0] in ("onnx", "google"):
            return f"{x.name} does not import: {str(x).splitlines()[0][:240]}"
    return None


def export_verified(module: Any, inputs: list[TensorSpec], output_names: list[str] | None, out_path: Path, *,
                    opset: int = 17, exporters: tuple[str, ...] = EXPORTERS, dynamic: DynamicSpec | None = None,
                    sample_feeds: list[dict[str, np.ndarray]], atol: float = 1e-4,
                    model_name: str = "the model") -> dict[str, Any]:
    """Try each exporter in order; keep the first verified graph at ``out_path``. Returns the export record.

    ``model_name`` (the user's file or spec) names the model in every error about its own behaviour.
    """
    dynamic = dynamic or DynamicSpec()
    plan = check_opset(opset, exporters)
    # Always verify on an input the exporter did not trace with: a trace that baked the sample in as a constant
    # would otherwise pass.
    from edgeconv.core.tensors import random_feeds

    sample_feeds = [*sample_feeds, random_feeds(inputs, seed=12345)]
    script = is_script_module(module)
    wrapper = module if script else _Flatten.wrap(module)
    ref = [torch_outputs(wrapper, f, inputs, model_name) for f in sample_feeds]
    check_finite(ref, model_name)
    n_out = len(ref[0])
    if output_names is None:
        output_names = ["output"] if n_out == 1 else [f"output{i}" for i in range(n_out)]
    if len(output_names) != n_out:
        raise ExportError(f"{model_name} returns {n_out} tensor(s) but {len(output_names)} output name(s) were given",
                          hint="give one --output-name per output, or none")
    torch = require("torch", "torch")
    args = tuple(torch.from_numpy(sample_feeds[0][s.name]) for s in inputs)
    attempts: list[dict[str, Any]] = []
    notes: list[str] = []
    for route in exporters:
        used = plan[route]
        if used is None:
            lo, hi = opset_ranges()[route]
            attempts.append({"route": route, "ok": False, "error": f"opset {opset} is outside its range {lo}-{hi}"})
            continue
        if used != opset:
            note = f"the {route} exporter raised opset {opset} to {used} (its minimum)"
            log.info("%s", note)
            notes.append(note)
        cand = out_path.with_name(f"{out_path.stem}.{route}.onnx")
        try:
            used_opset = _export_one(route, wrapper, module, args, cand, inputs, output_names, used, dynamic)
            drift = verify_onnx(cand, ref, sample_feeds, output_names, atol)
        except KeyboardInterrupt:
            raise
        except BaseException as e:  # noqa: BLE001 - an exporter (or the user's forward under it) may raise anything
            broken = _broken_environment(e)
            if broken:  # every exporter would fail alike, and no --opset or exporter choice changes it
                raise MissingDependencyError(broken, hint="reinstall the environment (bash scripts/setup.sh, or pip "
                                             "install -c constraints.txt -e '.[all]'); `edgeconv doctor` checks it"
                                             ) from e
            reason = e.message if isinstance(e, ExportError) else describe(e)
            attempts.append({"route": route, "ok": False, "opset": used, "error": reason})
            log.info("the %s exporter failed (%s)%s", route, reason[:300],
                     "; trying the next" if route != exporters[-1] else "")
            cand.unlink(missing_ok=True)
            continue
        cand.replace(out_path)
        attempts.append({"route": route, "ok": True, "opset": used_opset, "max_abs_vs_torch": drift["max_abs"]})
        return {"route": route, "opset": used_opset, "opset_requested": opset, "opset_notes": notes,
                "attempts": attempts, "output_names": output_names, "max_abs_vs_torch": drift["max_abs"],
                **({"torchscript": "legacy: as is; dynamo: TS2EPConverter"} if script else {})}
    reasons = "; ".join(f"{a['route']}: {a['error']}" for a in attempts)
    raise ExportError(f"no exporter produced a verified ONNX graph for {model_name} ({reasons})",
                      hint="try --opset 18, --exporter legacy, or fix the op the exporter names")
