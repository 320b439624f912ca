"""Automatic float fallback: the fewest layers kept in float that bring an INT8 artifact inside its task budget.

Backend-agnostic: the caller gives ``build(keep_nodes) -> (artifact, delta)`` (delta in task points, negative =
worse than the reference; optionally a third element, a dict of extras such as ``latency_ms``), the layers ranked
by sensitivity (``sensitivity.rank_layers``) and the budget in points. The search:

1. exponential growth of the kept prefix of the ranked list (1, 2, 4, ...) until one is inside the budget;
2. bisection between the last prefix over budget and the first inside it (the smallest passing prefix, if the
   delta is monotone in the prefix — usually, not always);
3. greedy pruning: each kept layer, least sensitive first, is dropped again if the rest still passes (removes
   layers a non-monotone prefix carried along).

Layers the backend already keeps in float by its own defaults (ORT's output convs, say) are skipped: a build may
report them as ``extras["already_float"]`` (``pipeline_builder`` reads them from the artifact's manifest), or the
caller passes ``already_float``; keeping them again would spend attempts on no change.

Every build is an attempt recorded with its layers, delta and extras; the search stops at ``max_attempts``.
``pipeline_builder`` makes ``build`` from the pipeline's own ``convert_reference`` for a prepared model.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edgeconv.core.console import log
from edgeconv.core.errors import EdgeconvError

BuildResult = tuple[Any, float] | tuple[Any, float, dict[str, Any]]
Build = Callable[[tuple[str, ...]], BuildResult]


@dataclass
class Attempt:
    keep: list[str]
    delta: float | None
    passed: bool
    seconds: float
    stage: str  # baseline | grow | bisect | prune
    extras: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    artifact: str | None = None


@dataclass
class RepairResult:
    """What the search found: ``ok`` when ``keep`` (ONNX node names) brings the delta inside the budget."""

    ok: bool
    keep: tuple[str, ...]
    modules: list[str | None]
    delta: float | None
    budget: float
    baseline_delta: float | None
    attempts: list[Attempt]
    artifact: Any = None
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "keep_fp32_nodes": list(self.keep), "keep_fp32_modules": self.modules,
                "delta": self.delta, "budget": self.budget, "baseline_delta": self.baseline_delta,
                "reason": self.reason, "attempts": [asdict(a) for a in self.attempts],
                "artifact": str(getattr(self.artifact, "path", self.artifact)) if self.artifact is not None else None}


class _Exhausted(Exception):
    pass


def _names(ranked: Sequence[Any]) -> tuple[list[str], dict[str, str | None]]:
    names, mods = [], {}
    for r in ranked:
        if isinstance(r, str):
            n, m = r, None
        else:
            t = tuple(r)
            n, m = str(t[0]), (t[1] if len(t) > 1 else None)
        if n not in mods:
            names.append(n)
            mods[n] = m
    return names, mods


def repair(build: Build, ranked: Sequence[Any], budget: float, max_attempts: int = 12, *,
           baseline_delta: float | None = None, already_float: Sequence[str] = (),
           time_limit_s: float | None = None, max_float: float = 1.0) -> RepairResult:
    """Keep the fewest ranked layers in float that bring the task delta inside ``budget`` points.

    ``ranked``: node names, ``(node, module, score)`` tuples or ``Ranked`` objects, most sensitive first.
    ``baseline_delta``: the delta with nothing kept, when the caller already measured it (saves one build).
    ``time_limit_s``: no new attempt starts after this long (a segmentation network's attempts took minutes each);
    the best passing keep set found so far is the result, and the reason says the search was stopped.
    ``max_float``: the largest share of the ranked layers a keep set may hold. An artifact with most of its layers
    in float is no INT8 model (calibrated on one flat image, the bundled detector passed with 197 of 200 kept),
    and what it needs is other calibration data, not a longer list.
    """
    started = time.perf_counter()
    names, mods = _names(ranked)
    skip = set(already_float)
    names = [n for n in names if n not in skip]
    attempts: list[Attempt] = []
    seen: dict[tuple[str, ...], tuple[bool, float | None, Any]] = {}

    def key(keep: Sequence[str]) -> tuple[str, ...]:
        order = {n: i for i, n in enumerate(names)}
        return tuple(sorted(set(keep), key=lambda n: order.get(n, len(order))))

    def attempt(keep: Sequence[str], stage: str) -> bool:
        k = key(keep)
        if k in seen:
            return seen[k][0]
        if len(attempts) >= max_attempts:
            raise _Exhausted(f"stopped after {max_attempts} attempts")
        if time_limit_s is not None and attempts and time.perf_counter() - started > time_limit_s:
            raise _Exhausted(f"stopped after {time.perf_counter() - started:.0f} s (int8_fallback_time_s "
                             f"{time_limit_s:g}), {len(attempts)} attempts")
        t0 = time.perf_counter()
        delta, art, extras, err = None, None, {}, None
        try:
            res = build(k)
            art, delta = res[0], float(res[1])
            extras = dict(res[2]) if len(res) > 2 else {}  # type: ignore[misc]
        except EdgeconvError as e:
            err = e.one_line()
        ok = delta is not None and delta >= -budget
        attempts.append(Attempt(list(k), delta, ok, round(time.perf_counter() - t0, 3), stage, extras, err,
                                str(getattr(art, "path", "")) or None))
        log.info("fallback attempt %d (%s): %d layer(s) in float → delta %s (%s)", len(attempts), stage, len(k),
                 "n/a" if delta is None else f"{delta:+.3f}",
                 "inside" if ok else f"failed: {err}" if err else "over budget")
        seen[k] = (ok, delta, art)
        return ok

    best: tuple[str, ...] | None = None
    reason = ""
    try:
        if baseline_delta is None:
            if attempt((), "baseline"):
                best = ()
            skip = set(attempts[0].extras.get("already_float") or []) if attempts else set()
            names[:] = [n for n in names if n not in skip]
        elif baseline_delta >= -budget:
            best = ()
        if best is None:
            lo, hi, k = 0, None, 1
            while k <= len(names):
                if attempt(names[:k], "grow"):
                    hi = k
                    break
                lo = k
                k = min(2 * k, len(names)) if k < len(names) else len(names) + 1
            if hi is not None:
                while hi - lo > 1:
                    mid = (lo + hi) // 2
                    if attempt(names[:mid], "bisect"):
                        hi = mid
                    else:
                        lo = mid
                best = key(names[:hi])
                for n in reversed(best):
                    trial = tuple(x for x in best if x != n)
                    if trial and attempt(trial, "prune"):
                        best = trial
            else:
                reason = f"no prefix of the {len(names)} ranked layers brings the delta inside {budget:g} points"
    except _Exhausted as stop:
        reason = str(stop)
        log.warning("float fallback: %s", reason)
        passing = [key(a.keep) for a in attempts if a.passed]
        if best is None and passing:
            best = min(passing, key=len)
    if best is not None and len(best) > max_float * len(names):
        reason = (f"the smallest keep set found holds {len(best)} of the {len(names)} quantizable layers, over the "
                  f"{max_float:.0%} an INT8 model may keep in float (int8_fallback_max_float): the calibration data "
                  "or this backend's quantizer is the likelier cause (compare another backend's INT8)")
        best = None
    if best is None:
        done = [a for a in attempts if a.delta is not None]
        top = max(done, key=lambda a: a.delta) if done else None  # type: ignore[arg-type, return-value]
        keep = key(top.keep) if top else ()
        return RepairResult(False, keep, [mods.get(n) for n in keep], top.delta if top else None, budget,
                            baseline_delta if baseline_delta is not None else _baseline(attempts), attempts,
                            seen.get(keep, (False, None, None))[2], reason or "no attempt succeeded")
    _, delta, art = seen.get(best, (True, baseline_delta, None))
    return RepairResult(True, best, [mods.get(n) for n in best], delta, budget,
                        baseline_delta if baseline_delta is not None else _baseline(attempts), attempts, art, reason)


def _baseline(attempts: list[Attempt]) -> float | None:
    return next((a.delta for a in attempts if a.stage == "baseline"), None)


def as_patterns(nodes: Sequence[str]) -> tuple[str, ...]:
    """Node names as ``--keep-fp32`` patterns that match exactly those nodes (glob characters escaped)."""
    def esc(n: str) -> str:
        return "".join(f"[{c}]" if c in "*?[" else c for c in n)

    return tuple(esc(n) for n in nodes)


PERMISSIVE = {"max_abs": 1e30, "rel_l2": 1e30, "cosine": -1.0, "snr_db": -1e30, "task_delta": 1e9}


def pipeline_builder(prep: Any, target: Any, *, calibration: Any, evaluator: Any, out_root: str | Path,
                     precision: str = "int8", options: dict[str, Any] | None = None, use_cache: bool = True,
                     latency_runs: int = 10, accuracy_control: bool = False, keep_fp32: Sequence[str] = ()) -> Build:
    """``build(keep)`` over ``edgeconv.pipeline.convert_reference``: each attempt is a real conversion of ``target``
    with ``keep`` as ``--keep-fp32``, verified with blocking tolerances lifted (so an attempt over budget still
    yields its delta) and ``max_drop`` removed from the options (it would switch OpenVINO to NNCF's own search)
    unless ``accuracy_control`` (then an attempt over ``max_drop`` is a failed attempt, without its delta).
    The caller verifies the chosen attempt again under the real tolerances (``Planner.repair`` adopts it:
    ``convert_reference(..., adopt=...)``). ``latency_runs`` > 0 adds the median
    latency (ms) of the artifact on one evaluator input. ``keep_fp32``: the row's own patterns, kept in every attempt
    (first, in the order the caller's final conversion lists them, so the chosen attempt is that very conversion)."""
    from edgeconv.pipeline import convert_reference
    from edgeconv.plan import with_tolerances
    from edgeconv.profiles import Profile, load_profile

    profile = target if isinstance(target, Profile) else load_profile(str(target))
    relaxed = with_tolerances(profile, {precision: dict(PERMISSIVE)})
    opts = {k: v for k, v in (options or {}).items() if accuracy_control or k != "max_drop"}
    root = Path(out_root)
    counter = [0]

    def build(keep: tuple[str, ...]) -> BuildResult:
        counter[0] += 1
        out = root / f"attempt-{counter[0]:02d}"
        art = convert_reference(prep, relaxed, out=out, precision=precision, calibration=calibration,
                                keep_fp32=tuple(dict.fromkeys((*keep_fp32, *as_patterns(keep)))), options=opts,
                                use_cache=use_cache, evaluator=evaluator)
        task = (art.manifest.get("verification") or {}).get("task") or {}
        if task.get("delta") is None:
            raise EdgeconvError("the attempt was not scored on the task (no evaluator reached verification)")
        conv = art.manifest.get("conversion") or {}
        extras: dict[str, Any] = {"already_float": sorted(set(conv.get("kept_fp32") or conv.get("float_layers") or [])
                                                          - set(keep))}
        if latency_runs > 0 and evaluator is not None and evaluator.items:
            extras["latency_ms"] = _latency(art, profile, evaluator.items[0][0], latency_runs)
        return art, float(task["delta"]), extras

    return build


def _latency(art: Any, profile: Any, feed: dict[str, Any], runs: int) -> float | None:
    import statistics

    from edgeconv.targets.registry import get_target

    try:
        with get_target(art.target).runner(art, threads=profile.threads or None) as r:
            for _ in range(2):
                r.infer(feed)
            times = []
            for _ in range(runs):
                t0 = time.perf_counter()
                r.infer(feed)
                times.append((time.perf_counter() - t0) * 1000)
        return round(statistics.median(times), 4)
    except Exception as e:  # noqa: BLE001 - latency is an extra: an artifact that cannot run here still has a delta
        log.debug("fallback latency not measured: %s", e)
        return None
