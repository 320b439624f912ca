"""``edgeconv inspect ARTIFACT|ONNX|MODEL``: what a converted artifact (or a model) is, read from its files.

Inputs and outputs, the op histogram of the deployable file (ONNX, OpenVINO IR, ncnn .param) and of its reference,
the weights' element types, how it was made (source, export, simplifier, converter settings, calibration, tool
versions), its verification against the reference, and its size.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from edgeconv.cli import handle_errors
from edgeconv.core.console import emit_json
from edgeconv.core.errors import ConfigError


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def _num(v: Any, fmt: str) -> str:
    return format(v, fmt) if isinstance(v, (int, float)) else "n/a"


# --- inspect --------------------------------------------------------------------------------------------------------


@click.command("inspect")
@click.argument("thing")
@click.option("--weights", "-w", help="Checkpoint, when THING is a FILE.py:FACTORY model.")
@click.option("--input", "inputs", multiple=True, metavar="[NAME:]1x3xHxW[:dtype]",
              help="Model input (repeatable; without NAME the model's own input name).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@handle_errors
def inspect_cmd(thing: str, weights: str | None, inputs: tuple[str, ...], as_json: bool) -> None:
    """What an artifact folder (or an .onnx file, or a model) is: inputs/outputs, ops, precision, how it was made,
    its verification and its size."""
    info = inspect_path(thing, weights=weights, inputs=list(inputs))
    if as_json:
        emit_json(info)
        return
    _print_inspection(info)


def inspect_path(thing: str, *, weights: str | None = None, inputs: list[str] | None = None) -> dict[str, Any]:
    """The ``inspect`` record of an artifact folder, an .onnx file, or a model spec (whose reference ONNX is built,
    from the cache when it is there)."""
    p = Path(thing)
    if p.is_file() and p.name == "manifest.json":
        p = p.parent
    if p.is_dir():
        return _inspect_artifact(p)
    if p.is_file() and p.suffix == ".onnx":
        return {"kind": "onnx", "path": str(p), **_onnx_summary(p), **_size([p])}
    from edgeconv.pipeline import prepare

    prep = prepare(thing, weights=weights, inputs=inputs or None)
    rec = prep.reference.record
    info = {"kind": "model", "path": thing, **_onnx_summary(prep.reference.onnx_path),
            **_size([prep.reference.onnx_path])}
    info["made"] = _made({"source": prep.reference.source.manifest(), "export": rec.get("export"),
                          "simplify": rec.get("simplify")})
    return info


def _tensor(vi: Any) -> dict[str, Any]:
    import onnx

    t = vi.type.tensor_type
    shape = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in t.shape.dim]
    return {"name": vi.name, "shape": shape, "dtype": onnx.helper.tensor_dtype_to_np_dtype(t.elem_type).name}


def _onnx_summary(path: Path) -> dict[str, Any]:
    """Inputs, outputs, op histogram and the element types of the weights of an ONNX file."""
    from collections import Counter

    from edgeconv.core.lazy import require

    onnx = require("onnx", "onnxruntime")
    try:
        m = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # noqa: BLE001 - a file that is not ONNX is the user's input problem
        raise ConfigError(f"{path} is not a readable ONNX model: {type(e).__name__}: {e}") from e
    inits = {i.name for i in m.graph.initializer}
    weights: Counter[str] = Counter()
    for i in m.graph.initializer:
        n = 1
        for d in i.dims:
            n *= d
        weights[onnx.helper.tensor_dtype_to_np_dtype(i.data_type).name] += n
    opset = max((o.version for o in m.opset_import if o.domain in ("", "ai.onnx")), default="?")
    return {"format": f"onnx (opset {opset}, producer {m.producer_name or '?'})",
            "inputs": [_tensor(v) for v in m.graph.input if v.name not in inits],
            "outputs": [_tensor(v) for v in m.graph.output], "ops": dict(Counter(n.op_type for n in m.graph.node)),
            "weight_types": dict(weights)}


def _native_ops(path: Path) -> dict[str, int] | None:
    """Layer-type histogram of an OpenVINO IR (.xml) or an ncnn .param; None for formats read only by a runtime."""
    from collections import Counter

    if path.suffix == ".xml":
        import xml.etree.ElementTree as ET

        return dict(Counter(layer.get("type", "?") for layer in ET.parse(path).getroot().iter("layer")))
    if path.suffix == ".param":
        lines = path.read_text(errors="replace").splitlines()[2:]
        return dict(Counter(line.split()[0] for line in lines if line.split()))
    return None


def _size(files: list[Path]) -> dict[str, Any]:
    total = sum(f.stat().st_size for f in files if f.is_file())
    return {"bytes": total, "size_text": f"{_human(total)} ({', '.join(f.name for f in files)})"}


def _made(m: dict[str, Any]) -> dict[str, str]:
    """How an artifact (or reference) was made, as short lines."""
    src, exp, simp = m.get("source") or {}, m.get("export") or {}, m.get("simplify") or {}
    made = {"source": f"{src.get('kind', '?')} {src.get('spec') or src.get('path') or ''}".strip()}
    if src.get("weights"):
        made["weights"] = f"{Path(str(src['weights'])).name} (sha256 {str(src.get('weights_sha256', ''))[:12]})"
    if exp:
        made["export"] = f"{exp.get('route', '?')}, opset {exp.get('opset', '?')}"
    if simp:
        made["simplify"] = f"{simp.get('simplifier') or 'not simplified'} ({simp.get('nodes_before', '?')} → " \
                           f"{simp.get('nodes_after', '?')} nodes)"
    conv = m.get("conversion") or {}
    keys = ("format", "quantizer", "quant_format", "calib_method", "activation_type", "weight_type", "route")
    if conv:
        made["conversion"] = ", ".join(f"{k} {conv[k]}" for k in keys if conv.get(k) is not None) or "-"
    cal = m.get("calibration")
    if cal:
        made["calibration"] = f"{cal.get('used', cal.get('size', '?'))} inputs from {cal.get('root')} " \
                              f"({cal.get('kind', '?')}, seed {cal.get('seed', 0)})"
    for k in ("keep_fp32", "options"):
        if m.get(k):
            made[k] = str(m[k])
    if m.get("tools"):
        made["tools"] = ", ".join(f"{k} {v}" for k, v in m["tools"].items())
    if m.get("edgeconv"):
        made["edgeconv"] = f"{m['edgeconv']} on {m.get('created', '?')}, cache key {str(m.get('cache_key', ''))[:16]}"
    return made


def _inspect_artifact(path: Path) -> dict[str, Any]:
    from edgeconv.core.artifact import Artifact

    art = Artifact.load(path)
    mf = art.manifest
    model_rel = (mf.get("roles") or {}).get("model")
    model_file = path / model_rel if model_rel else None
    info: dict[str, Any] = {"kind": "artifact", "path": str(path), "target": mf.get("target"),
                            "profile": mf.get("profile_name"), "precision": mf.get("precision"),
                            "inputs": mf.get("inputs"), "outputs": mf.get("outputs")}
    if model_file is not None and model_file.suffix == ".onnx" and model_file.is_file():
        s = _onnx_summary(model_file)
        info.update(format=s["format"], ops=s["ops"], weight_types=s["weight_types"])
    elif model_file is not None and model_file.is_file():
        info["format"] = model_file.suffix.lstrip(".")
        # a format no text walk reads (.mnn, .tflite, .pte): the operator counts its converter recorded
        info["ops"] = _native_ops(model_file) or (mf.get("conversion") or {}).get("operators")
    ref = path / (mf.get("reference") or {}).get("file", "reference.onnx")
    if ref.is_file():
        info["reference_ops"] = _onnx_summary(ref)["ops"]
    info["made"] = _made(mf)
    ver = mf.get("verification") or {}
    d = ver.get("drift") or {}
    if ver:
        tol = ", ".join(f"{k} {'>=' if k in ('cosine', 'snr_db') else '<='} {v}" for k, v in
                        (ver.get("tolerance") or {}).items())
        kinds = ", ".join(f"{n} {k}" for k, n in (ver.get("inputs") or {}).items())  # "16 held-out", "4 real"
        info["verification"] = (f"{ver.get('status')} on {kinds or ver.get('samples')} inputs: max_abs "
                                f"{_num(d.get('max_abs'), '.2e')}, cosine {_num(d.get('cosine'), '.6f')}"
                                f" (tolerance {tol or 'none'}){' [proxy runtime]' if ver.get('proxy') else ''}")
    info["verification_record"] = ver or None
    files = [path / f for f in mf.get("files", {})]
    info.update(_size(files))
    info["files"] = {f: rec.get("bytes") for f, rec in (mf.get("files") or {}).items()}
    return info


def _print_inspection(info: dict[str, Any]) -> None:
    click.echo(f"{info['kind']}: {info['path']}")
    for k in ("target", "profile", "precision", "format"):
        if info.get(k):
            click.echo(f"  {k + ':':<14}{info[k]}")
    for side in ("inputs", "outputs"):
        for s in info.get(side) or []:
            click.echo(f"  {side[:-1] + ':':<14}{s['name']} {'x'.join(map(str, s.get('shape') or []))} "
                       f"{s.get('dtype', '')} {s.get('layout') or ''}".rstrip())
    ops = info.get("ops") or {}
    if ops:
        click.echo(f"  {'ops:':<14}" + ", ".join(f"{k} {v}" for k, v in sorted(ops.items(), key=lambda kv: -kv[1])))
    wt = info.get("weight_types") or {}
    if wt:
        click.echo(f"  {'weight types:':<14}" + ", ".join(f"{k} ({v:,} values)" for k, v in wt.items()))
    for k, v in (info.get("made") or {}).items():
        click.echo(f"  {k + ':':<14}{v}")
    ver = info.get("verification")
    if ver:
        click.echo(f"  {'verified:':<14}{ver}")
    click.echo(f"  {'size:':<14}{info.get('size_text', '')}")


COMMANDS = [inspect_cmd]
