"""Validation functions for NNCF's accuracy control, built from what the context carries.

Resolution order:
1. ``ctx.option("validation_fn")``: a ``"module:callable"`` with NNCF's signature ``fn(compiled_model, items) ->
   float`` (higher is better), plus ``ctx.option("validation_data")``: ``"module:callable"`` returning the items
   (``feeds`` dicts or ``(feeds, label)`` tuples).
2. ``ctx.evaluator``: the held-out task evaluator the caller injected (the bundled eval split for ``zoo:`` models,
   or the user's labelled data), scored by its task metric. The target never imports bench or zoo.

Why the metric and not tensor drift: accuracy control reverts layers until the *task* loses at most ``max_drop``;
drift-based budgets over-protect layers whose error never changes a box. Scores are fractions (0.01 = 1 point),
the unit ``--max-drop`` is given in.
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


def resolve_validation(ctx: ConvertContext) -> Validation:
    """(validation_fn, items, manifest meta) for ``--max-drop``; ConfigError when none can be found."""
    from edgeconv.core.plugins import load_callable

    fn = ctx.option("validation_fn")
    if fn is not None:
        data = ctx.option("validation_data")
        if data is None:
            raise ConfigError("validation_fn given without validation_data",
                              hint="set validation_data = 'module:callable' returning the items")
        fn = load_callable(fn) if isinstance(fn, str) else fn
        data = load_callable(data) if isinstance(data, str) else data
        items = list(data() if callable(data) else data)
        metric_name = ctx.option("validation_metric") or getattr(fn, "__name__", "custom")
        return fn, items, {"metric": metric_name, "source": "option", "size": len(items)}
    ev = ctx.evaluator
    if ev is None:
        raise ConfigError("--max-drop needs a validation function (a task metric on held-out data), and none is "
                          "known for this model",
                          hint="use a bundled model (zoo:NAME), pass labelled --eval data with --task, or set the "
                               "validation_fn/validation_data options")
    names = [o.name for o in ctx.reference.outputs]

    def metric(compiled: Any, items: Sequence[Any]) -> float:
        outs = [named_outputs(compiled, compiled(f), names) for f, _ in items]
        return ev.score(outs, [label for _, label in items]) / 100.0

    return metric, list(ev.items), {"metric": ev.metric, "source": ev.meta.get("source", "evaluator"),
                                    "size": len(ev.items)}
