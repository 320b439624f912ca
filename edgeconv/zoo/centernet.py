"""CenterNet-style anchor-free detector for the bundled "shapes" demo (stride-4 output).

Why it is bundled next to the YOLO model: it stresses a different conversion path -- a sigmoid
inside the graph on a dense, high-resolution output (quantization of a [0,1] heatmap), nearest
upsampling + additive skip connections, and a decoder that relies on exact peak values (3x3
max-pool peak extraction instead of NMS), so small numeric drift changes which peaks survive.

``forward`` returns ``(heatmap, wh, offset)``: heatmap ``(N, nc, H/4, W/4)`` after sigmoid, wh and
offset ``(N, 2, H/4, W/4)`` in output-grid units.  Decoding is ``edgeconv.bench.detection.decode_centernet``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import nn

NUM_CLASSES = 5
STRIDE = 4
OUTPUT_NAMES: tuple[str, str, str] = ("heatmap", "wh", "offset")


def build(num_classes: int = NUM_CLASSES, width: int = 32) -> nn.Module:
    """Build the detector; ``width`` is the stride-4 channel count (deeper levels scale from it)."""
    import torch
    from torch import nn

    def cbr(c1: int, c2: int, k: int = 3, s: int = 1) -> nn.Sequential:
        return nn.Sequential(nn.Conv2d(c1, c2, k, s, k // 2, bias=False), nn.BatchNorm2d(c2), nn.ReLU(inplace=True))

    class Res(nn.Module):
        """Basic residual block (two 3x3 conv-BN, ReLU)."""

        def __init__(self, c: int) -> None:
            super().__init__()
            self.a = cbr(c, c)
            self.b = nn.Sequential(nn.Conv2d(c, c, 3, 1, 1, bias=False), nn.BatchNorm2d(c))
            self.act = nn.ReLU(inplace=True)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.act(x + self.b(self.a(x)))

    class CenterNetSmall(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            c4, c8, c16, c32 = width, width * 2, width * 3, width * 4
            self.s4 = nn.Sequential(cbr(3, 16, 3, 2), cbr(16, c4, 3, 2), Res(c4))
            self.s8 = nn.Sequential(cbr(c4, c8, 3, 2), Res(c8))
            self.s16 = nn.Sequential(cbr(c8, c16, 3, 2), Res(c16))
            self.s32 = nn.Sequential(cbr(c16, c32, 3, 2), Res(c32))
            self.up = nn.Upsample(scale_factor=2, mode="nearest")
            self.l32 = cbr(c32, c16, 1)
            self.f16 = cbr(c16, c16)
            self.l16 = cbr(c16, c8, 1)
            self.f8 = cbr(c8, c8)
            self.l8 = cbr(c8, c4, 1)
            self.f4 = cbr(c4, c4)
            hc = c4 * 2

            def head(cout: int) -> nn.Sequential:
                return nn.Sequential(nn.Conv2d(c4, hc, 3, 1, 1), nn.ReLU(inplace=True), nn.Conv2d(hc, cout, 1))

            self.hm = head(num_classes)
            self.wh = head(2)
            self.off = head(2)
            with torch.no_grad():
                self.hm[-1].bias.fill_(-2.19)  # prior p=0.1 so the focal loss starts stable

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            f4 = self.s4(x)
            f8 = self.s8(f4)
            f16 = self.s16(f8)
            f32 = self.s32(f16)
            y = self.f16(self.up(self.l32(f32)) + f16)
            y = self.f8(self.up(self.l16(y)) + f8)
            y = self.f4(self.up(self.l8(y)) + f4)
            return torch.sigmoid(self.hm(y)), self.wh(y), self.off(y)

    return CenterNetSmall()
