"""Validation functions for NNCF's accuracy control: the task metric, pluggable or derived from the task info.

Resolution order (first that applies):
1. ``ctx.option("validation_fn")``: a callable or ``"module:callable"`` with NNCF's signature
   ``fn(compiled_model, items) -> float`` (higher is better), plus ``ctx.option("validation_data")``: a list of items
   (``feeds`` dicts or ``(feeds, label)`` tuples) or a callable returning one.
2. The artifact's task info (``ctx.task``, i.e. ``prep.info`` of a bundled model, or ``ctx.option("task")``):
   ``detection`` → COCO mAP50-95 of the bundled decoder on the first ``validation_size`` images of the held-out eval
   split; ``classification`` → top-1 accuracy.

Why the metric and not tensor drift: accuracy control reverts layers until the *task* loses at most ``max_drop``;
drift-based budgets over-protect layers whose error never changes a box.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from edgeconv.core.errors import ConfigError
from edgeconv.targets.base import ConvertContext

Validation = tuple[Callable[[Any, Sequence[Any]], float], list[Any], dict[str, Any]]


def named_outputs(compiled: Any, result: Any, names: Sequence[str]) -> dict[str, np.ndarray]:
    """An OV result keyed by the reference output names (tensor names carried over from ONNX, else by position)."""
    out: dict[str, np.ndarray] = {}
    for i, port in enumerate(compiled.outputs):
        pn = port.get_names()
        name = next((n for n in names if n in pn), names[i] if i < len(names) else port.get_any_name())
        out[name] = np.asarray(result[port])
    return out


def _task(ctx: ConvertContext) -> dict[str, Any]:
    task = getattr(ctx, "task", None) or ctx.option("task") or {}
    return {"task": task} if isinstance(task, str) else dict(task)


def resolve_validation(ctx: ConvertContext) -> Validation:
    """(validation_fn, items, manifest meta) for ``--max-drop``; ConfigError when none can be found."""
    fn = ctx.option("validation_fn")
    if fn is not None:
        from edgeconv.bench.plugins import load_callable

        fn = load_callable(fn) if isinstance(fn, str) else fn
        data = ctx.option("validation_data")
        if data is None:
            raise ConfigError("validation_fn given without validation_data",
                              hint="pass options={'validation_data': [...]} (items your function understands)")
        items = list(data() if callable(data) else data)
        return fn, items, {"metric": str(ctx.option("validation_metric", getattr(fn, "__name__", "custom"))),
                           "source": "option", "size": len(items)}
    task = _task(ctx)
    n = int(ctx.option("validation_size", 100))
    if task.get("task") == "detection":
        return detection_validation(ctx, task, n)
    if task.get("task") == "classification":
        return classification_validation(ctx, task, n)
    raise ConfigError("--max-drop needs a validation function (task metric), and none is known for this model",
                      hint="use a bundled model (zoo:NAME), or pass options validation_fn + validation_data")


def _contract(ctx: ConvertContext) -> Any:
    from edgeconv.pipeline import default_preprocess

    pre = getattr(ctx, "preprocess", None) or (ctx.calibration.preprocess if ctx.calibration else None)
    return pre or default_preprocess(ctx.reference)


def detection_validation(ctx: ConvertContext, task: dict[str, Any], n: int) -> Validation:
    """mAP50-95 (pycocotools) of the bundled decoder on the first ``n`` images of the detection eval split."""
    from edgeconv.bench.datasets import load_detection_labels
    from edgeconv.bench.metrics import coco_map
    from edgeconv.bench.plugins import load_callable
    from edgeconv.zoo.data import eval_split

    post = load_callable(task.get("postprocess") or "edgeconv.bench.detection:decode_yolo")
    pre = _contract(ctx)
    name = ctx.reference.inputs[0].name
    outs = [o.name for o in ctx.reference.outputs]
    samples = load_detection_labels(eval_split("detection"))[:n]
    items = [({name: pre.apply(pre.load(p))}, (boxes, classes)) for p, boxes, classes in samples]

    def map50_95(compiled: Any, data: Sequence[Any]) -> float:
        preds, gts = [], []
        for feeds, gt in data:
            preds.extend(post(named_outputs(compiled, compiled(feeds), outs)))
            gts.append(gt)
        return float(coco_map(preds, gts)["map50_95"])

    return map50_95, items, {"metric": "map50_95", "source": "task:detection", "size": len(items),
                             "split": "edgeconv.zoo.data.eval_split('detection')"}


def classification_validation(ctx: ConvertContext, task: dict[str, Any], n: int) -> Validation:
    """Top-1 accuracy on ``n`` images spread over the classification eval split."""
    from edgeconv.bench.datasets import load_imagefolder
    from edgeconv.zoo.data import eval_split

    pre = _contract(ctx)
    name = ctx.reference.inputs[0].name
    out = ctx.reference.outputs[0].name
    samples, _ = load_imagefolder(eval_split("classification"))
    samples = samples[:: max(1, len(samples) // n)][:n]
    items = [({name: pre.apply(pre.load(p))}, c) for p, c in samples]

    def top1(compiled: Any, data: Sequence[Any]) -> float:
        hits = [int(np.argmax(named_outputs(compiled, compiled(f), [out])[out])) == c for f, c in data]
        return float(np.mean(hits)) if hits else 0.0

    return top1, items, {"metric": "top1", "source": "task:classification", "size": len(items)}
