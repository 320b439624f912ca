"""Fixtures the bench tests share."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent.parent / "fixtures"


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory) -> Path:
    import torch

    sys.path.insert(0, str(FIXTURES))
    import tiny_model

    p = tmp_path_factory.mktemp("onnx") / "tiny.onnx"
    torch.onnx.export(tiny_model.build().eval(), (torch.rand(1, 3, 32, 32),), str(p), input_names=["images"],
                      output_names=["out"], opset_version=17, dynamo=False)
    return p
