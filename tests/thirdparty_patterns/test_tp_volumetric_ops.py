"""LPRNet pools with nn.MaxPool3d over the channels of a 4-D feature map: RKNN aborted (SIGABRT, vector range
check) and Core ML raised a kernel-length ValueError, neither naming the op. Failures now name the 3-D nodes."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch", reason="the pattern model is a torch module")

from edgeconv.core.errors import ConversionError  # noqa: E402
from edgeconv.targets.base import explain_volumetric, volumetric_ops  # noqa: E402


class Pool3dOverChannels(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.pool = torch.nn.MaxPool3d(kernel_size=(1, 3, 3), stride=(2, 1, 2))  # LPRNet's pattern

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.conv(x))


def build() -> torch.nn.Module:
    return Pool3dOverChannels().eval()


def test_three_d_pooling_is_named_in_the_failure() -> None:
    from edgeconv.pipeline import prepare

    prep = prepare(f"{__file__}:build", inputs=["x:1x3x16x16"], use_cache=False)
    found = volumetric_ops(prep.reference.onnx_path)
    assert len(found) == 1 and "MaxPool kernel 1x3x3" in found[0]
    err = explain_volumetric(ConversionError("rknn-toolkit2 conversion crashed (killed by SIGABRT)"),
                             prep.reference.onnx_path, "RKNN")
    assert "3-D pooling" in err.message and "MaxPool" in err.message and "2-D" in err.hint


def test_plain_two_d_graphs_get_no_note(tiny_prepared) -> None:
    assert volumetric_ops(tiny_prepared.reference.onnx_path) == []
    err = explain_volumetric(ConversionError("x"), tiny_prepared.reference.onnx_path, "RKNN")
    assert err.message == "x"
