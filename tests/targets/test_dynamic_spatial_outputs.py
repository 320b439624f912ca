"""A fully convolutional model exported with ``--dynamic spatial``: its outputs' H and W follow the input, so the
reference declares them open (-1). ncnn's runner and TFLite's output mapping demanded a size of 1 there and refused
correct artifacts (MTCNN's PNet); they take the converted model's own sizes where the reference leaves them open."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgeconv import api

FCN = '''
import torch
from torch import nn


def build():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 4, 1)).eval()
'''


@pytest.mark.parametrize("target", ["ncnn", "tflite"])
def test_open_output_dims_take_the_artifacts_own_sizes(tmp_path: Path, target: str) -> None:
    pytest.importorskip({"ncnn": "ncnn", "tflite": "litert_torch"}[target], reason=f"{target} not installed")
    (tmp_path / "fcn.py").write_text(FCN)
    (oc,) = api.convert(f"{tmp_path / 'fcn.py'}:build", targets=[target], precisions=["fp32"], out=tmp_path / "o",
                        inputs=["x:1x3x64x64"], dynamic=api.DynamicSpec(spatial=True), use_cache=False)
    assert oc.error is None, oc.error
    assert oc.artifact.manifest["outputs"][0]["shape"][2:] == [-1, -1]
    assert oc.artifact.manifest["verification"]["drift"]["max_abs"] < 1e-4
