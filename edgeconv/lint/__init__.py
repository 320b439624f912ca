"""Lint a model before INT8: the patterns per-tensor quantization loses accuracy on, named by node and module.

``lint(reference_onnx, calibration_stats, calib_size)`` is what the pipeline calls before an INT8 conversion;
``edgeconv lint MODEL|ONNX`` prints the same findings. See ``rules.py`` for the rules and why each matters.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from edgeconv.lint.graph import LintGraph
from edgeconv.lint.rules import (
    MIN_CALIBRATION,
    MIXED_RANGE_RATIO,
    OUTLIER_RATIO,
    Finding,
    decode_in_graph,
    mixed_range_concat,
    outlier_activations,
    tiny_calibration,
    whole_tensor_norm,
)

__all__ = ["MIN_CALIBRATION", "MIXED_RANGE_RATIO", "OUTLIER_RATIO", "Finding", "lint", "outlier_stats"]

SUBSAMPLE = 20000  # values kept per tensor per input for the percentile (the max is exact)


def _ranges(stats: Any) -> dict[str, tuple[float, float]] | None:
    """Ranges from an ``ActivationStats`` or a plain ``{tensor: (lo, hi)}`` mapping."""
    if stats is None:
        return None
    r = getattr(stats, "ranges", stats)
    if not isinstance(r, Mapping):
        raise TypeError(f"calibration statistics must be ActivationStats or a mapping, not {type(stats).__name__}")
    return {str(k): (float(v[0]), float(v[1])) for k, v in r.items()}


def outlier_stats(onnx_path: str | Path, feeds: Iterable[dict[str, np.ndarray]], limit: int = 32,
                  seed: int = 0) -> tuple[dict[str, float], dict[str, float]]:
    """(max |x|, 99.9th percentile of |x|) of every float activation on up to ``limit`` feeds (unfused ORT run).

    For when the shared statistics hold only one method: the percentile comes from a seeded subsample of each
    tensor's values, the maximum from all of them.
    """
    from edgeconv.diagnose.capture import TappedSession

    rng = np.random.default_rng(seed)
    fs = []
    for i, f in enumerate(feeds):
        if i >= limit:
            break
        fs.append(f)
    if not fs:
        return {}, {}
    maxima: dict[str, float] = {}
    samples: dict[str, list[np.ndarray]] = {}
    session = TappedSession(onnx_path)
    for f in fs:
        for name, v in session.run(f).items():
            a = np.abs(np.asarray(v, np.float32).ravel())
            if a.size == 0:
                continue
            maxima[name] = max(maxima.get(name, 0.0), float(a.max()))
            samples.setdefault(name, []).append(a if a.size <= SUBSAMPLE else rng.choice(a, SUBSAMPLE, replace=False))
    p999 = {k: float(np.percentile(np.concatenate(v), 99.9)) for k, v in samples.items()}
    return maxima, p999


def lint(reference_onnx: str | Path, calibration_stats: Any = None, calib_size: int | None = None, *,
         percentile_stats: Any = None, feeds: Iterable[dict[str, np.ndarray]] | None = None,
         modules: Mapping[str, Any] | None = None) -> list[Finding]:
    """Warnings about INT8-hostile patterns in ``reference_onnx``.

    ``calibration_stats``: the shared minmax statistics (``ctx.statistics("minmax")``) or ``{tensor: (lo, hi)}``;
    they enable the range rules. ``percentile_stats`` (``ctx.statistics("percentile", {"percentile": 99.9})``)
    or, failing that, ``feeds`` (a few calibration inputs) enable the outlier rule. ``modules``: node →
    ``ModuleName`` (``edgeconv.diagnose.modules.module_map``); computed from the file when not given, and only
    when there are findings to name.
    """
    g = LintGraph.load(reference_onnx)
    ranges = _ranges(calibration_stats)
    findings = mixed_range_concat(g, ranges) + decode_in_graph(g) + whole_tensor_norm(g)
    maxima: dict[str, float] = {}
    p999: dict[str, float] = {}
    pr = _ranges(percentile_stats)
    if pr and ranges:
        maxima = {k: max(abs(v[0]), abs(v[1])) for k, v in ranges.items()}
        p999 = {k: max(abs(v[0]), abs(v[1])) for k, v in pr.items()}
    elif feeds is not None:
        maxima, p999 = outlier_stats(reference_onnx, feeds)
    if maxima:
        findings += outlier_activations(g, maxima, p999)
    findings += tiny_calibration(calib_size)
    if not findings:
        return findings
    if modules is None:
        from edgeconv.diagnose.modules import module_map

        modules = module_map(reference_onnx, reexport=False)
    for f in findings:
        named = (modules.get(n) for n in dict.fromkeys([*f.keep_fp32, *f.nodes]))
        f.modules = list(dict.fromkeys(m.label() for m in named if m and m.module is not None))
    return findings
