"""The float fallback: the issue's failure patterns are over a 0.5-point budget on ORT INT8, and the search fixes
each by keeping the layers it names in float (verified by a real conversion under the budget)."""

from __future__ import annotations

import pytest

from edgeconv.core.errors import ConfigError, VerificationError
from edgeconv.quant import Ranked, as_patterns, pipeline_builder, rank_layers, repair
from edgeconv.quant.fallback import Attempt

BUDGET = 0.5


def _profile(task_delta: float = BUDGET, cosine: float | None = None):
    from edgeconv.plan import with_tolerances
    from edgeconv.profiles import load_profile

    tol = {"task_delta": task_delta, **({"cosine": cosine} if cosine is not None else {})}
    return with_tolerances(load_profile("onnxruntime"), {"int8": tol})


@pytest.mark.parametrize("name", ["norm", "concat", "outlier"])
def test_ort_int8_is_over_budget(pattern, name: str, tmp_path) -> None:
    from edgeconv.pipeline import convert_reference

    prep, cal, ev = pattern(name)
    with pytest.raises(VerificationError, match=r"task \w+ drops") as e:
        convert_reference(prep, _profile(), out=tmp_path / "int8", precision="int8", calibration=cal, evaluator=ev)
    drop = float(e.value.message.split("drops ")[1].split()[0])
    assert drop > 5 * BUDGET  # not a marginal miss: the pattern really breaks per-tensor INT8


#: layers the fallback must keep in float for each pattern (ONNX node names of the legacy export)
EXPECTED = {"norm": {"/inner/Mul", "/inner/Add"}, "concat": {"/inner/Concat"},
            "outlier": {"/inner/Add", "/inner/conv2/Conv"}}


@pytest.mark.parametrize("name", ["norm", "concat", "outlier"])
def test_fallback_fixes_pattern(pattern, name: str, tmp_path) -> None:
    from edgeconv.calibration.stats import compute_stats
    from edgeconv.pipeline import convert_reference

    prep, cal, ev = pattern(name)
    ref = prep.reference
    stats = compute_stats(ref.onnx_path, ref.sha256, cal, "minmax")
    ranked = rank_layers(ref.onnx_path, cal.feeds(), stats)
    assert all(isinstance(r, Ranked) for r in ranked) and ranked[0].score >= ranked[-1].score
    build = pipeline_builder(prep, "onnxruntime", calibration=cal, evaluator=ev, out_root=tmp_path / "attempts",
                             latency_runs=3)
    res = repair(build, ranked, BUDGET, max_attempts=12)
    assert res.ok, res.to_dict()
    assert set(res.keep) == EXPECTED[name]
    assert res.baseline_delta is not None and res.baseline_delta < -BUDGET
    assert res.delta is not None and res.delta >= -BUDGET
    assert res.attempts[0].stage == "baseline" and all(a.extras.get("latency_ms") for a in res.attempts)
    assert all(m for m in res.modules)  # every kept node is named by a module (or "(model forward)")
    # the chosen keep set, converted under the real budget, is accepted
    art = convert_reference(prep, _profile(cosine=0.9), out=tmp_path / "fixed", precision="int8", calibration=cal,
                            evaluator=ev, keep_fp32=as_patterns(res.keep))
    task = art.manifest["verification"]["task"]
    assert task["delta"] >= -BUDGET
    assert set(art.manifest["keep_fp32_nodes"]) == set(res.keep)


def _oracle(needed: set[str], calls: list[tuple[str, ...]]):
    """A build whose delta is -10 until every needed node is kept (-0.1 after)."""
    def build(keep: tuple[str, ...]):
        calls.append(keep)
        return f"art-{len(calls)}", (-0.1 if needed <= set(keep) else -10.0), {"latency_ms": 1.0 + len(keep)}
    return build


def test_repair_finds_the_minimal_set_and_records_attempts() -> None:
    ranked = [("a", "m.a", 9.0), ("b", "m.b", 8.0), ("c", "m.c", 7.0), ("d", "m.d", 6.0), ("e", "m.e", 5.0)]
    calls: list[tuple[str, ...]] = []
    res = repair(_oracle({"a", "d"}, calls), ranked, 0.5, max_attempts=20)
    assert res.ok and res.keep == ("a", "d") and res.modules == ["m.a", "m.d"]
    assert res.baseline_delta == -10.0 and res.delta == pytest.approx(-0.1)
    assert [a.stage for a in res.attempts][:3] == ["baseline", "grow", "grow"]
    assert len(calls) == len(set(calls)) == len(res.attempts)  # no keep set is built twice
    assert res.artifact is not None and res.to_dict()["keep_fp32_modules"] == ["m.a", "m.d"]


def test_repair_stops_at_max_attempts_and_says_so() -> None:
    calls: list[tuple[str, ...]] = []
    res = repair(_oracle({"z"}, calls), ["a", "b", "c", "d", "e", "f"], 0.5, max_attempts=3)
    assert not res.ok and len(res.attempts) == 3 and "3 attempts" in res.reason


def test_repair_without_a_passing_prefix() -> None:
    res = repair(_oracle({"z"}, []), ["a", "b"], 0.5, max_attempts=10)
    assert not res.ok and "no prefix" in res.reason and res.delta == -10.0


def test_repair_records_failed_builds() -> None:
    def build(keep: tuple[str, ...]):
        if keep == ("a",):
            raise ConfigError("boom")
        return None, (0.0 if len(keep) >= 2 else -3.0)

    res = repair(build, ["a", "b", "c"], 0.5)
    failed = [a for a in res.attempts if a.error]
    assert res.ok and res.keep == ("a", "b") and failed and isinstance(failed[0], Attempt)
    assert "boom" in failed[0].error


def test_as_patterns_match_exactly() -> None:
    import fnmatch

    pats = as_patterns(["/m/conv[0]/Conv", "a*b"])
    assert fnmatch.fnmatchcase("/m/conv[0]/Conv", pats[0]) and not fnmatch.fnmatchcase("/m/conv0/Conv", pats[0])
    assert fnmatch.fnmatchcase("a*b", pats[1]) and not fnmatch.fnmatchcase("axxb", pats[1])
