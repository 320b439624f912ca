"""Output comparison: the one place that decides how far two sets of tensors are apart.

Used by export verification (ONNX vs torch), artifact verification (target vs reference) and the benchmark's
drift report, so the three always agree on what "max abs" or "cosine" means.

A ``max_abs`` tolerance is read like ``numpy.allclose`` with equal absolute and relative parts: an output may
differ by ``tol × max(1, max |reference|)`` (each output by its own scale). Floating-point error grows with the
values computed — a 1e-4 bar on logits of magnitude 30 would demand 3e-6 relative, a few ulps — while outputs in
[-1, 1] keep the absolute bar. ``max_abs`` itself is always the raw difference.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np


def tensor_drift(ref: np.ndarray, got: np.ndarray) -> dict[str, Any]:
    """Max/mean abs, relative L2, cosine and SNR (dB) of ``got`` against ``ref``; shapes must match."""
    if tuple(ref.shape) != tuple(got.shape):
        return {"shape_ok": False, "ref_shape": list(ref.shape), "shape": list(got.shape)}
    r = ref.astype(np.float64).ravel()
    g = got.astype(np.float64).ravel()
    if r.size == 0:
        return {"shape_ok": True, "max_abs": 0.0, "mean_abs": 0.0, "rel_l2": 0.0, "cosine": 1.0, "snr_db": math.inf}
    finite = bool(np.isfinite(g).all())
    diff = g - r
    nr = float(np.linalg.norm(r))
    nd = float(np.linalg.norm(diff))
    ng = float(np.linalg.norm(g))
    cos = float(np.dot(r, g) / (nr * ng)) if nr > 0 and ng > 0 else (1.0 if nr == ng else 0.0)
    return {
        "shape_ok": True,
        "finite": finite,
        "ref_absmax": float(np.max(np.abs(r))) if np.isfinite(r).all() else math.inf,
        "max_abs": float(np.max(np.abs(diff))),
        "mean_abs": float(np.mean(np.abs(diff))),
        "rel_l2": nd / nr if nr > 0 else (0.0 if nd == 0 else math.inf),
        "cosine": cos,
        "snr_db": 20 * math.log10(nr / nd) if nd > 0 and nr > 0 else math.inf,
    }


def compare_outputs(refs: list[dict[str, np.ndarray]], gots: list[dict[str, np.ndarray]]) -> dict[str, Any]:
    """Drift per output over several samples (worst case for max_abs/cosine, mean for the rest) and overall."""
    per: dict[str, dict[str, Any]] = {}
    names = list(refs[0].keys()) if refs else []
    for name in names:
        stats = []
        for r, g in zip(refs, gots, strict=True):
            if name not in g:
                per[name] = {"shape_ok": False, "missing": True}
                break
            stats.append(tensor_drift(r[name], g[name]))
        else:
            if not all(s["shape_ok"] for s in stats):
                bad = next(s for s in stats if not s["shape_ok"])
                per[name] = bad
                continue
            per[name] = {
                "shape_ok": True,
                "finite": all(s["finite"] for s in stats),
                "max_abs": max(s["max_abs"] for s in stats),
                "ref_absmax": max(s["ref_absmax"] for s in stats),
                "mean_abs": float(np.mean([s["mean_abs"] for s in stats])),
                "rel_l2": max(s["rel_l2"] for s in stats),
                "cosine": min(s["cosine"] for s in stats),
                "snr_db": min(s["snr_db"] for s in stats),
            }
    ok_shapes = all(p.get("shape_ok") for p in per.values())
    overall: dict[str, Any] = {"shape_ok": ok_shapes, "per_output": per}
    if ok_shapes and per:
        worst_name = max(per, key=lambda n: per[n]["max_abs"] / max(1.0, per[n]["ref_absmax"]))  # its own scale
        worst = per[worst_name]
        overall.update(
            worst_output=worst_name,
            finite=all(p["finite"] for p in per.values()),
            max_abs=max(p["max_abs"] for p in per.values()),
            max_abs_scaled=worst["max_abs"] / max(1.0, worst["ref_absmax"]),
            scale=max(1.0, worst["ref_absmax"]),
            mean_abs=float(np.mean([p["mean_abs"] for p in per.values()])),
            rel_l2=max(p["rel_l2"] for p in per.values()),
            cosine=min(p["cosine"] for p in per.values()),
            snr_db=min(p["snr_db"] for p in per.values()),
        )
    return overall


def max_abs_fails(drift: dict[str, Any], limit: float) -> bool:
    """Whether some output differs by more than ``limit × max(1, its max |reference|)`` (raw max abs for drift
    records made before the scale was recorded)."""
    scaled = drift.get("max_abs_scaled")
    return (scaled if scaled is not None else drift["max_abs"]) > limit


def within(drift: dict[str, Any], tol: dict[str, float]) -> tuple[bool, list[str]]:
    """Check a drift summary against a tolerance table (keys: max_abs, rel_l2, cosine, snr_db); returns failures."""
    fails: list[str] = []
    if not drift.get("shape_ok", False):
        bad = [f"{n}: {p.get('shape')} vs reference {p.get('ref_shape')}" if not p.get("missing") else f"{n}: missing"
               for n, p in drift.get("per_output", {}).items() if not p.get("shape_ok")]
        return False, [f"output shape mismatch ({'; '.join(bad)})"]
    if not drift.get("finite", True):
        fails.append("non-finite values in outputs")
    if "max_abs" in tol and max_abs_fails(drift, tol["max_abs"]):
        # the numbers of the output that fails, named: the overall max_abs may be another output's, on its own
        # (larger) scale, which read as a failure of 332 against 1e-4 x 16.6
        scale = drift.get("scale", 1.0)
        name = drift.get("worst_output")
        worst = (drift.get("per_output") or {}).get(name) or {}
        value = worst.get("max_abs", drift["max_abs"])
        many = len(drift.get("per_output") or {}) > 1
        fails.append(f"max_abs {value:.3g} > {tol['max_abs']:.3g}" +
                     (f" x output scale {scale:.3g}" if scale > 1.0 else "") +
                     (f" (output '{name}')" if name and many else ""))
    if "rel_l2" in tol and drift["rel_l2"] > tol["rel_l2"]:
        fails.append(f"rel_l2 {drift['rel_l2']:.3g} > {tol['rel_l2']:.3g}")
    if "cosine" in tol and drift["cosine"] < tol["cosine"]:
        fails.append(f"cosine {drift['cosine']:.6f} < {tol['cosine']}")
    if "snr_db" in tol and drift["snr_db"] < tol["snr_db"]:
        fails.append(f"snr {drift['snr_db']:.1f} dB < {tol['snr_db']}")
    return not fails, fails
