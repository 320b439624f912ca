"""Re-measure the committed checkpoints' FP32 quality on the eval split (slow: ~1 min on 2 cores)."""

from __future__ import annotations

import pytest

from edgeconv.zoo import BUNDLED

BARS = {
    "yolo": {"map50": 0.90, "map50_95": 0.60},
    "centernet": {"map50": 0.85},
    "classifier": {"top1": 0.95},
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(BARS))
def test_fp32_quality_bars(name: str) -> None:
    pytest.importorskip("torch")
    if not BUNDLED[name].weights.is_file():
        pytest.skip("checkpoint not trained yet")
    from edgeconv.zoo.evaluate import evaluate_bundled

    metrics = evaluate_bundled(name)
    for key, bar in BARS[name].items():
        assert metrics[key] >= bar, f"{name} {key}={metrics[key]} < {bar}"
