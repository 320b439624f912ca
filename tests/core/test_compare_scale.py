"""A max_abs tolerance scales with each output's magnitude (as numpy.allclose with equal atol and rtol), so fp32
noise on large logits is not a wrong model, while outputs in [-1, 1] keep the absolute bar."""

from __future__ import annotations

import numpy as np

from edgeconv.bench.drift import compute_drift
from edgeconv.core.compare import compare_outputs, within


def _pair(scale: float, diff: float) -> tuple[list[dict], list[dict]]:
    rng = np.random.default_rng(0)
    ref = rng.uniform(-scale / 2, scale / 2, (1, 10, 50)).astype(np.float32)
    ref.flat[0] = scale  # the output's magnitude
    got = ref.copy()
    got.flat[7] += diff
    return [{"logits": ref, "prob": np.full((1, 4), 0.25, np.float32)}], \
        [{"logits": got, "prob": np.full((1, 4), 0.25, np.float32)}]


def test_large_outputs_are_judged_relative_to_their_scale() -> None:
    refs, gots = _pair(100.0, 5e-3)  # 5e-5 of the output's scale: fp32 noise
    d = compare_outputs(refs, gots)
    assert d["max_abs"] > 1e-4 and within(d, {"max_abs": 1e-4})[0]
    refs, gots = _pair(100.0, 1.0)  # 1e-2 of the scale: a wrong model
    ok, fails = within(compare_outputs(refs, gots), {"max_abs": 1e-4})
    assert not ok and "output scale 100" in fails[0]


def test_small_outputs_keep_the_absolute_bar() -> None:
    refs, gots = _pair(0.5, 5e-4)
    ok, fails = within(compare_outputs(refs, gots), {"max_abs": 1e-4})
    assert not ok and fails == ["max_abs 0.0005 > 0.0001 (output 'logits')"]


def test_the_failing_output_is_named_with_its_own_numbers() -> None:
    """Boxes off by 0.3 on a scale of 332 pass; probabilities off by 0.01 fail: the message is the probabilities'
    (it printed the boxes' 0.3 beside the probabilities' scale)."""
    boxes = np.linspace(0, 332, 400, dtype=np.float32).reshape(1, 100, 4)
    probs = np.full((1, 100, 2), 0.5, np.float32)
    got_b, got_p = boxes.copy(), probs.copy()
    got_b.flat[5] += 0.03
    got_p.flat[3] += 0.01
    d = compare_outputs([{"boxes": boxes, "probs": probs}], [{"boxes": got_b, "probs": got_p}])
    ok, fails = within(d, {"max_abs": 1e-3})
    assert not ok and d["worst_output"] == "probs"
    assert fails == ["max_abs 0.01 > 0.001 (output 'probs')"]


def test_report_check_shows_the_effective_limit() -> None:
    refs, gots = _pair(100.0, 5e-3)
    (check,) = [c for c in compute_drift(refs, gots, {"max_abs": 1e-4})["checks"] if c["name"] == "max_abs"]
    assert check["pass"] and check["limit"] == 1e-4 * 100.0 and check["value"] > 1e-4


def test_artifact_keys_cover_edgeconv_source(tiny_prepared, monkeypatch) -> None:
    """An artifact made by other edgeconv code (same version number) is rebuilt, not replayed from the cache."""
    from edgeconv import pipeline
    from edgeconv.profiles import load_profile

    backend, ctx = pipeline.build_context(tiny_prepared, load_profile("onnxruntime"), "fp32")
    before = pipeline.artifact_key(backend, ctx)
    assert before == pipeline.artifact_key(backend, ctx)
    monkeypatch.setattr(pipeline, "code_fingerprint", lambda: "0" * 64)  # as if a converter file had changed
    assert pipeline.artifact_key(backend, ctx) != before
