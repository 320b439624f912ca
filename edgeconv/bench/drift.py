"""Accuracy drift of an artifact against the reference on evaluation inputs, with pass/fail per check.

The numbers come from ``edgeconv.core.compare`` (the same code verification uses), so the report's "max_abs" is the
verifier's "max_abs".  What is added here: per-check verdicts against the profile's tolerance, and a warning when
the evaluation inputs look clearly different from the calibration inputs (an INT8 model calibrated on other data —
or other preprocessing — than it is evaluated on drifts for reasons that are not the converter's fault).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np

from edgeconv.core.compare import compare_outputs, max_abs_fails

TENSOR_CHECKS = ("max_abs", "rel_l2", "cosine", "snr_db")
_HIGHER_IS_BETTER = {"cosine", "snr_db"}


def _clean(v: Any) -> Any:
    """JSON has no inf/nan: an exact match has SNR = inf; report it as null with the meaning kept in 'exact'."""
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def drift_checks(drift: dict[str, Any], tol: dict[str, float]) -> list[dict[str, Any]]:
    """One check per tolerance key the profile sets: value, limit, pass."""
    checks = []
    if not drift.get("shape_ok", False):
        return [{"name": "shape", "value": None, "limit": None, "pass": False}]
    if not drift.get("finite", True):
        checks.append({"name": "finite", "value": False, "limit": True, "pass": False})
    for key in TENSOR_CHECKS:
        if key not in tol or key not in drift:
            continue
        v = drift[key]
        limit = tol[key]
        if key == "max_abs":  # scaled by the worst output's magnitude, as verification reads it
            ok = not max_abs_fails(drift, limit)
            limit = limit * float(drift.get("scale") or 1.0)
        else:
            ok = v >= limit if key in _HIGHER_IS_BETTER else v <= limit
        checks.append({"name": key, "value": _clean(float(v)), "limit": limit, "pass": bool(ok)})
    return checks


def compute_drift(refs: list[dict[str, np.ndarray]], gots: list[dict[str, np.ndarray]],
                  tol: dict[str, float]) -> dict[str, Any]:
    """The ``drift`` block of a report row: overall numbers, per output, checks and an overall ``pass``."""
    d = compare_outputs(refs, gots)
    checks = drift_checks(d, tol)
    per = {name: {k: _clean(v) for k, v in p.items()} for name, p in d.get("per_output", {}).items()}
    out: dict[str, Any] = {k: _clean(v) for k, v in d.items() if k != "per_output"}
    out.update(samples=len(refs), per_output=per, checks=checks, tolerance=dict(tol),
               pass_=all(c["pass"] for c in checks))
    out["pass"] = out.pop("pass_")
    return out


# --- input statistics -------------------------------------------------------------------------------------------


def input_stats(feeds: Iterable[dict[str, np.ndarray]], name: str | None = None) -> dict[str, Any]:
    """Per-channel mean/std and overall min/max/percentiles of one input over a set of feeds (axis 1 = channels
    for 4-D NCHW tensors; a single channel otherwise).

    The values are held in float32 (the inputs' own type) with float64 sums, and both percentiles come from one
    partition: 200 detector inputs (39 M values) take 0.8 s instead of 3.0 s as a float64 copy with two
    percentile passes, the same numbers to the printed digits."""
    chans: list[np.ndarray] = []
    for f in feeds:
        x = f[name] if name else next(iter(f.values()))
        x = np.asarray(x, dtype=np.float32)
        chans.append(x.transpose(1, 0, 2, 3).reshape(x.shape[1], -1) if x.ndim == 4 else x.reshape(1, -1))
    if not chans:
        return {"n": 0}
    data = np.concatenate(chans, axis=1)
    flat = data.ravel()
    p1, p99 = np.percentile(flat, [1, 99])
    return {"n": len(chans), "mean": data.mean(1, dtype=np.float64).tolist(),
            "std": data.std(1, dtype=np.float64).tolist(), "min": float(flat.min()), "max": float(flat.max()),
            "p1": float(p1), "p99": float(p99)}


def stats_shift(calib: dict[str, Any], evals: dict[str, Any], *, mean_sigmas: float = 0.5,
                std_ratio: float = 2.0, range_ratio: float = 1.5) -> list[str]:
    """Human-readable reasons why evaluation inputs differ *clearly* from calibration inputs (empty: they agree).

    Thresholds are deliberately loose — the point is to catch a wrong scale (0..255 vs 0..1), a swapped colour
    order or missing normalisation, not ordinary dataset variation.
    """
    reasons: list[str] = []
    if not calib.get("n") or not evals.get("n"):
        return reasons
    cm, cs = np.asarray(calib["mean"]), np.asarray(calib["std"])
    em, es = np.asarray(evals["mean"]), np.asarray(evals["std"])
    if cm.shape == em.shape:
        scale = np.maximum(cs, 1e-6)
        shift = np.abs(em - cm) / scale
        if (shift > mean_sigmas).any():
            ch = int(shift.argmax())
            reasons.append(f"channel {ch} mean {em[ch]:.3g} vs calibration {cm[ch]:.3g} "
                           f"({shift[ch]:.1f} calibration std apart)")
        ratio = np.maximum(es, 1e-9) / np.maximum(cs, 1e-9)
        if (ratio > std_ratio).any() or (ratio < 1 / std_ratio).any():
            ch = int(np.abs(np.log(ratio)).argmax())
            reasons.append(f"channel {ch} std {es[ch]:.3g} vs calibration {cs[ch]:.3g}")
    c_span = max(calib["p99"] - calib["p1"], 1e-9)
    e_span = evals["p99"] - evals["p1"]
    if e_span > range_ratio * c_span or e_span < c_span / range_ratio:
        reasons.append(f"value range [{evals['p1']:.3g}, {evals['p99']:.3g}] vs calibration "
                       f"[{calib['p1']:.3g}, {calib['p99']:.3g}] (1st–99th percentile)")
    return reasons
