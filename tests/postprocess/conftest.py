"""Synthetic detection heads written after Ultralytics' formulas, and raw-output ONNX graphs to append decodes to.

Why synthetic heads: Ultralytics cannot be installed here (it pulls torchvision), and real third-party weights are
never committed.  These modules carry the attribute names the derivation reads (``nc``, ``stride``, ``anchors`` /
``reg_max``) and compute the Ultralytics eval-mode decode themselves (``make_anchors``, ``dist2bbox``, DFL; YOLOv5's
grid/anchor_grid), so the edgeconv decoders are checked against an independent implementation of the same maths.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="torch builds the synthetic heads")
from torch import nn  # noqa: E402

INPUT = 64


def _backbone() -> nn.ModuleList:
    return nn.ModuleList([nn.Conv2d(3, 8, 8, 8), nn.Conv2d(8, 8, 2, 2), nn.Conv2d(8, 8, 2, 2)])  # /8 /16 /32


class DFL(nn.Module):
    """Ultralytics' distribution focal loss integral: softmax over bins, then a 1x1 conv with weights 0..reg_max-1."""

    def __init__(self, c1: int = 16) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c1, 1, 1, bias=False).requires_grad_(False)
        self.conv.weight.data[:] = torch.arange(c1, dtype=torch.float).view(1, c1, 1, 1)
        self.c1 = c1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, a = x.shape
        return self.conv(x.view(b, 4, self.c1, a).transpose(2, 1).softmax(1)).view(b, 4, a)


class Detect(nn.Module):
    """YOLOv8/YOLO11-style anchor-free head; ``raw=True`` returns the per-level maps (training-mode output)."""

    def __init__(self, nc: int, ch: tuple[int, ...], reg_max: int = 16) -> None:
        super().__init__()
        self.nc, self.nl, self.reg_max, self.no = nc, len(ch), reg_max, nc + 4 * reg_max
        self.stride = torch.zeros(self.nl)
        self.cv2 = nn.ModuleList(nn.Conv2d(c, 4 * reg_max, 1) for c in ch)
        self.cv3 = nn.ModuleList(nn.Conv2d(c, nc, 1) for c in ch)
        self.dfl = DFL(reg_max) if reg_max > 1 else nn.Identity()
        self.raw = False

    def forward(self, xs: list[torch.Tensor]) -> Any:
        x = [torch.cat((self.cv2[i](xs[i]), self.cv3[i](xs[i])), 1) for i in range(self.nl)]
        if self.raw:
            return tuple(x)
        b = x[0].shape[0]
        x_cat = torch.cat([xi.view(b, self.no, -1) for xi in x], 2)
        pts, strides = [], []
        for xi, s in zip(x, self.stride):
            h, w = xi.shape[-2:]
            sy, sx = torch.meshgrid(torch.arange(h) + 0.5, torch.arange(w) + 0.5, indexing="ij")
            pts.append(torch.stack((sx, sy), -1).view(-1, 2))
            strides.append(torch.full((h * w, 1), float(s)))
        anchors, st = torch.cat(pts).transpose(0, 1), torch.cat(strides).transpose(0, 1)
        box, cls = x_cat.split((4 * self.reg_max, self.nc), 1)
        lt, rb = self.dfl(box).chunk(2, 1)
        x1y1, x2y2 = anchors.unsqueeze(0) - lt, anchors.unsqueeze(0) + rb
        dbox = torch.cat(((x1y1 + x2y2) / 2, x2y2 - x1y1), 1) * st
        return torch.cat((dbox, cls.sigmoid()), 1)


class DetectV5(nn.Module):
    """YOLOv5-style anchor head: ``anchors`` (nl, na, 2) in grid units as YOLOv5 stores them after building."""

    def __init__(self, nc: int, anchors_px: list[list[tuple[float, float]]], ch: tuple[int, ...],
                 strides: tuple[int, ...]) -> None:
        super().__init__()
        self.nc, self.no, self.nl, self.na = nc, nc + 5, len(anchors_px), len(anchors_px[0])
        self.stride = torch.tensor(strides, dtype=torch.float)
        self.register_buffer("anchors", torch.tensor(anchors_px) / self.stride.view(-1, 1, 1))
        self.m = nn.ModuleList(nn.Conv2d(c, self.no * self.na, 1) for c in ch)
        self.raw = False

    def forward(self, xs: list[torch.Tensor]) -> Any:
        maps = [self.m[i](xs[i]) for i in range(self.nl)]
        if self.raw:
            return tuple(maps)
        z = []
        for i, x in enumerate(maps):
            bs, _, ny, nx = x.shape
            y = x.view(bs, self.na, self.no, ny, nx).permute(0, 1, 3, 4, 2).sigmoid()
            yv, xv = torch.meshgrid(torch.arange(ny), torch.arange(nx), indexing="ij")
            grid = torch.stack((xv, yv), 2).expand(1, self.na, ny, nx, 2).float() - 0.5
            ag = (self.anchors[i] * self.stride[i]).view(1, self.na, 1, 1, 2)
            xy = (y[..., 0:2] * 2 + grid) * self.stride[i]
            wh = (y[..., 2:4] * 2) ** 2 * ag
            z.append(torch.cat((xy, wh, y[..., 4:]), -1).view(bs, -1, self.no))
        return torch.cat(z, 1)


class Net(nn.Module):
    def __init__(self, head: nn.Module) -> None:
        super().__init__()
        self.backbone = _backbone()
        self.model = nn.ModuleList([head])

    def forward(self, x: torch.Tensor) -> Any:
        feats = []
        for conv in self.backbone:
            x = torch.relu(conv(x))
            feats.append(x)
        return self.model[0](feats)


def build_v8(nc: int = 3, reg_max: int = 16, seed: int = 0) -> Net:
    torch.manual_seed(seed)
    net = Net(Detect(nc, (8, 8, 8), reg_max)).eval()
    head = net.model[0]
    head.raw = True
    with torch.no_grad():
        maps = net(torch.zeros(1, 3, INPUT, INPUT))
    head.stride = torch.tensor([INPUT / m.shape[-1] for m in maps])  # as Ultralytics computes strides at build time
    head.raw = False
    return net


def build_v5(nc: int = 3, seed: int = 0) -> Net:
    torch.manual_seed(seed)
    anchors = [[(10.0, 13.0), (16.0, 30.0), (33.0, 23.0)], [(30.0, 61.0), (62.0, 45.0), (59.0, 119.0)],
               [(116.0, 90.0), (156.0, 198.0), (373.0, 326.0)]]
    return Net(DetectV5(nc, anchors, (8, 8, 8), (8, 16, 32))).eval()


def raw_outputs(net: Net, x: np.ndarray, names: list[str]) -> dict[str, np.ndarray]:
    head = net.model[0]
    head.raw = True
    try:
        with torch.no_grad():
            return {n: t.numpy() for n, t in zip(names, net(torch.from_numpy(x)))}
    finally:
        head.raw = False


def identity_onnx(path: Path, tensors: dict[str, tuple[Any, ...]], opset: int = 18) -> Path:
    """A graph whose inputs ``in_<name>`` pass straight to outputs ``<name>``: a stand-in reference ONNX."""
    import onnx
    from onnx import TensorProto, helper

    nodes = [helper.make_node("Identity", [f"in_{n}"], [n], name=f"id_{n}") for n in tensors]
    g = helper.make_graph(nodes, "raw",
                          [helper.make_tensor_value_info(f"in_{n}", TensorProto.FLOAT, list(s)) for n, s in
                           tensors.items()],
                          [helper.make_tensor_value_info(n, TensorProto.FLOAT, list(s)) for n, s in tensors.items()])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)]), str(path))
    return path


def centernet_raw(seed: int, n: int = 1, nc: int = 3, h: int = 16, w: int = 16) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    hm = 1 / (1 + np.exp(-(rng.standard_normal((n, nc, h, w)) * 2 - 2)))
    return {"heatmap": hm.astype(np.float32), "wh": (rng.random((n, 2, h, w)) * 8 + 1).astype(np.float32),
            "offset": rng.random((n, 2, h, w)).astype(np.float32)}


@pytest.fixture(scope="session")
def heads() -> SimpleNamespace:
    return SimpleNamespace(build_v8=build_v8, build_v5=build_v5, raw_outputs=raw_outputs,
                           identity_onnx=identity_onnx, centernet_raw=centernet_raw, INPUT=INPUT)
