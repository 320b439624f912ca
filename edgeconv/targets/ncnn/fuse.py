"""Layer fusions on a pnnx-written ncnn ``.param`` that pnnx misses and the wheel's missing ``ncnnoptimize`` would do.

pnnx's ONNX route folds ``a + x * sigmoid(x)`` (a residual add after a SiLU: every YOLOv8/11 bottleneck) into one
``pnnx.Expression`` before it looks for SiLU, so each such SiLU reaches ncnn as ``Split`` → ``Sigmoid`` →
``BinaryOp(mul)``: two passes over the tensor and a copy where one ``Swish`` layer does one (YOLO11n: 11 of its 77
SiLUs; Ultralytics' TorchScript route gets all 77). ``Swish`` computes ``x / (1 + exp(-x))``, the same function;
the pipeline verifies the fused net against the reference like any other artifact.

Only layers without weights are touched, so the ``.bin`` stream is unchanged.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from pathlib import Path

from edgeconv.targets.ncnn.ncnnfile import Layer, NcnnModel, count_blobs, parse_param

MUL = 2  # BinaryOp op_type (param 0) of a multiplication


def fuse_swish(layers: list[Layer]) -> tuple[list[Layer], list[str]]:
    """``Split(x) → {x₁, x₂}; Sigmoid(x₂) → s; BinaryOp mul(x₁, s)`` becomes ``Swish(x)`` (the Split keeps any other
    consumers of ``x``); returns a new layer list (``layers`` is not modified) and the fused multiplications' names."""
    layers = [replace(la, bottoms=list(la.bottoms), tops=list(la.tops)) for la in layers]
    producer = {t: la for la in layers for t in la.tops}
    uses = Counter(b for la in layers for b in la.bottoms)
    drop: set[int] = set()
    fused: list[str] = []
    out: list[Layer] = []
    for la in layers:
        if la.type == "BinaryOp" and la.pint(0) == MUL and not la.pint(1) and len(la.bottoms) == 2:
            for direct, s in (la.bottoms, la.bottoms[::-1]):
                sig, split = producer.get(s), producer.get(direct)
                if (sig is None or sig.type != "Sigmoid" or uses[s] != 1 or split is None
                        or split.type != "Split" or len(sig.bottoms) != 1 or producer.get(sig.bottoms[0]) is not split
                        or uses[sig.bottoms[0]] != 1 or uses[direct] != 1):
                    continue
                split.tops = [t for t in split.tops if t != sig.bottoms[0]]
                if len(split.tops) == 1:  # x had only these two consumers: the Split goes, Swish reads x itself
                    drop.add(id(split))
                    source = split.bottoms[0]
                else:
                    source = direct
                drop.add(id(sig))
                la = Layer("Swish", la.name, [source], list(la.tops))
                fused.append(la.name)
                break
        out.append(la)
    return [la for la in out if id(la) not in drop], fused


def optimize_param(param: Path) -> list[str]:
    """Apply the fusions to ``param`` in place; the names of what was fused (empty: the file is left as it was)."""
    layers, _ = parse_param(param.read_text())
    layers, fused = fuse_swish(layers)
    if fused:
        tmp = param.with_suffix(".fused.tmp")
        tmp.write_text(NcnnModel(layers, count_blobs(layers)).param_text())
        tmp.replace(param)
    return fused
