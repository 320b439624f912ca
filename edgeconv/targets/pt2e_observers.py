"""Activation observers of the PT2E routes (TFLite, ExecuTorch), which may not import each other.

``sampled-histogram`` (the default of both): torchao's HistogramObserver, histogramming every ``SAMPLE_STRIDE``-th
element of a large activation while its range still comes from every element: only the ``torch.histc`` calls of its
forward see the sample; range tracking, histogram merging and the L2 range search are the parent's. ``torch.histc``
costs ~5 ns an element on one core, the largest part of PT2E calibration on a detector (14 of 32 s for YOLO11n at
320 on 256 images), and a 1/4 sample of a tensor over 2**18 elements gives the range search the same histogram.
Below that the search (greedy: it stops at the first step whose error grows) can read a sampled tail differently —
one outlier in a 100k-element activation moved the scale 4.6x in a test — so smaller tensors are histogrammed whole.
``histogram``: the quantizers' own default, every element. ``minmax``: ranges set by the extremes (several times
faster; mAP50-95 -1.14 on the bundled detector where the full histogram gives -0.66).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from edgeconv.core.errors import ConfigError

OBSERVERS = ("sampled-histogram", "histogram", "minmax")
DEFAULT_OBSERVER = "sampled-histogram"
#: Tensors above this many elements are histogrammed on every SAMPLE_STRIDE-th element.
SAMPLE_ABOVE, SAMPLE_STRIDE = 2**18, 4


def sampled_histogram_observer() -> Any:
    """The HistogramObserver subclass described in the module docstring (built lazily: torchao is heavy)."""
    import torch
    from torchao.quantization.pt2e.observer import HistogramObserver

    class SampledHistogramObserver(HistogramObserver):
        """HistogramObserver.forward with ``torch.histc`` counting a strided sample; range, merging and the L2
        search are the parent's. (The sample's counts are a quarter of the whole's for every call of one
        observer — one node, one shape — and the search's argmin does not change with a common scale.)"""

        def forward(self, x_orig: torch.Tensor) -> torch.Tensor:
            if x_orig.numel() <= SAMPLE_ABOVE:
                return super().forward(x_orig)
            x = x_orig.detach()
            lo, hi = torch.aminmax(x)
            if not (torch.isfinite(lo) and torch.isfinite(hi)):
                return super().forward(x_orig)  # the parent drops infinities; rare, so not worth a second path
            sample = x.reshape(-1)[::SAMPLE_STRIDE]
            if self.min_val == float("inf") or self.max_val == float("-inf"):
                self.min_val.detach_().resize_(lo.shape).copy_(lo)
                self.max_val.detach_().resize_(hi.shape).copy_(hi)
                h = torch.histc(sample, self.bins, min=lo, max=hi)  # type: ignore[arg-type]
                self.histogram.detach_().resize_(h.shape).copy_(h)
                return x_orig
            cur_lo, cur_hi = self.min_val, self.max_val
            new_lo, new_hi = torch.min(cur_lo, lo).detach(), torch.max(cur_hi, hi).detach()
            update = torch.histc(sample, self.bins, min=new_lo, max=new_hi)  # type: ignore[arg-type]
            if new_lo == cur_lo and new_hi == cur_hi:
                combined = self.histogram + update
            else:
                combined = self._combine_histograms(self.histogram, cur_lo, cur_hi, update, new_lo, new_hi)
                self.min_val.detach_().resize_(new_lo.shape).copy_(new_lo)
                self.max_val.detach_().resize_(new_hi.shape).copy_(new_hi)
            self.histogram.detach_().resize_(combined.shape).copy_(combined)
            return x_orig

    return SampledHistogramObserver


def with_observer(config: Any, observer: str, route: str) -> Any:
    """``config`` (a PT2E QuantizationConfig) with its activation observer replaced as ``observer`` asks."""
    if observer not in OBSERVERS:
        raise ConfigError(f"{route} int8 observer must be one of {OBSERVERS}, not {observer!r}")
    if observer == "histogram":
        return config
    if observer == "minmax":
        from torchao.quantization.pt2e.observer import MinMaxObserver

        cls = MinMaxObserver
    else:
        cls = sampled_histogram_observer()
    act = dataclasses.replace(config.input_activation, observer_or_fake_quant_ctr=cls.with_args(eps=2**-12))
    return dataclasses.replace(config, input_activation=act, output_activation=act)
