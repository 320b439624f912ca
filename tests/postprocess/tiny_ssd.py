"""A RetinaFace-shaped prior-box face detector (random weights) for the ssd head's tests: levels at strides 8 and
16 of a 64x64 input, two priors per cell on the first level and one on the second, ``loc (N, 144, 4)`` and softmax
``conf (N, 144, 2)`` (background first), laid out as RetinaFace/Face-Detector-1MB do (permute to NHWC, flatten)."""

from __future__ import annotations

import torch
from torch import nn

STRIDES = (8, 16)
MIN_SIZES = ((8.0, 16.0), (32.0,))
SIZE = 64


class TinySsd(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.b1 = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.ReLU(), nn.Conv2d(8, 16, 3, 2, 1), nn.ReLU(),
                                nn.Conv2d(16, 16, 3, 2, 1), nn.ReLU())
        self.b2 = nn.Sequential(nn.Conv2d(16, 16, 3, 2, 1), nn.ReLU())
        self.loc1, self.conf1 = nn.Conv2d(16, 2 * 4, 1), nn.Conv2d(16, 2 * 2, 1)
        self.loc2, self.conf2 = nn.Conv2d(16, 4, 1), nn.Conv2d(16, 2, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f1 = self.b1(x)
        f2 = self.b2(f1)

        def flat(t: torch.Tensor, k: int) -> torch.Tensor:
            return t.permute(0, 2, 3, 1).reshape(t.shape[0], -1, k)

        loc = torch.cat([flat(self.loc1(f1), 4), flat(self.loc2(f2), 4)], 1) * 0.5
        conf = torch.cat([flat(self.conf1(f1), 2), flat(self.conf2(f2), 2)], 1) * 3.0
        return loc, torch.softmax(conf, -1)


def build() -> nn.Module:
    torch.manual_seed(0)
    return TinySsd().eval()


class _Logits(nn.Module):
    """The same detector returning conf as raw logits (x10): a decode told they are probabilities is wrong."""

    def __init__(self) -> None:
        super().__init__()
        self.net = TinySsd()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        loc, conf = self.net(x)
        return loc, torch.log(conf) * 10.0 + 20.0


def build_logits() -> nn.Module:
    torch.manual_seed(0)
    return _Logits().eval()
