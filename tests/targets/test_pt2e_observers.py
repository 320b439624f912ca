"""The PT2E routes' histogram observer against torchao's own HistogramObserver: the same counts, so the same ranges."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torchao", reason="the PT2E observers need torchao (pip install 'edgeconv[tflite]')")

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from torchao.quantization.pt2e.observer import HistogramObserver  # noqa: E402

from edgeconv.core.errors import ConfigError  # noqa: E402
from edgeconv.targets.pt2e_observers import CHUNK, histc, histogram_observer, with_observer  # noqa: E402


def _observe(cls, tensors):
    obs = cls(dtype=torch.int8, quant_min=-128, quant_max=127, qscheme=torch.per_tensor_affine, eps=2**-12)
    for t in tensors:
        assert obs(t) is t  # an observer passes its input on untouched
    return obs


def _tensor(seed: int, n: int, kind: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, generator=g) * float(1 + 50 * torch.rand(1, generator=g))
    if kind == 1:
        x = x.relu()  # a ReLU'd bulk at exactly 0 (the first bin's edge)
    elif kind == 2:
        x = torch.sigmoid(x)
    elif kind == 3:
        x = (x * 8).round() / 8  # many values exactly on bin edges
    elif kind == 4:
        x.view(-1)[seed % n] = 1e4  # one far outlier
    return x


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**20), n=st.integers(2, 3 * CHUNK), kind=st.integers(0, 4),
       widen=st.floats(0.0, 3.0))
def test_counts_equal_torch_histc(seed, n, kind, widen):
    x = _tensor(seed, n, kind)
    lo, hi = torch.aminmax(x)
    lo, hi = lo - widen, hi + widen / 2  # a merged range wider than this tensor's, as after earlier samples
    if lo == hi:
        return
    assert torch.equal(histc(x, 2048, lo, hi), torch.histc(x, 2048, min=lo, max=hi))


def test_observer_state_and_qparams_equal_torchaos_over_a_growing_range():
    g = torch.Generator().manual_seed(0)
    tensors = []
    for i in range(6):  # ranges that grow (histograms merged) and one that does not
        x = torch.randn(1, 32, 160, 160, generator=g).relu() * (1 + i / 5)
        x.view(-1)[(7 + 613 * i) % x.numel()] = 40.0 + i
        tensors.append(x)
    tensors.append(tensors[0] * 0.5)
    full, fast = _observe(HistogramObserver, tensors), _observe(histogram_observer(), tensors)
    assert torch.equal(full.histogram, fast.histogram)
    assert float(fast.min_val) == float(full.min_val) and float(fast.max_val) == float(full.max_val)
    (s_full, z_full), (s_fast, z_fast) = full.calculate_qparams(), fast.calculate_qparams()
    assert torch.equal(s_full, s_fast) and torch.equal(z_full, z_fast)


@pytest.mark.parametrize("x", [torch.zeros(1, 8, 4, 4), torch.full((64,), 3.0), torch.tensor([1.0, float("inf"), -2.0]),
                               torch.randn(256).half()], ids=["zeros", "constant", "inf", "fp16"])
def test_inputs_the_fast_count_does_not_cover_take_torchaos_forward(x):
    full, fast = _observe(HistogramObserver, [x, x]), _observe(histogram_observer(), [x, x])
    assert torch.equal(full.histogram, fast.histogram)
    assert float(fast.min_val) == float(full.min_val) and float(fast.max_val) == float(full.max_val)


def test_unknown_observer_is_a_config_error():
    with pytest.raises(ConfigError, match="observer must be one of"):
        with_observer(object(), "kl", "tflite")


def test_constant_observers_are_observed_once_with_the_same_qparams() -> None:
    """Weight observers frozen after one sample end with the state (and qparams) of observing every sample."""
    import copy

    from torchao.quantization.pt2e.quantize_pt2e import prepare_pt2e

    litert = pytest.importorskip("litert_torch.quantize.pt2e_quantizer", reason="needs litert-torch's quantizer")

    from edgeconv.targets.pt2e_observers import ObserveConstantsOnce, constant_observers

    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
                              torch.nn.Conv2d(4, 2, 1)).eval()
    x = torch.randn(1, 3, 8, 8)
    gm = torch.export.export(net, (x,)).module()
    cfg = litert.get_symmetric_quantization_config(is_per_channel=True)
    prepared = prepare_pt2e(gm, litert.PT2EQuantizer().set_global(cfg))
    every = copy.deepcopy(prepared)
    consts = constant_observers(prepared)
    assert len(consts) == 2 and all(type(m).__name__ == "PerChannelMinMaxObserver" for m in consts)
    once = ObserveConstantsOnce(prepared)
    samples = [torch.randn(1, 3, 8, 8) * (i + 1) for i in range(4)]
    with torch.no_grad():
        for s in samples:
            prepared(s)
            every(s)
            once.after_sample()
            assert all(m.forward(s) is s for m in consts)  # passed through from the first sample on
    once.restore()
    assert all("forward" not in m.__dict__ for m in consts)
    a = {n: m for n, m in prepared.named_modules() if "activation_post_process" in n}
    b = {n: m for n, m in every.named_modules() if "activation_post_process" in n}
    for n, m in a.items():
        for qa, qb in zip(m.calculate_qparams(), b[n].calculate_qparams(), strict=True):
            assert torch.equal(qa, qb), n
