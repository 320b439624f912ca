"""The paired bootstrap interval of a task delta, for every task block ``task_metric`` writes."""

from __future__ import annotations

import numpy as np
import pytest

from edgeconv.bench import metrics
from edgeconv.bench.datasets import EvalData
from edgeconv.bench.detection import Detections
from edgeconv.bench.evaluate import task_metric
from edgeconv.tasks import bootstrap_ci, paired_ci


def test_paired_interval_agrees_with_the_normal_approximation() -> None:
    rng = np.random.default_rng(0)
    n = 400
    ref = (rng.random(n) < 0.8).astype(float)
    got = np.where(rng.random(n) < 0.1, 1 - ref, ref)  # the artifact flips 10 % of the decisions

    def pct(rows: np.ndarray) -> float:
        return 100.0 * float(rows.mean())

    lo, hi = paired_ci(got, ref, pct)
    d = 100 * (got - ref)
    half = 1.96 * d.std(ddof=1) / np.sqrt(n)
    assert lo == pytest.approx(d.mean() - half, abs=0.35 * half)
    assert hi == pytest.approx(d.mean() + half, abs=0.35 * half)
    assert paired_ci(got, ref, pct) == [lo, hi]  # fixed seed: reproducible
    unpaired_half = 1.96 * np.sqrt(got.var() / n + ref.var() / n) * 100
    assert hi - lo < 2 * unpaired_half  # pairing removes the variance both models share
    assert paired_ci(ref, ref, pct) == [0.0, 0.0]
    assert bootstrap_ci(1, lambda idx: 0.0) is None


def _dets(rng: np.random.Generator, gt: np.ndarray, jitter: float) -> Detections:
    boxes = gt + rng.normal(scale=jitter, size=gt.shape)
    return Detections(boxes.astype(np.float32), rng.uniform(0.3, 1.0, len(gt)).astype(np.float32),
                      np.zeros(len(gt), np.int64))


def test_map_from_parts_equals_map_numpy_and_its_interval() -> None:
    rng = np.random.default_rng(1)
    gts, ref, got = [], [], []
    for _ in range(40):
        xy = rng.uniform(0, 200, (3, 2))
        g = np.concatenate([xy, xy + rng.uniform(20, 50, (3, 2))], 1)
        gts.append((g, np.zeros(3, np.int64)))
        ref.append(_dets(rng, g, 1.0))
        got.append(_dets(rng, g, 4.0))
    parts = metrics.map_parts(got, gts)
    assert metrics.map_from_parts(parts) == metrics.map_numpy(got, gts)
    idx = np.array([0, 0, 5, 7])
    assert metrics.map_from_parts(parts, idx)["map50_95"] == pytest.approx(
        metrics.map_numpy([got[i] for i in idx], [gts[i] for i in idx])["map50_95"])
    rng_idx = np.random.default_rng(3)
    sets = [np.arange(40), *[rng_idx.integers(0, 40, 40) for _ in range(5)]]
    many = metrics.map_resampled(parts, np.stack([np.bincount(i, minlength=40) for i in sets]))
    for b, i in enumerate(sets):  # all sets accumulated at once == each set accumulated on its own
        one = metrics.map_from_parts(parts, i)
        assert many["map50_95"][b] == pytest.approx(one["map50_95"], abs=1e-12)
        assert many["map50"][b] == pytest.approx(one["map50"], abs=1e-12)
    assert many["map50_95"][0] == pytest.approx(metrics.map_numpy(got, gts)["map50_95"], abs=1e-12)
    lo, hi = metrics.map_delta_ci(got, ref, gts)
    delta = 100 * (metrics.map_numpy(got, gts)["map50_95"] - metrics.map_numpy(ref, gts)["map50_95"])
    assert lo <= delta <= hi < 0  # the noisier boxes lose mAP, and 40 images are enough to say so
    assert metrics.map_delta_ci(ref, ref, gts) == [0.0, 0.0]
    memo: dict = {}  # the reference side, resampled once for every row scored against it
    assert metrics.map_delta_ci(got, ref, gts, memo=memo) == [lo, hi]
    calls = []
    real = metrics.map_resampled
    try:
        metrics.map_resampled = lambda *a, **k: calls.append(1) or real(*a, **k)  # type: ignore[assignment]
        assert metrics.map_delta_ci(got, ref, gts, memo=memo) == [lo, hi]
    finally:
        metrics.map_resampled = real  # type: ignore[assignment]
    assert len(calls) == 1  # only the row's own side


def _cls_data(labels: list[int] | None, n: int) -> EvalData:
    return EvalData([{"x": np.zeros(1)} for _ in range(n)], [{} for _ in range(n)], labels, "classification", "t")


def test_task_metric_blocks_carry_the_interval() -> None:
    rng = np.random.default_rng(2)
    n = 60
    refs = [{"logits": rng.normal(size=(1, 5)).astype(np.float32)} for _ in range(n)]
    gots = [{"logits": r["logits"] + rng.normal(scale=0.8, size=(1, 5)).astype(np.float32)} for r in refs]
    labels = [int(r["logits"].argmax()) if i % 4 else 0 for i, r in enumerate(refs)]
    post = metrics.softmax
    block, post_ms = task_metric("classification", post, refs, gots, _cls_data(labels, n), {"task_delta": 1.0})
    assert block["metric"] == "top1" and block["pass"] is (block["delta"] >= -1.0) and post_ms["n"] == n
    lo, hi = block["delta_ci95"]
    assert lo <= block["delta"] <= hi
    free, _ = task_metric("classification", post, refs, gots, _cls_data(None, n), {})
    assert free["metric"] == "top1_agreement" and free["delta_ci95"][0] <= free["delta"] <= free["delta_ci95"][1] <= 0
    assert free["pass"] is None  # no budget in the profile


def test_task_metric_scores_ctc_without_a_postprocessor() -> None:
    x = np.zeros((1, 3, 4), np.float32)  # NCT, blank 0: steps 1 1 0 2 -> "ab"
    x[0, [1, 1, 0, 2], np.arange(4)] = 1.0
    y = x.copy()
    y[0, :, 3] = [0.0, 0.0, 0.0]  # last step ties -> blank -> "a"
    data = EvalData([{"x": np.zeros(1)}] * 4, [{}] * 4, ["ab"] * 4, "ctc:alphabet=ab,layout=NCT", "t")
    block, post_ms = task_metric(data.task, None, [{"o": x}] * 4, [{"o": x}, {"o": y}, {"o": x}, {"o": x}], data,
                                 {"task_delta": 10.0})
    assert (block["metric"], block["reference"], block["value"], block["delta"]) == ("exact_match", 100.0, 75.0, -25.0)
    assert block["pass"] is False and block["unit"] == "%" and post_ms["n"] == 4
    assert block["extra"]["cer"] == pytest.approx(100 / 8)
    lo, hi = block["delta_ci95"]
    assert -100.0 <= lo <= -25.0 <= hi <= 0.0
