"""The reference model: the verified, simplified ONNX every target is converted from and compared with.

Work happens in a private temp folder named ``edgeconv-ref-<pid>-*``; it is removed when the reference is cached,
at interpreter exit when it is not (``use_cache=False``: the reference lives there for the run), and by the next
run when a killed process could not remove its own. A reference whose own outputs are NaN/Inf is refused here
(export stage, naming the user's file), so no target is ever blamed for it.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgeconv.core import cache
from edgeconv.core.compare import compare_outputs
from edgeconv.core.console import log, status
from edgeconv.core.errors import ConfigError, ModelLoadError
from edgeconv.core.hashing import code_fingerprint, sha256_file, sha256_json
from edgeconv.core.lazy import require, version
from edgeconv.core.tensors import TensorSpec, random_feeds
from edgeconv.export.onnx_export import EXPORTERS, DynamicSpec, check_finite, check_opset, export_verified, onnx_outputs
from edgeconv.export.simplify import simplify
from edgeconv.intake.guard import describe
from edgeconv.intake.loader import SourceModel
from edgeconv.intake.onnx_file import load_user_onnx

REFERENCE_FILE = "reference.onnx"
_ONNX_DT = {1: "float32", 10: "float16", 3: "int8", 2: "uint8", 6: "int32", 7: "int64", 9: "bool", 11: "float64"}


@dataclass
class ReferenceModel:
    onnx_path: Path
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    source: SourceModel
    record: dict[str, Any]
    sha256: str
    dynamic_profiles: dict[str, dict[str, list[int]]] = field(default_factory=dict)

    @property
    def module(self) -> Any:
        return self.source.module

    def random_feeds(self, n: int = 2, seed: int = 0) -> list[dict[str, np.ndarray]]:
        return [random_feeds(self.inputs, seed=seed + i) for i in range(n)]


def graph_specs(path: Path | Any, layout_hint: str | None = "NCHW") -> tuple[list[TensorSpec], list[TensorSpec]]:
    """Input/output names, shapes and dtypes as the ONNX graph (a file or a ModelProto) declares them (outputs via
    shape inference)."""
    onnx = require("onnx", "onnx")
    model = onnx.load(str(path)) if isinstance(path, (str, Path)) else path
    with contextlib.suppress(Exception):  # shape inference is best effort
        model = onnx.shape_inference.infer_shapes(model, strict_mode=False)
    inits = {i.name for i in model.graph.initializer}

    def spec(vi: Any, layout: str | None) -> TensorSpec:
        dims, dyn = [], {}
        for i, d in enumerate(vi.type.tensor_type.shape.dim):
            if d.HasField("dim_value"):
                dims.append(int(d.dim_value))
            else:
                dims.append(-1)
                dyn[i] = d.dim_param or f"d{i}"
        return TensorSpec(vi.name, tuple(dims), _ONNX_DT.get(vi.type.tensor_type.elem_type, "float32"),
                          layout if len(dims) == 4 else None, dyn)

    ins = [spec(v, layout_hint) for v in model.graph.input if v.name not in inits]
    outs = [spec(v, None) for v in model.graph.output]
    return ins, outs


_WORK_PREFIX = "edgeconv-ref-"
_WORK_RE = re.compile(r"^edgeconv-ref-(\d+)-")


def _clean_stale_work() -> None:
    """Remove work folders of edgeconv processes that died before they could (SIGKILL, power cut)."""
    root = Path(tempfile.gettempdir())
    try:
        entries = [p for p in root.iterdir() if p.name.startswith(_WORK_PREFIX)]
    except OSError:
        return
    for p in entries:
        m = _WORK_RE.match(p.name)
        if not m or int(m.group(1)) == os.getpid():
            continue
        try:
            os.kill(int(m.group(1)), 0)
        except ProcessLookupError:
            shutil.rmtree(p, ignore_errors=True)
        except OSError:
            continue


def _new_work() -> Path:
    _clean_stale_work()
    return Path(tempfile.mkdtemp(prefix=f"{_WORK_PREFIX}{os.getpid()}-"))


def _static(d: object) -> bool:
    return isinstance(d, int) and d > 0


def _onnx_source(source: SourceModel, inputs: list[TensorSpec] | None, raw: Path,
                 dynamic: DynamicSpec | None = None, record: dict[str, Any] | None = None) -> list[TensorSpec]:
    """Check the user's ONNX file and write it self-contained to ``raw``; the input specs to feed it with.

    Dimensions the graph leaves open are fixed to ``--input``'s (all but those ``--dynamic`` keeps open), so the
    reference and every converter see the static shapes the model will run at; a dynamic batch alone is fed with
    1; an open image size without ``--input`` is an error (there is no size to guess)."""
    record = {} if record is None else record
    onnx = require("onnx", "onnx")
    model = load_user_onnx(source.onnx_path or source.spec)
    half = _float16_model(model)
    if half is not None:
        model, upcast = half
        record["upcast_from_float16"] = upcast
    onnx.save(model, str(raw))
    g_in, _ = graph_specs(raw)
    if not g_in:
        raise ModelLoadError(f"{source.spec} has no graph inputs", hint="edgeconv converts models with inputs")
    if inputs:
        known = {s.name for s in g_in}
        unknown = [s.name for s in inputs if s.name not in known]
        if unknown:
            raise ConfigError(f"--input names {unknown} are not inputs of {source.spec}",
                              hint=f"graph inputs: {sorted(known)}")
        if _fix_dims(model, inputs, dynamic or DynamicSpec()):
            onnx.save(model, str(raw))
    else:
        for s in g_in:
            open_dims = [s.dynamic.get(i, "?") for i, d in enumerate(s.shape) if i and not _static(d)]
            if open_dims:
                example = "x".join(str(d) if _static(d) else "1" if i == 0 else "C" if i == 1 else "HW"[i - 2]
                                   if len(s.shape) == 4 and i >= 2 else "N" for i, d in enumerate(s.shape))
                raise ConfigError(f"input '{s.name}' of {source.spec} has dynamic dimensions "
                                  f"({', '.join(map(str, open_dims))}): edgeconv needs the size the model runs at",
                                  hint=f"pass --input {s.name}:{example} with the real size")
    specs = inputs or g_in
    if any(not _static(d) for s in specs for d in s.shape):
        log.info("a dynamic batch in %s is fed with 1 for verification", source.spec)
    feeds = [random_feeds(specs, seed=i) for i in range(2)]
    try:
        outs = [onnx_outputs(raw, f) for f in feeds]
    except Exception as e:
        raise ModelLoadError(f"ONNX Runtime cannot run {source.spec}: {describe(e)}",
                             hint="check --input shapes against the graph; the graph may use ops ONNX Runtime lacks"
                             ) from e
    check_finite(outs, source.spec)
    _upgrade_opset(model, raw, feeds, outs, record)
    return specs


#: Per-channel QuantizeLinear/DequantizeLinear (their ``axis``) exist from this opset: an older graph is
#: converted to it so every INT8 route (ONNX Runtime's Q/DQ, MNN and TensorRT from it) and the in-graph
#: post-processing can be built.
MIN_REFERENCE_OPSET = 13


def _upgrade_opset(model: Any, raw: Path, feeds: list[dict[str, np.ndarray]], outs: list[dict[str, np.ndarray]],
                   record: dict[str, Any]) -> None:
    """An ONNX model below opset 13 (UltraFace's opset-9 release) is referenced at opset 13 by ONNX's own
    version converter, when the converted graph gives the same outputs; else the original stays, recorded."""
    onnx = require("onnx", "onnx")
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    if opset is None or opset >= MIN_REFERENCE_OPSET:
        return
    try:
        from onnx import version_converter

        up = version_converter.convert_version(model, MIN_REFERENCE_OPSET)
        data = up.SerializeToString()
        drift = compare_outputs(outs, [onnx_outputs(data, f) for f in feeds])
        diff = float(drift.get("max_abs_scaled", np.inf))
        if not drift["shape_ok"] or not drift.get("finite", False) or diff > 1e-5:
            raise ValueError(f"the converted graph's outputs differ by {diff:.3g} of their scale")
    except Exception as e:  # noqa: BLE001 - the original graph stays the reference; INT8 routes say what fails
        record["opset_upgrade"] = {"from": opset, "to": MIN_REFERENCE_OPSET, "ok": False, "error": describe(e)}
        log.info("kept opset %d (ONNX's version converter to %d: %s); per-channel INT8 needs %d", opset,
                 MIN_REFERENCE_OPSET, describe(e), MIN_REFERENCE_OPSET)
        return
    onnx.save(up, str(raw))
    record["opset_upgrade"] = {"from": opset, "to": MIN_REFERENCE_OPSET, "ok": True, "max_rel_diff": diff}
    log.info("opset %d ONNX model referenced at opset %d (ONNX's version converter; outputs equal to %.1e)", opset,
             MIN_REFERENCE_OPSET, diff)


def _float16_model(model: Any) -> tuple[Any, dict[str, Any]] | None:
    """A float16 ONNX model (``half=True`` exports) as its float32 upcast, with how far the two graphs' outputs are
    apart on noise; None for a model with no float16 inputs or weights.

    Every float16 weight is exact in float32, so the upcast is the model its fp16 graph approximates; it is the
    reference every target (fp32, fp16, int8) is verified against, and calibration feeds it float32 images as
    every backend expects."""
    onnx = require("onnx", "onnx")
    F16 = onnx.TensorProto.FLOAT16
    if not any(v.type.tensor_type.elem_type == F16 for v in model.graph.input) and not any(
            i.data_type == F16 for i in model.graph.initializer):
        return None
    require("onnxslim", "onnxslim")
    from onnxslim.core import convert_data_format

    half_graph = model
    model = onnx.ModelProto.FromString(model.SerializeToString())
    nh = onnx.numpy_helper
    for node in model.graph.node:  # onnx-graphsurgeon keeps Constant nodes as nodes: their fp16 values stay fp16
        for a in node.attribute:
            if node.op_type == "Constant" and a.name == "value" and a.t.data_type == F16:
                a.t.CopyFrom(nh.from_array(nh.to_array(a.t).astype(np.float32), a.t.name))
    up = convert_data_format(model, "fp32")
    rec: dict[str, Any] = {"tool": "onnxslim convert_data_format(fp32)"}
    try:
        g_in, _ = graph_specs(up)
        feeds = random_feeds([s for s in g_in if all(_static(d) for d in s.shape)], seed=0)
        if len(feeds) == len(g_in):
            a = onnx_outputs(up.SerializeToString(), feeds)
            half_in = {v.name for v in half_graph.graph.input if v.type.tensor_type.elem_type == F16}
            b = onnx_outputs(half_graph.SerializeToString(), {k: v.astype(np.float16) if k in half_in else v
                                                          for k, v in feeds.items()})
            rec["max_abs_fp16_graph_vs_upcast"] = float(max(
                np.max(np.abs(np.asarray(a[k], np.float64) - np.asarray(b[k], np.float64)), initial=0.0)
                for k in a if k in b))
    except Exception as e:  # noqa: BLE001 - the comparison is a record, the upcast stands on its own
        rec["compare_error"] = describe(e)
    log.info("float16 ONNX model: its float32 upcast is the reference%s",
             f" (fp16 graph vs upcast on noise: max_abs {rec['max_abs_fp16_graph_vs_upcast']:.2e})"
             if "max_abs_fp16_graph_vs_upcast" in rec else "")
    return up, rec


def _fix_dims(model: Any, inputs: list[TensorSpec], dynamic: DynamicSpec) -> bool:
    """Write ``inputs``' sizes into the graph's open input dimensions (keeping those ``dynamic`` asks for)."""
    by = {s.name: s for s in inputs}
    changed = False
    for vi in model.graph.input:
        spec = by.get(vi.name)
        dims = vi.type.tensor_type.shape.dim
        if spec is None or len(dims) != len(spec.shape):
            continue
        for i, d in enumerate(dims):
            keep = (i == 0 and dynamic.batch) or (dynamic.spatial and len(dims) == 4 and i >= 2)
            if not d.HasField("dim_value") and not keep and _static(spec.shape[i]):
                d.dim_value = int(spec.shape[i])
                changed = True
    if changed:  # stale shapes of intermediate tensors would contradict the fixed ones
        del model.graph.value_info[:]
    return changed


def prepare_reference(source: SourceModel, inputs: list[TensorSpec] | None, *, output_names: list[str] | None = None,
                      opset: int = 17, exporters: tuple[str, ...] = EXPORTERS, dynamic: DynamicSpec | None = None,
                      do_simplify: bool = True, use_cache: bool = True,
                      extra_feeds: list[dict[str, np.ndarray]] | None = None) -> ReferenceModel:
    """Export (unless the source is ONNX), verify, simplify; cached under the hash of everything involved."""
    dynamic = dynamic or DynamicSpec()
    if source.kind != "onnx" and not inputs:
        raise ConfigError("a PyTorch model needs --input SHAPE (e.g. --input 1x3x320x320)")
    if source.kind != "onnx":
        check_opset(opset, tuple(exporters))
    elif any(e not in EXPORTERS for e in exporters):
        raise ConfigError(f"unknown exporter(s) {[e for e in exporters if e not in EXPORTERS]}",
                          hint=f"choose from {list(EXPORTERS)}")
    key = sha256_json({
        "source": source.sha256, "inputs": [s.to_dict() for s in inputs or []], "outputs": output_names,
        "opset": opset, "exporters": list(exporters), "dynamic": dynamic.__dict__, "simplify": do_simplify,
        "tools": {t: version(t) for t in ("torch", "onnx", "onnxscript", "onnxsim", "onnxslim", "onnxruntime")},
        "code": code_fingerprint(),  # the exporter and verifier that made it
    })
    hit = cache.lookup("reference", key) if use_cache else None
    if hit is not None:
        record = json.loads((hit / "record.json").read_text())
        record["cache"] = "hit"
        log.debug("reference ONNX cache hit %s", key)
        path = hit / REFERENCE_FILE
        return _make(path, source, inputs, record, dynamic)

    work = _new_work()
    keep_work = False
    try:
        raw = work / "exported.onnx"
        record: dict[str, Any] = {"cache_key": key}
        if source.kind == "onnx":
            record["export"] = {"route": "onnx-input", "attempts": []}
            specs = _onnx_source(source, inputs, raw, dynamic, record["export"])
        else:
            specs = inputs
            feeds = [random_feeds(specs, seed=i) for i in range(2)] + list(extra_feeds or [])
            with status("exporting to ONNX"):
                record["export"] = export_verified(source.module, specs, output_names, raw, opset=opset,
                                                   exporters=exporters, dynamic=dynamic, sample_feeds=feeds,
                                                   model_name=source.spec)
        feeds = [random_feeds(specs, seed=i) for i in range(2)] + list(extra_feeds or [])
        final = work / REFERENCE_FILE
        with status("simplifying ONNX"):
            record["simplify"] = simplify(raw, final, feeds, enabled=do_simplify)
        out = cache.store("reference", key, _only(work, [REFERENCE_FILE], record)) if use_cache else None
        record["cache"] = "miss" if out is not None else "disabled"
        if out is None:  # not cached (disabled, or the cache is not writable): the work folder lives for the run
            out = work
            keep_work = True
            atexit.register(shutil.rmtree, str(work), True)
        return _make(out / REFERENCE_FILE, source, inputs, record, dynamic)
    finally:
        if not keep_work:
            shutil.rmtree(work, ignore_errors=True)


def _only(work: Path, names: list[str], record: dict[str, Any]) -> Path:
    keep = work / "keep"
    keep.mkdir()
    for n in names:
        shutil.copyfile(work / n, keep / n)
    (keep / "record.json").write_text(json.dumps(record, indent=2, default=str))
    return keep


def _make(path: Path, source: SourceModel, inputs: list[TensorSpec] | None, record: dict[str, Any],
          dynamic: DynamicSpec) -> ReferenceModel:
    g_in, g_out = graph_specs(path)
    by_name = {s.name: s for s in inputs or []}
    ins = [by_name.get(s.name, s) if not s.dynamic else TensorSpec(s.name, by_name[s.name].shape if s.name in by_name
           else s.shape, s.dtype, s.layout, s.dynamic) for s in g_in]
    profiles = {s.name: dynamic.profile(s) for s in ins} if dynamic.enabled else {}
    return ReferenceModel(path, ins, g_out, source, record, sha256_file(path), profiles)
