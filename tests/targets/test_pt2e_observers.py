"""The sampled histogram observer of the PT2E routes against torchao's full HistogramObserver."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torchao", reason="the PT2E observers need torchao (pip install 'edgeconv[tflite]')")

from torchao.quantization.pt2e.observer import HistogramObserver  # noqa: E402

from edgeconv.core.errors import ConfigError  # noqa: E402
from edgeconv.targets.pt2e_observers import SAMPLE_ABOVE, sampled_histogram_observer, with_observer  # noqa: E402


def _observe(cls, tensors):
    obs = cls(dtype=torch.int8, quant_min=-128, quant_max=127, qscheme=torch.per_tensor_affine, eps=2**-12)
    for t in tensors:
        assert obs(t) is t  # an observer passes its input on untouched
    return obs


def test_range_is_every_elements_and_qparams_match_the_full_histogram():
    g = torch.Generator().manual_seed(0)
    # activation-like: a ReLU'd bulk with a few far outliers the range search must weigh, over several samples
    tensors = []
    for i in range(6):
        x = torch.randn(1, 32, 160, 160, generator=g).relu() * (1 + i / 5)
        x.view(-1)[(7 + 613 * i) % x.numel()] = 40.0 + i  # one outlier per sample, at positions a 1/4 stride may skip
        tensors.append(x)
    assert tensors[0].numel() > SAMPLE_ABOVE
    full, sampled = _observe(HistogramObserver, tensors), _observe(sampled_histogram_observer(), tensors)
    assert float(sampled.min_val) == float(full.min_val) and float(sampled.max_val) == float(full.max_val)
    (s_full, z_full), (s_samp, z_samp) = full.calculate_qparams(), sampled.calculate_qparams()
    assert abs(float(s_samp) / float(s_full) - 1) < 0.05
    assert abs(int(z_samp) - int(z_full)) <= 2


def test_without_outliers_the_scale_stays_within_five_percent():
    g = torch.Generator().manual_seed(1)
    tensors = [torch.randn(1, 64, 80, 80, generator=g).relu() * (1 + i / 5) for i in range(6)]
    full, sampled = _observe(HistogramObserver, tensors), _observe(sampled_histogram_observer(), tensors)
    assert abs(float(sampled.calculate_qparams()[0]) / float(full.calculate_qparams()[0]) - 1) < 0.05


def test_small_tensors_are_observed_whole():
    x = torch.randn(1, 16, 80, 80)  # 102 400 elements: below SAMPLE_ABOVE
    full, sampled = _observe(HistogramObserver, [x]), _observe(sampled_histogram_observer(), [x])
    assert torch.equal(full.histogram, sampled.histogram)


def test_unknown_observer_is_a_config_error():
    with pytest.raises(ConfigError, match="observer must be one of"):
        with_observer(object(), "kl", "tflite")
