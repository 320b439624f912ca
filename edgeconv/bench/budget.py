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


def agreement_evaluator(reference: Any, tk: Any, calibration: Any, post: Any = None,
                        samples: int = 64, held_out: tuple[list[dict[str, np.ndarray]], str] | None = None
                        ) -> TaskEvaluator | None:
    """Without labelled data, the task metric as agreement with the reference (top-1 agreement, CTC exact
    agreement, mask agreement, label-free mAP50) on up to ``samples`` calibration inputs: a classifier whose INT8
    flips 12 % of its top-1 answers has logits at cosine 0.99, which the tensor tolerance passes. The inputs are the
    calibration sample's own (in-sample: an optimistic bound, said in the record's ``source``)."""
    import itertools

    from edgeconv import tasks
    from edgeconv.bench import metrics
    from edgeconv.targets.base import reference_items

    if tk.name == "detection" and post is None:
        return None
    # held_out: (feeds, source) of an unlabelled --eval folder: inputs the calibration did not see, used before the
    # calibration sample's own
    feeds = held_out[0][:samples] if held_out else list(itertools.islice(calibration.feeds(), samples))
    items = reference_items(reference.onnx_path, feeds)
    if not items:
        return None
    out_name = reference.outputs[0].name
    if tk.scored:
        metric = tk.label_free_metric

        def score(outs: list[dict[str, np.ndarray]], labels: list[Any]) -> float:
            return float(tasks.score(tk, labels, outs, labels=None, resamples=0)["value"])
    elif tk.name == "detection":
        metric = "label_free_map50"

        def score(outs: list[dict[str, np.ndarray]], labels: list[Any]) -> float:
            return 100.0 * float(metrics.label_free_map([post(o)[0] for o in outs],
                                                        [post(r)[0] for r in labels])["map50"])
    else:
        metric = "top1_agreement"

        def score(outs: list[dict[str, np.ndarray]], labels: list[Any]) -> float:
            hits = [int(np.argmax(np.asarray(o[out_name]).reshape(-1))) ==
                    int(np.argmax(np.asarray(r[out_name]).reshape(-1))) for o, r in zip(outs, labels, strict=True)]
            return 100.0 * float(np.mean(hits))
    data_key = ("held-out", held_out[1], [hashlib.sha256(np.ascontiguousarray(f[k]).tobytes()).hexdigest()
                                          for f in feeds for k in sorted(f)]) if held_out else calibration.key
    fp = sha256_json({"label_free": tk.name, "metric": metric, "calibration": data_key, "samples": len(items),
                      "reference": getattr(reference, "sha256", None)})
    source = (f"{len(items)} unlabelled held-out inputs from {held_out[1]} (label-free agreement with the "
              "reference)" if held_out else f"{len(items)} calibration inputs (label-free agreement with the "
              "reference; in-sample)")
    return TaskEvaluator(metric, items, score, fp,
                         {"unit": "points", "task": tk.name, "labelled": False, "spec": tasks.portable(tk),
                          "source": source}, held_out=held_out is not None)


def task_evaluator(info: dict[str, Any], reference: Any, preprocess: Preprocess | None, *, data: str | None = None,
                   task: str | None = None, postprocess: str | None = None, limit: int = 100,
                   exclude: set[str] | None = None, calibration: Any = None) -> TaskEvaluator | None:
    """A held-out evaluator for the model, or None when no metric is known.

    ``data`` defaults to the bundled eval split of a ``zoo:`` model; ``exclude`` holds content hashes that must not
    be evaluated on (the calibration sample): an overlap is a config error, as in ``edgeconv run``. With a task but
    no labelled data, and a ``calibration`` set, the budget is held as agreement with the reference
    (:func:`agreement_evaluator`).
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
    if tk is None:
        return None

    def label_free(why: str, held: tuple[list[dict[str, np.ndarray]], str] | None = None) -> TaskEvaluator | None:
        if calibration is None and held is None:
            log.info("%s: the task budget is not checked at conversion", why)
            return None
        ev0 = agreement_evaluator(reference, tk, calibration, load_callable(post_spec) if post_spec else None,
                                  held_out=held)
        if ev0 is not None:
            ev0.meta["postprocess"] = post_spec
            log.info("%s: INT8 is held to its budget as %s with the reference on %s", why, ev0.metric,
                     ev0.meta["source"].split(" (")[0])
        return ev0

    if data is None or preprocess is None:
        return label_free("no labelled evaluation data (--eval)")
    spec = reference.inputs[0]
    ev = load_eval_data(data, input_spec=spec, preprocess=preprocess, task=task, limit=limit)
    if exclude:  # labelled or not, held-out data must be disjoint from the calibration sample
        overlap = [p for p in ev.files if sha256_file(p) in exclude]
        if overlap:
            raise ConfigError(f"{len(overlap)} evaluation inputs are also calibration inputs (e.g. {overlap[0]})",
                              hint="evaluate on data disjoint from --calib")
    if ev.labels is None:
        held = (list(ev.feeds), str(ev.source)) if ev.feeds else None
        return label_free(f"evaluation data {ev.source} has no labels", held)
    post = load_callable(post_spec) if post_spec else None
    if tk.name == "detection" and post is None:
        return None
    if tk.name == "detection" and not any(len(np.asarray(gt[0]).reshape(-1, 4)) for gt in ev.labels):
        # pycocotools' -1 for both sides would be a delta of 0: a budget "checked" on no ground truth at all
        return label_free(f"evaluation data {ev.source} is labelled but holds no box")
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
    meta = {"unit": "points", "source": ev.source, "task": tk.name, "spec": tasks.portable(task),
            "postprocess": post_spec}
    return TaskEvaluator(metric, items, score, fp, meta, held_out=True)
