"""Reading a user's ``.onnx`` file: every way it can be broken is reported against that file, with a hint.

Corrupt or truncated protobufs, external-data files that are missing, graphs onnx.checker rejects, operators of a
custom domain that ONNX Runtime cannot run, zero-size or absurd input shapes: all are faults of the user's file
(model-load errors), found here before any work, instead of an internal error somewhere in simplification.
External data is loaded from the file's own folder and the graph is re-serialised as one self-contained file, so
the reference never depends on where the user keeps the weights.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgeconv.core.errors import ConfigError, ModelLoadError
from edgeconv.core.lazy import require
from edgeconv.core.tensors import check_shape
from edgeconv.intake.guard import describe

#: Operator domains ONNX Runtime's CPU build implements; anything else is a custom op it cannot run.
STANDARD_DOMAINS = {"", "ai.onnx", "ai.onnx.ml", "com.microsoft", "ai.onnx.preview.training", "com.ms.internal.nhwc",
                    "pkg.onnxscript.torch_lib.common", "ai.onnx.training"}
MAX_PROTO = 2_000_000_000  # protobuf's 2 GiB limit for one serialised message


def load_user_onnx(path: str | Path) -> Any:
    """The checked ``ModelProto`` of the user's file (external data inlined); ModelLoadError naming ``path``."""
    onnx = require("onnx", "onnx")
    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(f"ONNX file {path} does not exist")
    if path.stat().st_size == 0:
        raise ModelLoadError(f"ONNX file {path} is empty", hint="re-export the model; the file was not written")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # DecodeError, RuntimeWarning-as-error, ...
        raise ModelLoadError(f"{path} is not a readable ONNX model ({describe(e)})",
                             hint="the file may be truncated or not ONNX; re-export it") from e
    missing = _missing_external(model, path.parent)
    if missing:
        raise ModelLoadError(f"{path} keeps weights in external data file(s) that are missing: {', '.join(missing)}",
                             hint="keep the .onnx file and its external data files in the same folder")
    try:
        from onnx.external_data_helper import load_external_data_for_model

        load_external_data_for_model(model, str(path.parent))
    except Exception as e:
        why = describe(e)
        outside = "outside the directory" in why or "absolute path" in why
        raise ModelLoadError(f"cannot read the external data of {path}: {why}",
                             hint="external data must be a relative path inside the model's folder (nothing "
                                  "outside it was read)" if outside
                             else "the external data file may be truncated; re-export the model") from e
    if model.ByteSize() > MAX_PROTO:
        raise ModelLoadError(f"{path} is larger than 2 GiB with its weights; such models are not supported yet",
                             hint="export a smaller model, or convert this one with the backend's own tools")
    if not model.graph.node:
        raise ModelLoadError(f"{path} has an empty graph (no nodes)", hint="re-export the model")
    custom = sorted({n.domain for n in model.graph.node if n.domain not in STANDARD_DOMAINS})
    if custom:
        ops = sorted({f"{n.domain}::{n.op_type}" for n in model.graph.node if n.domain in custom})
        raise ModelLoadError(f"{path} uses custom operator(s) {', '.join(ops[:4])} that ONNX Runtime cannot run",
                             hint="export without custom ops (or replace them with standard ONNX ops)")
    default = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    newest = onnx.defs.onnx_opset_version()
    if default is not None and default > newest:
        raise ModelLoadError(f"{path} uses ONNX opset {default}; the installed onnx {onnx.__version__} knows opsets "
                             f"up to {newest}", hint=f"re-export it at opset {newest} or lower (e.g. 17)")
    try:
        onnx.checker.check_model(model)
    except Exception as e:
        raise ModelLoadError(f"{path} is not a valid ONNX model: {describe(e)}",
                             hint="re-export it (onnx.checker rejects the graph as written)") from e
    _check_inputs(model, path)
    return model


def _missing_external(model: Any, base: Path) -> list[str]:
    from onnx.external_data_helper import _get_all_tensors, uses_external_data

    missing = []
    for t in _get_all_tensors(model):
        if uses_external_data(t):
            loc = next((e.value for e in t.external_data if e.key == "location"), None)
            if loc is None or not (base / loc).is_file():
                missing.append(str(loc))
    return sorted(set(missing))


def _check_inputs(model: Any, path: Path) -> None:
    inits = {i.name for i in model.graph.initializer}
    for vi in model.graph.input:
        if vi.name in inits:
            continue
        dims = [d.dim_value if d.HasField("dim_value") else -1 for d in vi.type.tensor_type.shape.dim]
        try:
            check_shape(vi.name, tuple(dims), "float32", f"{path}")
        except ConfigError as e:
            raise ModelLoadError(e.message, hint="the graph declares an input no real tensor can have; re-export "
                                                 "it with the real input shape") from e
