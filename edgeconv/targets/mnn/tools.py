"""MNN's own converter (MNNConvert) and quantizer (quantized.out) run in a child process with a time limit.

Both tools are the native ``_tools`` extension the ``MNN`` wheel ships, called directly — never through the wheel's
``mnnconvert``/``mnnquant`` Python wrappers: those import ``MNN.tools.utils.log``, which runs
``pip install -U aliyun-log-python-sdk`` when the package is missing (measured: it downgraded protobuf and broke
onnx in this project's venv) and then posts usage logs to a remote service.  MNN 3.6.1's ``mnnquant`` wrapper also
passes its arguments in a form the extension cannot parse (it aborts with ``std::length_error``).  The native
functions take an argv list, exactly like the command-line tools built from MNN's sources.

A child process because the tools are native code that may crash or hang, print progress to stdout, and report
some failures ("These Op Not Support: ONNX::Hardmax", "Converted Failed!") only in their log.
"""

from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from edgeconv.core.errors import ConversionError

_CONVERT = "import sys, _tools; _tools.mnnconvert(['MNNConvert', *sys.argv[1:]])"
_QUANT = "import sys, _tools; _tools.mnnquant(['quantized.out', *sys.argv[1:]])"
_UNSUPPORTED = re.compile(r"These Op Not Support:\s*(.+)")
_ERRORS = re.compile(r"(?i)(error|failed|not support|can't|cannot)")


@dataclass
class ToolRun:
    """One run of an MNN tool: what was asked, what it printed, and whether it produced its output."""

    argv: list[str]
    returncode: int
    log: str
    ok: bool
    unsupported: list[str] = field(default_factory=list)

    def tail(self, n: int = 6) -> list[str]:
        """The last meaningful log lines (progress bars rewrite one line with '\\r': keep the final state)."""
        lines = [ln.split("\r")[-1].strip() for ln in self.log.splitlines()]
        return [ln for ln in lines if ln and "device supports" not in ln][-n:]


def _run(code: str, args: list[str], out: Path, timeout: float, what: str) -> ToolRun:
    argv = [sys.executable, "-c", code, *args]
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, errors="replace")
    except subprocess.TimeoutExpired as e:
        raise ConversionError(f"{what} did not finish within {timeout:.0f} s and was stopped",
                              hint="raise the mnn option 'tool_timeout' or simplify the model") from e
    log = (proc.stdout or "") + (proc.stderr or "")
    unsupported = sorted({op.strip() for m in _UNSUPPORTED.finditer(log) for op in m.group(1).split() if op.strip()})
    ok = proc.returncode == 0 and out.is_file() and out.stat().st_size > 0 and "Converted Failed" not in log
    return ToolRun(args, proc.returncode, log, ok, unsupported)


def describe(run: ToolRun, what: str) -> str:
    """One line naming why a tool run failed: the unsupported operators first, else a crash, else its log."""
    if run.unsupported:
        ops = ", ".join(op.split("::")[-1] for op in run.unsupported)
        return f"{what}: MNN does not support the operator(s) {ops} ({', '.join(run.unsupported)})"
    if run.returncode < 0:
        return f"{what} crashed (signal {-run.returncode}): {' | '.join(run.tail(3))}"
    errs = [ln for ln in run.tail(12) if _ERRORS.search(ln)]
    return f"{what} failed (exit {run.returncode}): {' | '.join(errs[-3:] or run.tail(3))}"


def mnnconvert(onnx_path: Path, out: Path, *, fp16: bool = False, extra: list[str] | None = None,
               timeout: float = 300.0) -> ToolRun:
    """ONNX → .mnn with MNNConvert (``--fp16`` stores conv/matmul weights as half floats)."""
    args = ["-f", "ONNX", "--modelFile", str(onnx_path), "--MNNModel", str(out), "--bizCode", "edgeconv"]
    if fp16:
        args.append("--fp16")
    args += list(extra or [])
    return _run(_CONVERT, args, out, timeout, "MNNConvert")


def mnnquant(src: Path, dst: Path, config: Path, *, timeout: float = 900.0) -> ToolRun:
    """Full-integer INT8 .mnn from an fp32 .mnn and a quantized.out JSON config (calibration data + methods)."""
    return _run(_QUANT, [str(src), str(dst), str(config)], dst, timeout, "MNN quantization tool")
