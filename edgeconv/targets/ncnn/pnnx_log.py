"""Run pnnx in a subprocess with a time limit and judge its result from its files and its log, not its exit code.

pnnx exits 0 even when it leaves operators ncnn cannot run (it writes them into the .param as ``Tensor.slice``,
``pnnx.Expression``, ``F.something`` layers and prints ``... is not supported`` / ``ignore <type> <name> param``
lines), so success means: the .param exists, parses, and every layer type is registered in the ncnn runtime.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeconv.core.errors import ConversionError
from edgeconv.core.lazy import require

# pnnx/ncnn layer type → ONNX op types it usually comes from (to point at the ONNX nodes in error messages).
ONNX_OPS = {"Tensor.slice": ("Slice",), "Tensor.reshape": ("Reshape",), "Tensor.permute": ("Transpose",),
            "torch.gather": ("Gather", "GatherElements"), "Tensor.index": ("Gather",), "Tensor.expand": ("Expand",),
            "F.grid_sample": ("GridSample",), "torch.topk": ("TopK",), "torch.where": ("Where",),
            "pnnx.Expression": ("Add", "Sub", "Mul", "Div", "Pow", "Shape", "Gather"), "torch.flip": ("Slice",),
            "torch.cumsum": ("CumSum",), "torch.nonzero": ("NonZero",), "torchvision.ops.nms": ("NonMaxSuppression",)}

_IGNORE = re.compile(r"^ignore (\S+) (\S+) param (\S+)=(.*)$")
_NOT_SUPPORTED = re.compile(r"(.*\bnot supported\b.*|.*\bunsupported\b.*|.*not exists or registered.*)", re.I)
_FAILED = re.compile(r"(.*(CreateSession failed|failed|error|Error|Segmentation).*)")


@dataclass
class PnnxRun:
    """What one pnnx invocation produced; ``unsupported`` lists layers ncnn cannot run."""

    route: str
    param: Path
    bin: Path
    log: str
    returncode: int | None
    unsupported: list[dict[str, Any]] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.param.is_file() and self.param.stat().st_size > 0 and not self.unsupported


def parse_log(log: str) -> tuple[dict[str, dict[str, str]], list[str]]:
    """(``{layer name: {param: value}}`` from ``ignore`` lines, the failure/unsupported messages)."""
    ignored: dict[str, dict[str, str]] = {}
    messages: list[str] = []
    for line in log.splitlines():
        line = line.strip()
        m = _IGNORE.match(line)
        if m:
            ignored.setdefault(m.group(2), {"type": m.group(1)})[m.group(3)] = m.group(4)
        elif (_NOT_SUPPORTED.match(line) or (_FAILED.match(line) and "LogEarlyWarning" not in line)) \
                and line not in messages:
            messages.append(line)
    return ignored, messages


def unsupported_layers(param: Path, log: str) -> list[dict[str, Any]]:
    """Layers in the .param whose type the ncnn runtime does not register, with their log details."""
    ncnn = require("ncnn", "ncnn")
    ignored, _ = parse_log(log)
    out = []
    for row in param.read_text().splitlines()[2:]:
        tok = row.split()
        if len(tok) < 2:
            continue
        if ncnn.layer_to_index(tok[0]) < 0:
            out.append({"layer": tok[1], "type": tok[0],
                        "params": {k: v for k, v in ignored.get(tok[1], {}).items() if k != "type"}})
    return out


def onnx_suspects(onnx_path: Path | None, layer_type: str) -> list[str]:
    """ONNX nodes of the op types a pnnx layer type comes from (names, for the error message). pnnx keeps an ONNX
    operator it cannot map under its ONNX name (``ReduceMax``), so such a type names its nodes directly."""
    if onnx_path is None:
        return []
    onnx = require("onnx", "onnx")
    model = onnx.load(str(onnx_path), load_external_data=False)
    ops = ONNX_OPS.get(layer_type, (layer_type.removeprefix("onnx."),))
    return [f"{n.name or '?'} ({n.op_type})" for n in model.graph.node if n.op_type in ops]


def run_pnnx(model: Path, workdir: Path, input_shapes: list[tuple[list[int], str]], *, fp16: bool,
             timeout: float, route: str, extra: list[str] | None = None) -> PnnxRun:
    """Run the pnnx executable from its wheel on ``model`` (.onnx or TorchScript .pt) in ``workdir``."""
    pnnx = require("pnnx", "ncnn")
    workdir.mkdir(parents=True, exist_ok=True)
    tag = {"f32": "f32", "float32": "f32", "float16": "f16", "int64": "i64", "int32": "i32"}
    shapes = ",".join(f"[{','.join(str(d) for d in s)}]{tag.get(dt, 'f32')}" for s, dt in input_shapes)
    stem = "model"
    outs = {"pnnxparam": f"{stem}.pnnx.param", "pnnxbin": f"{stem}.pnnx.bin", "pnnxpy": f"{stem}_pnnx.py",
            "pnnxonnx": f"{stem}.pnnx.onnx", "ncnnparam": f"{stem}.ncnn.param", "ncnnbin": f"{stem}.ncnn.bin",
            "ncnnpy": f"{stem}_ncnn.py"}
    cmd = [pnnx.EXEC_PATH, str(model.absolute()), f"inputshape={shapes}", f"fp16={1 if fp16 else 0}",
           *(f"{k}={v}" for k, v in outs.items()), *(extra or [])]
    try:
        proc = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, timeout=timeout, errors="replace")
    except subprocess.TimeoutExpired as e:
        raise ConversionError(f"pnnx did not finish within {timeout:.0f} s and was stopped ({route} route)",
                              hint="raise the ncnn option pnnx_timeout or simplify the model") from e
    log = (proc.stdout or "") + "\n" + (proc.stderr or "")
    (workdir / f"pnnx-{route}.log").write_text(log)
    run = PnnxRun(route, workdir / outs["ncnnparam"], workdir / outs["ncnnbin"], log, proc.returncode)
    _, run.messages = parse_log(log)
    if run.param.is_file():
        run.unsupported = unsupported_layers(run.param, log)
    if proc.returncode not in (0, None) and proc.returncode < 0:
        run.messages.append(f"pnnx crashed (signal {-proc.returncode})")
    return run


def describe_failure(run: PnnxRun, onnx_path: Path | None = None) -> str:
    """One line naming every unsupported operator (type, pnnx layer, its parameters, candidate ONNX nodes)."""
    if not run.param.is_file():
        why = "; ".join(m[:160] for m in run.messages[-2:]) or "no .param written"
        return f"{run.route} route: pnnx produced no ncnn model: {why}"
    parts = []
    by_type: dict[str, list[dict[str, Any]]] = {}
    for u in run.unsupported:  # one entry per operator type: a model repeats the same pattern many times
        by_type.setdefault(u["type"], []).append(u)
    for typ, us in by_type.items():
        params = ", ".join(f"{k}={v}" for k, v in us[0]["params"].items())
        sus = onnx_suspects(onnx_path, typ)
        names = ", ".join(f"'{u['layer']}'" for u in us[:2]) + (", ..." if len(us) > 2 else "")
        parts.append(f"{typ}{f' x{len(us)}' if len(us) > 1 else ''} ({names})" + (f" [{params[:60]}]" if params else "")
                     + (f" from ONNX node(s) {', '.join(sus[:4])}" + (" ..." if len(sus) > 4 else "") if sus else ""))
    notes = [m[:120] for m in run.messages if "not supported" in m.lower()]
    return (f"{run.route} route: ncnn cannot run {len(run.unsupported)} operator(s): " + "; ".join(parts[:6])
            + (f" (+{len(parts) - 6} more)" if len(parts) > 6 else "")
            + (f" (pnnx: {'; '.join(list(dict.fromkeys(notes))[:2])})" if notes else ""))
