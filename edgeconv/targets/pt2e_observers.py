"""Activation observers of the PT2E routes (TFLite, ExecuTorch), which may not import each other.

``histogram`` (the default of both): torchao's HistogramObserver — its range tracking, histogram merging and L2
range search — with each histogram counted by :func:`histc` instead of ``torch.histc``. The counts are the same,
bin for bin (a test compares them on edge-heavy and outlier tensors); the time is not: ``torch.histc`` costs
~12 ns an element on one core here, the largest part of PT2E calibration on a detector (YOLO11n at 320: 414
observed tensors, 19.6 M elements a sample, ~250 of the observed graph's 340 ms a calibration image), where
the bin index computed elementwise and counted by ``torch.bincount`` costs ~2 ns. ``minmax``: ranges set by the
extremes (faster still; mAP50-95 -1.14 on the bundled detector where the histogram gives -0.66).
"""

from __future__ import annotations

import dataclasses
import math
import threading
from typing import Any

from edgeconv.core.errors import ConfigError

OBSERVERS = ("histogram", "minmax")
DEFAULT_OBSERVER = "histogram"
#: Tensors are counted in chunks of this many elements through per-thread scratch buffers: fresh megabyte-sized
#: temporaries per call cost page faults (a 409 600-element tensor: 4.1 ms with them, 1.1 ms without).
CHUNK = 2**18
#: Up to this many elements ``torch.histc`` itself is as fast (the count's fixed cost is a dozen tensor ops).
SMALL = 2**13
_scratch = threading.local()


def histc(x: Any, bins: int, lo: Any, hi: Any) -> Any:
    """``torch.histc(x, bins, min=lo, max=hi)`` for a float32 ``x`` inside ``[lo, hi]``, ``lo < hi``: the bin of an
    element is ``int((x - lo) * bins / (hi - lo))`` in float32, as ``torch.histc``'s linear kernel computes it, with
    ``hi`` itself in the last bin (counted in an extra bin ``bins``, then added to ``bins - 1``)."""
    import torch

    flat = x.reshape(-1)
    n = flat.numel()
    if n <= SMALL:
        return torch.histc(x, bins, min=lo, max=hi)  # type: ignore[arg-type]
    if getattr(_scratch, "f", None) is None:
        _scratch.f, _scratch.i = torch.empty(CHUNK), torch.empty(CHUNK, dtype=torch.int32)
    width, counts = hi - lo, None
    for start in range(0, n, CHUNK):
        m = min(CHUNK, n - start)
        f, i = _scratch.f[:m], _scratch.i[:m]
        torch.sub(flat[start:start + m], lo, out=f)
        f.mul_(bins).div_(width)
        i.copy_(f)  # float -> int32 truncates toward zero, as the kernel's cast does
        part = torch.bincount(i, minlength=bins + 1)
        counts = part if counts is None else counts.add_(part)
    assert counts is not None
    counts[bins - 1] += counts[bins]
    return counts[:bins].to(x.dtype)


def histogram_observer() -> Any:
    """The HistogramObserver subclass described in the module docstring (built lazily: torchao is heavy)."""
    import torch
    from torchao.quantization.pt2e.observer import HistogramObserver

    class FastHistogramObserver(HistogramObserver):
        """HistogramObserver.forward with ``torch.histc`` replaced by :func:`histc` (same counts). Inputs the fast
        count does not cover — not float32, infinities, a constant tensor — take the parent's own forward."""

        def forward(self, x_orig: torch.Tensor) -> torch.Tensor:
            x = x_orig.detach()
            if x.dtype != torch.float32 or x.numel() == 0:
                return super().forward(x_orig)
            lo, hi = torch.aminmax(x)
            lo_f, hi_f = lo.item(), hi.item()  # the decisions below on Python floats: no tensor op each
            if not (math.isfinite(lo_f) and math.isfinite(hi_f)) or lo_f == hi_f:
                return super().forward(x_orig)
            cur_lo_f, cur_hi_f = self.min_val.item(), self.max_val.item()
            if cur_lo_f == math.inf or cur_hi_f == -math.inf:
                self.min_val.resize_(lo.shape).copy_(lo)
                self.max_val.resize_(hi.shape).copy_(hi)
                h = histc(x, self.bins, lo, hi)
                self.histogram.detach_().resize_(h.shape).copy_(h)
                return x_orig
            if lo_f >= cur_lo_f and hi_f <= cur_hi_f:  # inside the range so far: counts add up
                self.histogram.add_(histc(x, self.bins, self.min_val, self.max_val))
                return x_orig
            cur_lo, cur_hi = self.min_val.clone(), self.max_val.clone()
            new_lo, new_hi = torch.min(cur_lo, lo), torch.max(cur_hi, hi)
            update = histc(x, self.bins, new_lo, new_hi)
            combined = self._combine_histograms(self.histogram, cur_lo, cur_hi, update, new_lo, new_hi)
            self.min_val.resize_(new_lo.shape).copy_(new_lo)
            self.max_val.resize_(new_hi.shape).copy_(new_hi)
            self.histogram.detach_().resize_(combined.shape).copy_(combined)
            return x_orig

    return FastHistogramObserver


def constant_observers(gm: Any) -> list[Any]:
    """The observer modules of a prepared PT2E graph whose input depends on no graph input (weights, folded
    weights, constants): one calibration sample gives them their final state."""
    const: set[Any] = set()
    found = []
    for node in gm.graph.nodes:
        if node.op == "get_attr" or (node.op in ("call_function", "call_method", "call_module")
                                     and all(a in const for a in node.all_input_nodes)
                                     and node.all_input_nodes):
            if node.op == "call_module" and "activation_post_process" in str(node.target):
                found.append(gm.get_submodule(str(node.target)))
            const.add(node)
    return found


class ObserveConstantsOnce:
    """Calibration loop helper: after the first sample, the observers of constant tensors pass their input through
    unobserved (their min/max would not change: the weights are the same tensors every call) until ``restore``.
    YOLO11n at 320: 88 per-channel weight observers, ~13 ms of every ~120 ms calibration image."""

    def __init__(self, gm: Any) -> None:
        self.gm, self.frozen = gm, []

    def after_sample(self) -> None:
        if not self.frozen:
            self.frozen = constant_observers(self.gm)
            for m in self.frozen:
                m.forward = _identity

    def restore(self) -> None:
        for m in self.frozen:
            m.__dict__.pop("forward", None)
        self.frozen = []


def _identity(x: Any) -> Any:
    return x


def with_observer(config: Any, observer: str, route: str) -> Any:
    """``config`` (a PT2E QuantizationConfig) with its activation observer replaced as ``observer`` asks."""
    if observer not in OBSERVERS:
        raise ConfigError(f"{route} int8 observer must be one of {OBSERVERS}, not {observer!r}",
                          hint="histogram (the default) or minmax")
    if observer == "minmax":
        from torchao.quantization.pt2e.observer import MinMaxObserver

        cls = MinMaxObserver
    else:
        cls = histogram_observer()
    act = dataclasses.replace(config.input_activation, observer_or_fake_quant_ctr=cls.with_args(eps=2**-12))
    return dataclasses.replace(config, input_activation=act, output_activation=act)
