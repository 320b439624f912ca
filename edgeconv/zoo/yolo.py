"""YOLOv5-style nano detector for the bundled "shapes" demo.

Deliberately keeps the export-hostile bits real models have, so converters get exercised:

* the **Focus stem is strided slicing + concat** (``x[..., ::2, ::2]`` ...), which lowers to
  ``Slice`` ops with steps -- several converters must special-case or rewrite it;
* Conv-BN-SiLU blocks (BN folding, SiLU = x*sigmoid(x) fusion), C3/CSP bottlenecks with residual
  adds, SPPF (chained max-pools), nearest upsampling and concats in the PAN neck.

``forward`` returns the **raw** head maps ``(p3, p4, p5)``, each ``(N, na*(5+nc), H/s, W/s)``.
Decoding (sigmoid, grid, anchors) lives in numpy post-processing (``edgeconv.bench.detection``) so
that every backend is compared on identical graph outputs.  ``ANCHORS``/``STRIDES`` below are the
single source of truth for that decoder and for the training loss.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # keep ``import edgeconv.zoo.yolo`` cheap; torch is imported inside build()
    from torch import nn

NUM_CLASSES = 5
INPUT_SIZE = 256
STRIDES: tuple[int, int, int] = (8, 16, 32)
# Anchor (w, h) in input pixels per output scale, sized for the shapes dataset (objects ~20-120 px).
ANCHORS: tuple[tuple[tuple[float, float], ...], ...] = (
    ((14.0, 14.0), (22.0, 19.0), (19.0, 26.0)),
    ((32.0, 32.0), (46.0, 38.0), (38.0, 48.0)),
    ((62.0, 62.0), (86.0, 74.0), (100.0, 100.0)),
)
NUM_ANCHORS = len(ANCHORS[0])
OUTPUT_NAMES: tuple[str, str, str] = ("p3", "p4", "p5")


def _make_divisible(x: float, d: int = 8) -> int:
    return max(d, round(x / d) * d)


def build(num_classes: int = NUM_CLASSES, width: float = 0.25, depth: float = 0.33) -> nn.Module:
    """Build the detector; ``width``/``depth`` scale channels/repeats like YOLOv5 (n = 0.25/0.33).

    Channel widths are capped at 160 at the deepest level (YOLOv5n uses 256) to keep the checkpoint
    under ~5 MB; with that the default model has ~1.2 M parameters (4.8 MB fp32).
    """
    import torch
    from torch import nn

    def ch(c: int) -> int:
        return _make_divisible(c * width)

    def n_rep(n: int) -> int:
        return max(round(n * depth), 1)

    class Conv(nn.Module):
        """Conv2d + BatchNorm + SiLU, the YOLOv5 basic block."""

        def __init__(self, c1: int, c2: int, k: int = 1, s: int = 1) -> None:
            super().__init__()
            self.conv = nn.Conv2d(c1, c2, k, s, k // 2, bias=False)
            self.bn = nn.BatchNorm2d(c2, eps=1e-3, momentum=0.03)
            self.act = nn.SiLU()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.act(self.bn(self.conv(x)))

    class Focus(nn.Module):
        """Space-to-depth via strided slicing + concat (kept on purpose; see module docstring)."""

        def __init__(self, c1: int, c2: int, k: int = 3) -> None:
            super().__init__()
            self.conv = Conv(c1 * 4, c2, k)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.conv(torch.cat([x[..., ::2, ::2], x[..., 1::2, ::2], x[..., ::2, 1::2], x[..., 1::2, 1::2]], 1))

    class Bottleneck(nn.Module):
        def __init__(self, c1: int, c2: int, shortcut: bool = True) -> None:
            super().__init__()
            self.cv1 = Conv(c1, c2, 1)
            self.cv2 = Conv(c2, c2, 3)
            self.add = shortcut and c1 == c2

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.cv2(self.cv1(x))
            return x + y if self.add else y

    class C3(nn.Module):
        """CSP bottleneck with 3 convs: split, n bottlenecks on one branch, concat, fuse."""

        def __init__(self, c1: int, c2: int, n: int = 1, shortcut: bool = True) -> None:
            super().__init__()
            c_ = c2 // 2
            self.cv1 = Conv(c1, c_, 1)
            self.cv2 = Conv(c1, c_, 1)
            self.cv3 = Conv(2 * c_, c2, 1)
            self.m = nn.Sequential(*(Bottleneck(c_, c_, shortcut) for _ in range(n)))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.cv3(torch.cat([self.m(self.cv1(x)), self.cv2(x)], 1))

    class SPPF(nn.Module):
        def __init__(self, c1: int, c2: int, k: int = 5) -> None:
            super().__init__()
            c_ = c1 // 2
            self.cv1 = Conv(c1, c_, 1)
            self.cv2 = Conv(c_ * 4, c2, 1)
            self.m = nn.MaxPool2d(k, 1, k // 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = self.cv1(x)
            y1 = self.m(x)
            y2 = self.m(y1)
            return self.cv2(torch.cat([x, y1, y2, self.m(y2)], 1))

    class YoloNano(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            c1, c2, c3, c4, c5 = ch(64), ch(128), ch(256), ch(512), min(ch(1024), 160)
            self.num_classes = num_classes
            self.no = num_classes + 5
            self.na = NUM_ANCHORS
            self.strides = STRIDES
            # Backbone (CSPDarknet-ish).
            self.stem = Focus(3, c1, 3)  # /2
            self.b1 = nn.Sequential(Conv(c1, c2, 3, 2), C3(c2, c2, n_rep(3)))  # /4
            self.b2 = nn.Sequential(Conv(c2, c3, 3, 2), C3(c3, c3, n_rep(6)))  # /8  -> P3
            self.b3 = nn.Sequential(Conv(c3, c4, 3, 2), C3(c4, c4, n_rep(9)))  # /16 -> P4
            self.b4 = nn.Sequential(Conv(c4, c5, 3, 2), C3(c5, c5, n_rep(3)), SPPF(c5, c5))  # /32 -> P5
            # PAN neck.
            self.up = nn.Upsample(scale_factor=2, mode="nearest")
            self.lat5 = Conv(c5, c4, 1)
            self.td4 = C3(c4 * 2, c4, n_rep(3), shortcut=False)
            self.lat4 = Conv(c4, c3, 1)
            self.td3 = C3(c3 * 2, c3, n_rep(3), shortcut=False)  # out P3
            self.down3 = Conv(c3, c3, 3, 2)
            self.bu4 = C3(c3 * 2, c4, n_rep(3), shortcut=False)  # out P4
            self.down4 = Conv(c4, c4, 3, 2)
            self.bu5 = C3(c4 * 2, c5, n_rep(3), shortcut=False)  # out P5
            # Detect head: one 1x1 conv per scale, raw outputs.
            self.head = nn.ModuleList(nn.Conv2d(c, self.na * self.no, 1) for c in (c3, c4, c5))
            self._init_biases()

        def _init_biases(self) -> None:
            """YOLOv5 prior: ~8 objects per 640^2 image for objectness, uniform-ish class prior."""
            import math

            for conv, s in zip(self.head, STRIDES):
                b = conv.bias.view(self.na, -1)
                with torch.no_grad():
                    b[:, 4] += math.log(8 / (INPUT_SIZE / s) ** 2)
                    b[:, 5:] += math.log(0.6 / (self.num_classes - 0.99))

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            x = self.b1(self.stem(x))
            p3 = self.b2(x)
            p4 = self.b3(p3)
            p5 = self.b4(p4)
            h5 = self.lat5(p5)
            t4 = self.td4(torch.cat([self.up(h5), p4], 1))
            h4 = self.lat4(t4)
            o3 = self.td3(torch.cat([self.up(h4), p3], 1))
            o4 = self.bu4(torch.cat([self.down3(o3), h4], 1))
            o5 = self.bu5(torch.cat([self.down4(o4), h5], 1))
            return self.head[0](o3), self.head[1](o4), self.head[2](o5)

    return YoloNano()
