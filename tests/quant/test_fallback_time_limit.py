"""The float-fallback search starts no new attempt once its time limit has passed (a segmentation network's
attempts took minutes each); the best keep set found so far stands and the reason says why the search stopped."""

from __future__ import annotations

from edgeconv.quant.fallback import repair


def _build(deltas: dict[int, float]):
    calls: list[tuple[str, ...]] = []

    def build(keep: tuple[str, ...]):
        calls.append(keep)
        return None, deltas.get(len(keep), 0.0), {}

    return build, calls


def test_time_limit_stops_the_search_after_the_attempt_in_flight() -> None:
    build, calls = _build({0: -5.0, 1: -3.0, 2: -0.2})
    res = repair(build, ["a", "b", "c", "d"], budget=0.5, max_attempts=12, time_limit_s=0.0)
    assert calls == [()]  # the baseline ran; nothing started after the limit
    assert not res.ok and "int8_fallback_time_s" in res.reason


def test_without_a_limit_the_same_search_finds_the_keep_set() -> None:
    build, calls = _build({0: -5.0, 1: -3.0, 2: -0.2})
    res = repair(build, ["a", "b", "c", "d"], budget=0.5, max_attempts=12)
    assert res.ok and len(res.keep) == 2 and len(calls) > 1


def test_a_keep_set_past_the_float_share_is_refused() -> None:
    # only keeping 7 of the 8 layers passes: that is no INT8 model (the bundled detector on one flat calibration
    # image "passed" with 197 of 200 layers in float), so the search's result is refused with the reason
    build, _ = _build({0: -78.0, 1: -78.0, 2: -78.0, 4: -78.0, 5: -78.0, 6: -78.0, 7: 0.0, 8: 0.0})
    names = [f"l{i}" for i in range(8)]
    res = repair(build, names, budget=1.0, max_attempts=12, max_float=0.5)
    assert not res.ok and "int8_fallback_max_float" in res.reason and "calibration data" in res.reason
    assert repair(_build({0: -78.0, 1: -78.0, 2: -78.0, 4: -78.0, 5: -78.0, 6: -78.0})[0], names, budget=1.0,
                  max_float=1.0).ok  # without the share limit the same search adopts the 7-layer set


def test_mnn_attempts_all_run_the_activation_method_a_keep_set_needs(tmp_path) -> None:
    from edgeconv.plan import PlanRow, _search_options
    from edgeconv.profiles import load_profile

    row = PlanRow(load_profile("mnn"), "int8", tmp_path)
    assert _search_options(row)["feature_method"] == "KL"  # EMA (the default) ignores skip lists
    assert "feature_method" not in _search_options(PlanRow(load_profile("mnn"), "int8", tmp_path,
                                                           options={"calib_method": "minmax"}))
    assert "feature_method" not in _search_options(PlanRow(load_profile("onnxruntime"), "int8", tmp_path))
