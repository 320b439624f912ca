"""Tiny OCR (CTC) and segmentation models with hand-set weights, and data folders they read correctly.

No training: the class of a column block (CTC) or of a pixel (segmentation) is coded by the grey level of the red
channel, and a 1x1 conv scores class ``c`` as ``2 * x * mu_c - mu_c^2`` (the nearest class mean wins: ``-(x - mu)^2``
up to a term equal for every class), so float decodes are exact by construction and INT8 keeps them unless its
rounding crosses a class boundary.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

DIGITS = "0123456789"
CTC_H, CTC_W, STEPS = 8, 64, 16  # 16 time steps of 4 columns
SEG_CLASSES = 3
SEG_MEANS = (0.15, 0.5, 0.85)
SEG_FRAGILE = (0.46, 0.5, 0.54)  # with a never-winning class at -40: margins far below one INT8 step of the logits


def _means(k: int, lo: float = 0.05, hi: float = 0.95) -> np.ndarray:
    return np.linspace(lo, hi, k)


class _Nearest(nn.Module):
    """Pool to the output grid, then score each class by closeness of the red channel to its mean."""

    def __init__(self, means: np.ndarray, pool: tuple[int, int]) -> None:
        super().__init__()
        self.pool = nn.AvgPool2d(pool, pool)
        self.feat = nn.Conv2d(3, 4, 1)
        self.head = nn.Conv2d(4, len(means), 1)
        with torch.no_grad():
            self.feat.weight.zero_()
            self.feat.bias.zero_()
            self.feat.weight[0, 0] = 1.0  # red channel through a ReLU (values are >= 0)
            self.feat.weight[1, 1] = 0.1  # the other channels carry a little, ignored by the head
            self.head.weight.zero_()
            m = torch.tensor(means, dtype=torch.float32)
            self.head.weight[:, 0, 0, 0] = 2 * m
            self.head.bias.copy_(-(m**2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.feat(self.pool(x))))


class TinyCtc(nn.Module):
    """[1,3,8,64] -> [1, 11, 16] (NCT, blank = class 0, digits 1..10), like LPRNet's head."""

    def __init__(self, lo: float = 0.05, hi: float = 0.95) -> None:
        super().__init__()
        self.body = _Nearest(_means(len(DIGITS) + 1, lo, hi), (CTC_H, CTC_W // STEPS))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)[:, :, 0, :]


class TinySeg(nn.Module):
    """[1,3,32,32] -> [1,3,16,16] logits (a stride-2 head, so masks are scored at half the input's resolution)."""

    def __init__(self, means: tuple[float, ...] = SEG_MEANS, void: bool = False) -> None:
        super().__init__()
        self.body = _Nearest(np.array(means), (2, 2))
        self.void = void

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.body(x)
        if self.void:  # a class that never wins, 40 below the rest: one INT8 scale for both rounds the margins away
            y = torch.cat([y, y[:, :1] * 0 - 40.0], 1)
        return y


def build_ctc(lo: float = 0.05, hi: float = 0.95) -> nn.Module:
    """``lo``/``hi`` close together (``0.4``/``0.6``): class margins below one INT8 step of the logits."""
    return TinyCtc(float(lo), float(hi)).eval()


def build_seg(fragile: bool = False) -> nn.Module:
    return TinySeg(SEG_FRAGILE, void=True).eval() if fragile else TinySeg().eval()


def write_ctc_images(root: Path, n: int, seed: int, lo: float = 0.05, hi: float = 0.95) -> list[str]:
    """``n`` plates named ``<digits>_<i>.png`` (labels=prefix): each digit takes two steps, blanks between."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    means = _means(len(DIGITS) + 1, lo, hi)
    labels = []
    for i in range(n):
        text = "".join(rng.choice(list(DIGITS), int(rng.integers(3, 6))))
        cls = []
        for ch in text:
            cls += [DIGITS.index(ch) + 1] * 2 + [0]
        cls += [0] * (STEPS - len(cls))
        img = np.zeros((CTC_H, CTC_W, 3), np.uint8)
        for t, c in enumerate(cls):
            img[:, 4 * t:4 * t + 4, 0] = np.uint8(round(means[c] * 255))
        img[..., 1] = rng.integers(0, 255, (CTC_H, CTC_W))
        Image.fromarray(img).save(root / f"{text}_{i:03d}.png")
        labels.append(text)
    return labels


def write_seg_data(root: Path, n: int, seed: int, *, size: tuple[int, int] = (48, 40), fragile: bool = False) -> None:
    """``images/*.png`` (W x H = ``size``) and ``masks/<stem>.png`` (mode L class indices, a 255 void border)."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    w, h = size
    for i in range(n):
        mask = np.zeros((h, w), np.uint8)
        for _ in range(3):
            x0, y0 = int(rng.integers(0, w - 8)), int(rng.integers(0, h - 8))
            mask[y0:y0 + int(rng.integers(8, 20)), x0:x0 + int(rng.integers(8, 20))] = int(rng.integers(1, 3))
        img = np.zeros((h, w, 3), np.uint8)
        img[..., 0] = np.round(np.array(SEG_FRAGILE if fragile else SEG_MEANS)[mask] * 255).astype(np.uint8)
        img[..., 2] = rng.integers(0, 255, (h, w))
        mask[:2] = 255
        Image.fromarray(img).save(root / "images" / f"s{i:03d}.png")
        Image.fromarray(mask, mode="L").save(root / "masks" / f"s{i:03d}.png")
