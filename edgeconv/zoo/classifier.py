"""Small MobileNetV2-like classifier for the bundled "shapes" demo (96x96 input, logits output).

Why: depthwise convolutions, inverted residuals and ReLU6 are the classic troublemakers for
per-tensor INT8 quantization (per-channel weight ranges differ wildly in depthwise kernels), so this
model is the canary for quantization drift in the benchmarks.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import nn

NUM_CLASSES = 5
INPUT_SIZE = 96
OUTPUT_NAMES: tuple[str] = ("logits",)

# (expansion t, out channels c, repeats n, first stride s) -- a width-reduced MobileNetV2 table.
_SETTINGS = ((1, 16, 1, 1), (4, 24, 2, 2), (4, 32, 2, 2), (4, 64, 2, 2), (4, 96, 1, 1))


def build(num_classes: int = NUM_CLASSES, width: float = 1.0, last_channels: int = 256) -> nn.Module:
    """Build the classifier; ``width`` scales all channel counts."""
    import torch
    from torch import nn

    def ch(c: float) -> int:
        return max(8, round(c * width / 8) * 8)

    def cbr(c1: int, c2: int, k: int = 1, s: int = 1, groups: int = 1, act: bool = True) -> nn.Sequential:
        layers: list[nn.Module] = [nn.Conv2d(c1, c2, k, s, k // 2, groups=groups, bias=False), nn.BatchNorm2d(c2)]
        if act:
            layers.append(nn.ReLU6(inplace=True))
        return nn.Sequential(*layers)

    class InvertedResidual(nn.Module):
        """1x1 expand -> 3x3 depthwise -> 1x1 linear projection, residual when shapes allow."""

        def __init__(self, c1: int, c2: int, s: int, t: int) -> None:
            super().__init__()
            hidden = c1 * t
            layers: list[nn.Module] = [cbr(c1, hidden)] if t != 1 else []
            layers += [cbr(hidden, hidden, 3, s, groups=hidden), cbr(hidden, c2, act=False)]
            self.block = nn.Sequential(*layers)
            self.use_res = s == 1 and c1 == c2

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x + self.block(x) if self.use_res else self.block(x)

    class ShapesMobileNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            c_in = ch(16)
            layers: list[nn.Module] = [cbr(3, c_in, 3, 2)]
            for t, c, n, s in _SETTINGS:
                for i in range(n):
                    layers.append(InvertedResidual(c_in, ch(c), s if i == 0 else 1, t))
                    c_in = ch(c)
            layers.append(cbr(c_in, last_channels))
            self.features = nn.Sequential(*layers)
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.dropout = nn.Dropout(0.1)
            self.fc = nn.Linear(last_channels, num_classes)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(self.dropout(torch.flatten(self.pool(self.features(x)), 1)))

    return ShapesMobileNet()
