"""Task evaluators for conversion-time accuracy budgets: held-out data + the task metric, handed to the pipeline.

The pipeline (and through it every target) sees only a ``TaskEvaluator``: items and a score function. This module
builds one from what the benchmark already knows how to load (the bundled eval splits, labelled image folders, OCR
strings, segmentation masks) and score (mAP50-95, top-1, and through ``edgeconv.tasks`` exact match and mIoU), so
a target's accuracy control never imports bench or zoo, and an INT8 artifact over its budget is refused where it
is made, not discovered after shipping.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np

from edgeconv.calibration.preprocess import Preprocess
from edgeconv.core.console import log
from edgeconv.core.errors import ConfigError
from edgeconv.core.hashing import sha256_json
from edgeconv.targets.base import TaskEvaluator


def task_evaluator(info: dict[str, Any], reference: Any, preprocess: Preprocess | None, *, data: str | None = None,
                   task: str | None = None, postprocess: str | None = None, limit: int = 100,
                   exclude: set[str] | None = None) -> TaskEvaluator | None:
    """A held-out evaluator for the model, or None when no labelled data or no metric is known.

    ``data`` defaults to the bundled eval split of a ``zoo:`` model; ``exclude`` holds content hashes that must not
    be evaluated on (the calibration sample): an overlap is a config error, as in ``edgeconv run``.
    """
    from edgeconv import tasks
    from edgeconv.bench import metrics
    from edgeconv.bench.datasets import load_eval_data
    from edgeconv.core.hashing import sha256_file
    from edgeconv.core.plugins import load_callable

    task = task or info.get("task")
    tk = tasks.parse(task)
    post_spec = postprocess or info.get("postprocess")
    if data is None and info.get("bundled") and tk is not None:
        data = f"zoo:{tk.name}"
    if data is None or tk is None or preprocess is None:
        return None
    spec = reference.inputs[0]
    ev = load_eval_data(data, input_spec=spec, preprocess=preprocess, task=task, limit=limit)
    if ev.labels is None:
        log.info("evaluation data %s has no labels: the task budget is not checked at conversion", ev.source)
        return None
    if exclude:
        overlap = [p for p in ev.files if sha256_file(p) in exclude]
        if overlap:
            raise ConfigError(f"{len(overlap)} evaluation inputs are also calibration inputs (e.g. {overlap[0]})",
                              hint="evaluate on data disjoint from --calib")
    post = load_callable(post_spec) if post_spec else None
    if tk.name == "detection" and post is None:
        return None
    items = list(zip(ev.feeds, zip(ev.labels, ev.metas, strict=True), strict=True))

    if tk.scored:
        metric = tk.metric

        def score(outs: list[dict[str, np.ndarray]], labels: list[Any]) -> float:
            got = [post(o) for o in outs] if post is not None else outs
            return float(tasks.score_one(tk, got, [lab for lab, _ in labels], [m for _, m in labels])[metric])
    elif tk.name == "detection":
        def score(outs: list[dict[str, np.ndarray]], labels: list[Any]) -> float:
            preds = [metrics.to_image_coords(post(o)[0], meta) for o, (_, meta) in zip(outs, labels, strict=True)]
            return 100.0 * float(metrics.coco_map(preds, [gt for gt, _ in labels], use_pycocotools=False)["map50_95"])
        metric = "map50_95"
    else:
        out_name = reference.outputs[0].name

        def score(outs: list[dict[str, np.ndarray]], labels: list[Any]) -> float:
            hits = [int(np.argmax(np.asarray(o[out_name]).reshape(-1))) == int(c) for o, (c, _) in
                    zip(outs, labels, strict=True)]
            return 100.0 * float(np.mean(hits)) if hits else 0.0
        metric = "top1"
    # The labels themselves (OCR strings, mask hashes) and a CTC alphabet's symbols enter the fingerprint: a
    # corrected labels file or alphabet must not reuse an artifact that was budget-checked against the old one.
    labels_fp = [lab if isinstance(lab, str) else hashlib.sha256(np.ascontiguousarray(lab).tobytes()).hexdigest()
                 for lab in ev.labels] if tk.scored else None
    fp = sha256_json({"data": [str(Path(p).name) + sha256_file(p) for p in ev.files], "task": task,
                      "post": post_spec, "metric": metric, "preprocess": preprocess.to_dict(), "labels": labels_fp,
                      "symbols": getattr(tk, "symbols", None)})
    return TaskEvaluator(metric, items, score, fp, {"unit": "points", "source": ev.source, "task": tk.name})
