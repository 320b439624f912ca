"""Baseline gates: compare a new report with a baseline and say which named conditions hold.

Latency: a row regressed when its p50 confidence interval lies entirely above the baseline's (the difference is
larger than the noise *both* runs measured) **and** the change exceeds a small practical floor (``min_effect``,
default 5 %).  Why the floor as well: the order-statistic interval captures noise within a run, not the slower
run-to-run drift of a shared machine (frequency, neighbours), so a statistically "significant" 1 % shift is still
not worth failing a build for.  A bare percentage alone is not used: on a noisy runner it fires at random.

Drift / task: judged against the profile's tolerance recorded in the new report (a check that fails there is a
``drift`` condition), and the task metric must not drop below the baseline's by more than the profile's
``task_delta``.  Error: a row that newly failed (ok or absent in the baseline) or vanished; a row that failed in both
is reported as "still failing" but does not trip the gate (a report compared with itself always passes ``error``;
with no baseline, ``edgeconv run --fail-on error`` treats every failure as new).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from edgeconv.core.errors import ConfigError

CONDITIONS = ("regression", "drift", "error")
DEFAULT_MIN_EFFECT = 0.05


def parse_fail_on(text: str | list[str] | tuple[str, ...] | None) -> tuple[str, ...]:
    """``"regression,drift"`` → ('regression', 'drift'); ``all`` = every condition; unknown names are an error."""
    if not text:
        return ()
    items = text.split(",") if isinstance(text, str) else list(text)
    names = tuple(i.strip() for i in items if i.strip())
    if "all" in names:
        return CONDITIONS
    bad = [n for n in names if n not in CONDITIONS]
    if bad:
        raise ConfigError(f"unknown --fail-on condition(s) {bad}", hint=f"choose from {', '.join(CONDITIONS)}")
    return names


def _keyed(results: list[dict[str, Any]]) -> list[tuple[tuple[str, str, str, int], dict[str, Any]]]:
    """Rows with their match key: (target, profile, precision, n-th such row). The counter keeps two rows of one
    profile × precision (e.g. at two thread counts) matched to their own counterparts, so a report compared with
    itself always compares each row with itself."""
    seen: dict[tuple[str, str, str], int] = {}
    out = []
    for r in results:
        k = (str(r.get("target")), str(r.get("profile")), str(r.get("precision")))
        seen[k] = seen.get(k, -1) + 1
        out.append(((*k, seen[k]), r))
    return out


def noise_interval(lat: dict[str, Any]) -> tuple[float, float]:
    """The p50's confidence interval; a p50 outside its own interval (a hand-edited baseline) keeps the interval's
    relative width around the new p50, so the gate still judges against the noise that was measured."""
    p50 = float(lat["p50"])
    ci = lat.get("p50_ci")
    if not ci or ci[0] is None or ci[1] is None:
        return p50, p50
    lo, hi = float(ci[0]), float(ci[1])
    if lo <= p50 <= hi:
        return lo, hi
    center = (lo + hi) / 2 or p50
    f = p50 / center if center else 1.0
    return lo * f, hi * f


@dataclass
class Comparison:
    """Per-row verdicts plus which conditions hold."""

    rows: dict[tuple[str, str, str, int], dict[str, Any]] = field(default_factory=dict)
    conditions: dict[str, list[str]] = field(default_factory=lambda: {c: [] for c in CONDITIONS})

    def holds(self, fail_on: tuple[str, ...]) -> list[str]:
        """Messages of the named conditions that hold (empty: the gate passes)."""
        return [m for c in fail_on for m in self.conditions.get(c, [])]

    def to_dict(self, fail_on: tuple[str, ...] = (), baseline: str | None = None) -> dict[str, Any]:
        return {"baseline": baseline, "fail_on": list(fail_on), "failures": self.holds(fail_on),
                "conditions": {k: v for k, v in self.conditions.items()},
                "rows": [{"target": k[0], "profile": k[1], "precision": k[2], **v} for k, v in self.rows.items()]}


def compare_latency(new: dict[str, Any] | None, base: dict[str, Any] | None,
                    min_effect: float = DEFAULT_MIN_EFFECT) -> dict[str, Any]:
    """Verdict for one row's latency: regression | improvement | same | n/a, with the relative change."""
    if not new or not base or new.get("p50") is None or base.get("p50") is None:
        return {"verdict": "n/a", "change": None, "regression": False}
    n_lo, n_hi = noise_interval(new)
    b_lo, b_hi = noise_interval(base)
    change = (new["p50"] - base["p50"]) / base["p50"] if base["p50"] else 0.0
    detail = (f"p50 {new['p50']:.3g} ms [{n_lo:.3g}, {n_hi:.3g}] vs baseline {base['p50']:.3g} ms "
              f"[{b_lo:.3g}, {b_hi:.3g}] ({change:+.1%})")
    if n_lo > b_hi and change > min_effect:
        return {"verdict": "regression", "change": change, "regression": True, "detail": detail}
    if n_hi < b_lo and -change > min_effect:
        return {"verdict": "improvement", "change": change, "regression": False, "detail": detail}
    return {"verdict": "same", "change": change, "regression": False, "detail": detail}


def compare_reports(new: dict[str, Any], base: dict[str, Any], *,
                    min_effect: float = DEFAULT_MIN_EFFECT) -> Comparison:
    """Compare every row of ``new`` with the matching (target, profile, precision) row of ``base``."""
    cmp_ = Comparison()
    base_rows = dict(_keyed(base.get("results", [])))
    new_keys = set()
    for k, r in _keyed(new.get("results", [])):
        new_keys.add(k)
        name = f"{k[1]} {k[2]}"
        b = base_rows.get(k)
        v: dict[str, Any] = {"in_baseline": b is not None}
        if r.get("status") == "failed":
            if b is not None and b.get("status") == "failed":
                v["verdict"] = "still failing"  # known failure: reported, not a new error
            else:
                cmp_.conditions["error"].append(f"{name}: failed: {r.get('error')}")
                v["verdict"] = "failed"
            cmp_.rows[k] = v
            continue
        if r.get("status") != "ok":
            v["verdict"] = r.get("status")
            cmp_.rows[k] = v
            continue
        lat = compare_latency(r.get("latency_ms"), (b or {}).get("latency_ms") if b and b.get("status") == "ok"
                              else None, min_effect)
        v.update(lat)
        if lat["regression"]:
            cmp_.conditions["regression"].append(f"{name}: {lat['detail']}")
        drift = r.get("drift") or {}
        bad = [f"{c['name']} {c['value']} vs {c['limit']}" for c in drift.get("checks", []) if c.get("pass") is False]
        if bad:
            cmp_.conditions["drift"].append(f"{name}: drift beyond tolerance ({'; '.join(bad)})")
        t = r.get("task")
        if t and t.get("pass") is False:
            cmp_.conditions["drift"].append(f"{name}: {t['metric']} dropped {-t['delta']:.2f} vs the reference "
                                            f"(budget {t.get('tolerance')})")
        bt = (b or {}).get("task")
        if t and bt and bt.get("metric") == t.get("metric") and t.get("tolerance") is not None and \
                isinstance(t.get("value"), (int, float)) and isinstance(bt.get("value"), (int, float)):
            drop = bt["value"] - t["value"]
            v["task_change"] = -drop
            if drop > t["tolerance"]:
                cmp_.conditions["drift"].append(f"{name}: {t['metric']} {t['value']:.2f} is {drop:.2f} below the "
                                                f"baseline's {bt['value']:.2f} (budget {t['tolerance']})")
        cmp_.rows[k] = v
    for k, b in base_rows.items():
        if k not in new_keys and b.get("status") == "ok":
            cmp_.conditions["error"].append(f"{k[1]} {k[2]}: in the baseline but missing from the new report")
    return cmp_


def annotate(report: dict[str, Any], cmp_: Comparison, fail_on: tuple[str, ...], baseline: str | None) -> None:
    """Attach per-row verdicts and the summary to the report (so the md/html/junit writers show them)."""
    for k, r in _keyed(report.get("results", [])):
        v = cmp_.rows.get(k)
        if v is not None:
            r["comparison"] = v
    report["comparison"] = cmp_.to_dict(fail_on, baseline)
