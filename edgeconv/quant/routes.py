"""Route and preset fallback as data: per backend, the documented INT8 alternatives to try when the default is over
budget or fails, in the order to try them. Each entry is a set of option overrides (keys of the backend's option
schema, or the common ``calib_method``/``max_drop``), so the caller loops over them with the same conversion call.

Orders follow what was measured on the bundled models and the issue's reports (``docs/int8.md``):

- onnxruntime / tensorrt: calibration minmax → percentile → entropy (ResNet-56 on TensorRT failed with minmax and
  passed with percentile, issue 14).
- openvino: NNCF's own default preset for CNNs (``performance``, symmetric activations: 0.57 points on the OCR model
  where ``mixed`` lost 1.43), then ``mixed``, then bias correction off, then NNCF's accuracy-controlled quantization
  at the budget (``max_drop``), which reverts layers itself.
- tflite: full-integer with the histogram observer, minmax observer, then dynamic-range INT8 (weights only; the
  OCR model's static INT8 failed to convert and dynamic-range kept +0.14 points).
- ncnn: minmax activation scales (ncnn default here), KL (ncnn2table's default), head convs kept float, 8-bit
  weights everywhere (Winograd off).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from edgeconv.core.console import log
from edgeconv.core.errors import EdgeconvError


@dataclass(frozen=True)
class Alternative:
    name: str
    options: dict[str, Any]
    why: str = ""
    needs_budget: bool = False  # the options include the budget itself (``max_drop``), filled in by the caller


ROUTES: dict[str, tuple[Alternative, ...]] = {
    "onnxruntime": (
        Alternative("minmax", {"calib_method": "minmax"}, "default: ranges from the extremes"),
        Alternative("percentile", {"calib_method": "percentile"}, "clips rare outliers (99.999th percentile)"),
        Alternative("entropy", {"calib_method": "entropy"}, "KL-optimal ranges (TensorRT's algorithm)"),
        Alternative("symmetric-activations", {"symmetric_activations": True}, "int8 activations centred on 0"),
    ),
    "tensorrt": (
        Alternative("minmax", {"calib_method": "minmax"}, "default"),
        Alternative("percentile", {"calib_method": "percentile"}, "passed ResNet-56 where minmax failed"),
        Alternative("entropy", {"calib_method": "entropy"}, "TensorRT's own entropy calibrator"),
        Alternative("no-residual-qdq", {"qdq_residual_add": False}, "residual Adds stay float"),
    ),
    "openvino": (
        Alternative("nncf-default", {"preset": "performance"}, "NNCF's default preset for CNNs (symmetric)"),
        Alternative("mixed", {"preset": "mixed"}, "asymmetric activations"),
        Alternative("no-fast-bias-correction", {"fast_bias_correction": False}, "full bias correction"),
        Alternative("accuracy-control", {"max_drop": None}, "NNCF quantize_with_accuracy_control at the budget",
                    needs_budget=True),
    ),
    "tflite": (
        Alternative("static-histogram", {"int8_mode": "static", "observer": "histogram"}, "default"),
        Alternative("static-minmax", {"int8_mode": "static", "observer": "minmax"}, "minmax observers"),
        Alternative("dynamic-range", {"int8_mode": "dynamic"}, "int8 weights, float activations"),
    ),
    "ncnn": (
        Alternative("minmax", {"calib_method": "minmax"}, "default here"),
        Alternative("kl", {"calib_method": "entropy"}, "ncnn2table's KL thresholds"),
        Alternative("head-float", {"keep_outputs_fp32": True}, "output convs in float"),
        Alternative("8bit-weights", {"int8_winograd": False}, "8-bit weights for 3x3 convs (no int8 Winograd)"),
    ),
}


def alternatives(backend: str, current: dict[str, Any] | None = None, budget_points: float | None = None
                 ) -> list[Alternative]:
    """The backend's alternatives, minus the one ``current`` options already are; ``max_drop`` filled from the
    budget (points → NNCF's fraction); entries needing a budget are dropped when there is none."""
    cur = current or {}
    out = []
    for alt in ROUTES.get(backend, ()):
        opts = dict(alt.options)
        if alt.needs_budget:
            if budget_points is None:
                continue
            opts["max_drop"] = budget_points / 100.0
        if all(cur.get(k) == v for k, v in opts.items()):
            continue
        out.append(Alternative(alt.name, opts, alt.why, alt.needs_budget))
    return out


@dataclass
class RouteAttempt:
    name: str
    options: dict[str, Any]
    delta: float | None
    passed: bool
    error: str | None = None
    artifact: Any = field(default=None, repr=False)


def search_routes(build: Callable[[dict[str, Any]], tuple[Any, float]], backend: str, budget: float, *,
                  current: dict[str, Any] | None = None, stop_at_first: bool = True) -> list[RouteAttempt]:
    """Try the backend's alternatives with ``build(options) -> (artifact, delta)``; every attempt is recorded.

    Stops at the first inside the budget unless ``stop_at_first`` is False (then all are measured and the caller
    picks the best by delta — "choose by measurement").
    """
    out: list[RouteAttempt] = []
    for alt in alternatives(backend, current, budget):
        try:
            art, delta = build({**(current or {}), **alt.options})[:2]
            ra = RouteAttempt(alt.name, alt.options, float(delta), float(delta) >= -budget, artifact=art)
        except EdgeconvError as e:
            ra = RouteAttempt(alt.name, alt.options, None, False, error=e.one_line())
        log.info("route %s %s: delta %s", backend, alt.name, "n/a" if ra.delta is None else f"{ra.delta:+.3f}")
        out.append(ra)
        if ra.passed and stop_at_first:
            break
    return out
