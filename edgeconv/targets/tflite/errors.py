"""litert-torch / TFLite failures as one line naming the operator and what to try, instead of an MLIR dump.

Three kinds are recognised: an MLIR verifier error on a ``tfl.<op>`` (e.g. ``tfl.pad`` "same scale constraint",
operands that do not broadcast), a kernel that refuses to prepare (``Node number 62 (SOFTMAX) failed to prepare``:
wrong fixed quantization parameters), and an op litert-torch cannot lower (``aten._local_scalar_dense``: a
``.item()`` in forward). Anything else keeps its first line.
"""

from __future__ import annotations

import re

from edgeconv.core.errors import ConversionError

#: TFLite op (as MLIR or the interpreter name it) -> ONNX op type, for ``--keep-fp32 op:TYPE``
TFL_TO_ONNX = {"pad": "Pad", "padv2": "Pad", "softmax": "Softmax", "logistic": "Sigmoid", "tanh": "Tanh",
               "add": "Add", "sub": "Sub", "mul": "Mul", "div": "Div", "concatenation": "Concat", "conv_2d": "Conv",
               "depthwise_conv_2d": "Conv", "transpose_conv": "ConvTranspose", "fully_connected": "Gemm",
               "batch_matmul": "MatMul", "mean": "ReduceMean", "sum": "ReduceSum", "reduce_max": "ReduceMax",
               "max_pool_2d": "MaxPool", "average_pool_2d": "AveragePool", "resize_nearest_neighbor": "Resize",
               "resize_bilinear": "Resize", "reshape": "Reshape", "transpose": "Transpose", "strided_slice": "Slice",
               "gather": "Gather", "hard_swish": "HardSwish", "log_softmax": "LogSoftmax", "maximum": "Max",
               "minimum": "Min", "split": "Split", "exp": "Exp", "square": "Mul", "rsqrt": "Sqrt", "pow": "Pow"}

_MLIR = re.compile(r"'tfl\.(\w+)' op ([^\n;]+)")
_PREPARE = re.compile(r"([\w/]+\.cc:\d+ [^\n]*?)\s*Node number (\d+) \((\w+)\) failed to (prepare|invoke)")
_LOWERING = re.compile(r"(aten\.\w+(?:\.\w+)?)")
_LEGALIZE = re.compile(r"(?:(\S+\.py:\d+):\d+: )?error: failed to legalize operation 'tfl\.(\w+)'")


def explain(e: BaseException, precision: str, keep_fp32: tuple[str, ...] = ()) -> ConversionError:
    """A ConversionError with one line and a hint that names something that works."""
    text = f"{e}"
    m = _MLIR.search(text)
    if m:
        op, why = m.group(1), m.group(2).strip()[:160]
        at = re.search(rf"([^\s\"']+\.py:\d+):\d+:\s*error:\s*'tfl\.{op}'", text)  # the model's line: the one
        where = f", from {_short(at.group(1))}" if at else ""  # thing a user needs to find the op
        return ConversionError(f"litert-torch cannot build tfl.{op} ({precision}){where}: {why}", stage="convert",
                               hint=_hint(op, precision, why, keep_fp32))
    m = _LEGALIZE.search(text)
    if m:
        where, op = m.group(1), m.group(2)
        return ConversionError(f"litert-torch's converter has no TFLite form of tfl.{op} as this model uses it "
                               f"({precision})" + (f", from {where}" if where else ""), stage="convert",
                               hint=_hint(op, precision, "", keep_fp32))
    m = _PREPARE.search(text)
    if m:
        op, why = m.group(3).lower(), m.group(1).strip()[:160]
        return ConversionError(f"the TFLite {m.group(3)} kernel (node {m.group(2)}) refuses the {precision} model: "
                               f"{why}", stage="convert", hint=_hint(op, precision, why, keep_fp32))
    if ("_local_scalar_dense" in text or "data-dependent" in text.lower() or "Abstract tracer value" in text
            or type(e).__name__ == "ConcretizationTypeError"):
        return ConversionError(
            f"litert-torch cannot lower a tensor-to-Python-number call in forward ({precision}): "
            f"{_first_line(text)}", stage="convert",
            hint="the model calls .item()/float()/int() on a tensor in forward; compute it once outside forward "
                 "(edgeconv already runs the model once before tracing, so first-call caches such as anchors work)")
    lowering = _LOWERING.findall(text) if "lowering" in text.lower() or "not found" in text.lower() else []
    if lowering:
        return ConversionError(f"litert-torch has no TFLite lowering for {lowering[0]} ({precision})",
                               stage="convert", hint="use another target (onnxruntime, openvino) or rewrite that op")
    return ConversionError(f"litert-torch conversion failed ({precision}): {type(e).__name__}: {_first_line(text)}",
                           stage="convert", hint="--verbose shows litert-torch's log")


def _short(location: str) -> str:
    """``/long/path/models/SINet.py:524`` -> ``models/SINet.py:524`` (the file and its folder)."""
    parts = location.replace("\\", "/").split("/")
    return "/".join(parts[-2:])


def _first_line(text: str, limit: int = 200) -> str:
    """The first non-empty line, cut at a word boundary with an ellipsis (a cut mid-token read as a typo)."""
    line = next((x.strip() for x in text.splitlines() if x.strip()), "")
    if len(line) <= limit:
        return line
    cut = line[:limit].rsplit(" ", 1)[0]
    return (cut if len(cut) > limit // 2 else line[:limit]) + " …"


def _hint(op: str, precision: str, why: str, keep_fp32: tuple[str, ...]) -> str:
    onnx_op = TFL_TO_ONNX.get(op)
    tries = []
    if precision == "int8":
        if onnx_op and f"op:{onnx_op}" not in keep_fp32:
            tries.append(f"--keep-fp32 op:{onnx_op} (keeps those layers in float)")
        tries.append("--option int8_mode=dynamic (float activations)")
    if "broadcast" in why.lower():
        tries.append("an explicit expand/reshape in the model so both operands have the same rank")
    tries.append("fp16 or another target (onnxruntime, openvino run it)")
    return "try " + "; or ".join(tries)
