"""Small models written here that reproduce what real third-party models did to edgeconv (issue 21).

Each class is the *pattern*, not the third-party model: the shape arithmetic, residual layout or preprocessing that
broke a backend, at a size that converts in seconds.  The third-party models themselves are measured by
``benchmarks/thirdparty.py`` and never enter the repository.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the pattern models are torch modules")
nn, F = torch.nn, torch.nn.functional


class OptionAShortcutBlock(nn.Module):
    """A CIFAR ResNet basic block whose down-sampling shortcut is a strided slice plus zero channel padding (the
    "option A" shortcut of the original CIFAR ResNets), not a 1x1 convolution."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.c1, self.b1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout)
        self.c2, self.b2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout)
        self.stride, self.pad = stride, (cout - cin) // 2

    def forward(self, x: Any) -> Any:
        y = self.b2(self.c2(F.relu(self.b1(self.c1(x)))))
        s = F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad, self.pad)) if self.stride != 1 else x
        return F.relu(y + s)


class CifarResNetPattern(nn.Module):
    """Three stages of option-A blocks, a global pool sized by ``x.size()[3]`` and ``x.view(x.size(0), -1)``: the
    shape arithmetic a trace records as ``aten::size``/``aten::Int`` ops, and a residual net on which MNN's default
    EMA activation quantization collapses."""

    def __init__(self) -> None:
        super().__init__()
        self.c, self.b = nn.Conv2d(3, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16)
        self.layers = nn.Sequential(OptionAShortcutBlock(16, 16, 1), OptionAShortcutBlock(16, 32, 2),
                                    OptionAShortcutBlock(32, 64, 2))
        self.fc = nn.Linear(64, 10)

    def forward(self, x: Any) -> Any:
        z = self.layers(F.relu(self.b(self.c(x))))
        z = F.avg_pool2d(z, z.size()[3])
        return self.fc(z.view(z.size(0), -1))


@pytest.fixture(scope="session")
def cifar_pattern() -> Any:
    torch.manual_seed(0)
    return CifarResNetPattern().eval()


@pytest.fixture(scope="session")
def photo_like_32(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """48 image-like 32x32 pictures (smooth fields, shapes, edges, noise), as CIFAR crops are."""
    from PIL import Image

    from edgeconv.calibration.preprocess import Preprocess

    d = tmp_path_factory.mktemp("photo32")
    for i, im in enumerate(Preprocess(size=(32, 32)).synthetic_images(48, seed=3)):
        Image.fromarray(np.asarray(im, dtype=np.uint8)).resize((32, 32), Image.BILINEAR).save(d / f"p{i:02d}.png")
    return d


def _find(d: Any, key: str) -> Any:
    if isinstance(d, dict):
        if key in d:
            return d[key]
        for v in d.values():
            r = _find(v, key)
            if r is not None:
                return r
    return None


@pytest.fixture
def find_key() -> Any:
    """The first value stored under ``key`` anywhere in a (manifest) dict: backends nest their records."""
    return _find

