"""The task registry: a spec string -> a :class:`Task`, and one function that scores outputs with it.

Usage (docs/tasks.md has the spec strings, label formats and metrics)::

    from edgeconv import tasks

    t = tasks.parse("ctc:alphabet=@chars.txt,blank=last")      # ConfigError (exit 2) on a bad key or value
    block = tasks.score(t, ref_outputs, got_outputs, labels=labels, metas=metas)
    block["metric"], block["reference"], block["value"], block["delta"], block["delta_ci95"]

Imports only ``edgeconv.core`` and numpy, so any layer (bench, plan, a plug-in) may use it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from edgeconv.core.errors import ConfigError
from edgeconv.tasks.base import EXAMPLES, Task, split_options
from edgeconv.tasks.bootstrap import RESAMPLES, SEED, bootstrap_ci, interval, paired_ci, resample_indices
from edgeconv.tasks.ctc import CtcTask, edit_distance, greedy_decode
from edgeconv.tasks.segmentation import SegmentationTask, confusion, mask_to_output, scores_from_confusion


class DetectionTask(Task):
    """``detection``: COCO mAP50-95 with labels, label-free mAP50 against the reference (scored in bench)."""

    name: ClassVar[str] = "detection"
    metric: ClassVar[str] = "map50_95"
    label_free_metric: ClassVar[str] = "label_free_map50"


class ClassificationTask(Task):
    """``classification``: top-1 with labels, top-1 agreement with the reference without (scored in bench)."""

    name: ClassVar[str] = "classification"
    metric: ClassVar[str] = "top1"
    label_free_metric: ClassVar[str] = "top1_agreement"


TASKS: dict[str, type[Task]] = {t.name: t for t in (DetectionTask, ClassificationTask, CtcTask, SegmentationTask)}


def names() -> list[str]:
    return list(TASKS)


def parse(spec: str | Task | None) -> Task | None:
    """``name`` or ``name:key=value,...`` -> a Task (None stays None; a Task is returned as is)."""
    if spec is None or isinstance(spec, Task):
        return spec
    text = str(spec).strip()
    name, _, rest = text.partition(":")
    name = name.strip().lower()
    cls = TASKS.get(name)
    if cls is None:
        raise ConfigError(f"unknown task {name!r} (valid: {', '.join(TASKS)})",
                          hint="e.g. " + ", ".join(EXAMPLES.values()))
    return cls(text, split_options(rest, cls.keys, name) if rest.strip() else {})


def portable(spec: str | Task | None) -> str | None:
    """The spec with its ``@file`` values made absolute, so it reads the same files from another folder (a
    manifest records it; ``bench`` reuses it)."""
    if spec is None:
        return None
    text = spec.spec if isinstance(spec, Task) else str(spec)
    text = re.sub(r"=@([^,]+)", lambda m: "=@" + str(Path(m.group(1)).expanduser().absolute()), text)

    def bare(m: re.Match[str]) -> str:  # alphabet=chars.txt: a path by its suffix, as the CTC task reads it
        p = Path(m.group(1)).expanduser()
        return f"={p.absolute()}" if p.is_file() else m.group(0)
    return re.sub(r"=([^,=@][^,=]*\.(?:txt|keys|dict|lst))(?=,|$)", bare, text, flags=re.IGNORECASE)


def name_of(spec: str | Task | None) -> str | None:
    """The task's registry name (``ctc`` for ``ctc:alphabet=...``): what to compare, never the full spec."""
    t = parse(spec)
    return None if t is None else t.name


def score(task: str | Task, refs: Sequence[Mapping[str, np.ndarray] | np.ndarray],
          gots: Sequence[Mapping[str, np.ndarray] | np.ndarray], *, labels: Sequence[Any] | None = None,
          metas: Sequence[Mapping[str, Any]] | None = None, resamples: int = RESAMPLES,
          seed: int = SEED) -> dict[str, Any]:
    """Score a scored task (ctc, segmentation): the artifact's outputs ``gots`` against the reference's ``refs``
    on the same inputs (one output dict per input), with ``labels`` (one per input) or label-free.

    Returns ``metric``, ``reference``, ``value``, ``delta`` (value - reference, points), ``delta_ci95`` (paired
    bootstrap), ``extra`` (the secondary metrics), ``labelled`` and ``samples``. Label-free, the reference's own
    predictions are the targets, so ``reference`` is 100 and ``value`` is the agreement.
    """
    t = parse(task)
    if t is None or not t.scored:
        raise ConfigError(f"task {getattr(t, 'name', task)!r} is scored in edgeconv.bench, not by tasks.score")
    if len(refs) != len(gots):
        raise ConfigError(f"{len(gots)} artifact outputs for {len(refs)} reference outputs")
    metas = list(metas) if metas is not None else [{} for _ in refs]
    ref_pred = [t.predict(o) for o in refs]
    got_pred = [t.predict(o) for o in gots]
    primary = t.metric if labels is not None else t.label_free_metric
    if labels is not None:
        tg = t.targets(list(labels), metas, ref_pred)
        s_ref, s_got = t.sample_stats(ref_pred, tg), t.sample_stats(got_pred, tg)
        m_ref, m_got = t.summarize(s_ref), t.summarize(s_got)
        block = {"metric": primary, "reference": m_ref[t.metric], "value": m_got[t.metric],
                 "extra": {**{k: v for k, v in m_got.items() if k != t.metric},
                           **{f"reference_{k}": v for k, v in m_ref.items() if k != t.metric}}}
    else:
        s_ref, s_got = None, t.sample_stats(got_pred, ref_pred)
        m_got = t.summarize(s_got)
        block = {"metric": primary, "reference": 100.0, "value": m_got[t.metric],
                 "extra": {f"label_free_{k}" if not k.startswith("label_free") else k: v
                           for k, v in m_got.items() if k != t.metric}}
    block["delta"] = block["value"] - block["reference"]
    block["delta_ci95"] = paired_ci(s_got, s_ref, lambda rows: t.summarize(rows)[t.metric], resamples=resamples,
                                    seed=seed)
    block["labelled"] = labels is not None
    block["samples"] = len(gots)
    if isinstance(t, CtcTask) and got_pred and got_pred[0]:
        block["extra"]["examples"] = [{"reference": CtcTask.text(r[0]), "artifact": CtcTask.text(g[0]),
                                       **({"label": str(labels[i])} if labels is not None else {})}
                                      for i, (r, g) in enumerate(zip(ref_pred[:3], got_pred[:3], strict=True))]
    return block


def score_one(task: str | Task, outputs: Sequence[Mapping[str, np.ndarray] | np.ndarray], labels: Sequence[Any],
              metas: Sequence[Mapping[str, Any]] | None = None) -> dict[str, float]:
    """The metrics of one model's outputs against labels (the conversion-time budget's score function)."""
    t = parse(task)
    if t is None or not t.scored:
        raise ConfigError(f"task {getattr(t, 'name', task)!r} is scored in edgeconv.bench, not by tasks.score_one")
    metas = list(metas) if metas is not None else [{} for _ in outputs]
    preds = [t.predict(o) for o in outputs]
    return t.summarize(t.sample_stats(preds, t.targets(list(labels), metas, preds)))


__all__ = ["RESAMPLES", "SEED", "TASKS", "ClassificationTask", "CtcTask", "DetectionTask", "SegmentationTask", "Task",
           "bootstrap_ci", "confusion", "edit_distance", "greedy_decode", "interval", "mask_to_output", "name_of",
           "names", "paired_ci", "parse", "resample_indices", "score", "score_one", "scores_from_confusion"]
