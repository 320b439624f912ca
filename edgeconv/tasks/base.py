"""What a task is, and how its spec string is parsed.

A task travels through edgeconv as one string (``--task``, ``api.convert(task=...)``, plan rows, the bench config),
so adding a task or an option never adds a flag: ``ctc:alphabet=chars.txt,blank=0``, ``segmentation:ignore=255``,
``detection``, ``classification``. :func:`parse` turns it into a :class:`Task`, or raises a one-line ``ConfigError``
naming the bad key and the valid ones.

A scored task (CTC, segmentation) is written as four steps so that evaluation, the conversion-time budget and the
bootstrap confidence interval share one implementation:

- ``predict(outputs)``: one model output dict -> a list of predictions, one per batch entry;
- ``targets(labels, metas, preds)``: the stored labels -> targets comparable with those predictions (masks brought
  to the output's geometry, strings encoded to class ids);
- ``sample_stats(preds, targets)``: one row of additive sufficient statistics per sample (hits, edit counts,
  a confusion matrix), so any resample of the image set is scored by summing rows;
- ``summarize(stats)``: summed rows -> the metrics in percent.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from edgeconv.core.errors import ConfigError

_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass
class Task:
    """A parsed task spec. ``spec`` is the string it came from (what flows through the rest of edgeconv)."""

    spec: str
    options: dict[str, str] = field(default_factory=dict)

    name: ClassVar[str] = ""
    keys: ClassVar[tuple[str, ...]] = ()  # the options this task accepts
    #: Tasks scored by predict/targets/sample_stats/summarize here (detection/classification are scored in bench).
    scored: ClassVar[bool] = False
    #: The primary metric with labels, and without (agreement with the reference, where 100 = identical).
    metric: ClassVar[str] = ""
    label_free_metric: ClassVar[str] = ""

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Check option values now, so a bad spec fails before any model is loaded."""

    @property
    def output(self) -> str | None:
        """The output tensor to score (``output=NAME``); None: the first output."""
        return self.options.get("output")

    def tensor(self, outputs: Mapping[str, np.ndarray] | np.ndarray) -> np.ndarray:
        """The scored tensor of one output dict (or the array itself, e.g. what a post-processor returned)."""
        if not isinstance(outputs, Mapping):
            return np.asarray(outputs)
        if self.output is not None:
            if self.output not in outputs:
                raise ConfigError(f"task {self.name}: output {self.output!r} is not among the model's outputs "
                                  f"({', '.join(outputs)})", hint=f"use {self.name}:output=<one of those>")
            return np.asarray(outputs[self.output])
        return np.asarray(next(iter(outputs.values())))

    # -- scored tasks ---------------------------------------------------------------------------------------------
    def predict(self, outputs: Mapping[str, np.ndarray] | np.ndarray) -> list[Any]:
        raise NotImplementedError

    def targets(self, labels: Sequence[Any], metas: Sequence[Mapping[str, Any]],
                preds: Sequence[list[Any]]) -> list[list[Any]]:
        raise NotImplementedError

    def sample_stats(self, preds: Sequence[list[Any]], targets: Sequence[list[Any]]) -> np.ndarray:
        raise NotImplementedError

    def summarize(self, stats: np.ndarray) -> dict[str, float]:
        raise NotImplementedError


def split_options(spec: str, keys: tuple[str, ...], task: str) -> dict[str, str]:
    """``k=v,k=v`` -> dict. A piece that is not ``identifier=...`` continues the previous value, so an inline
    alphabet may hold commas (``alphabet=a,b,c``); ``,word=`` always starts a new key (use an alphabet file then)."""
    opts: dict[str, str] = {}
    last: str | None = None
    for piece in spec.split(","):
        k, eq, v = piece.partition("=")
        if eq and _KEY.match(k.strip()):
            k = k.strip()
            if k not in keys:
                valid = ", ".join(keys) if keys else "none"
                raise ConfigError(f"task {task}: unknown option {k!r} (valid: {valid})",
                                  hint=f"e.g. {EXAMPLES.get(task, task)}")
            if k in opts:
                raise ConfigError(f"task {task}: option {k!r} given twice")
            opts[k], last = v, k
        elif last is not None:
            opts[last] += "," + piece
        elif piece.strip():
            raise ConfigError(f"task {task}: option {piece!r} is not key=value (valid keys: {', '.join(keys)})",
                              hint=f"e.g. {EXAMPLES.get(task, task)}")
    return opts


EXAMPLES = {"ctc": "ctc:alphabet=chars.txt,blank=0", "segmentation": "segmentation:ignore=255",
            "detection": "detection", "classification": "classification"}
