"""Core ML on a model whose forward does shape arithmetic (``x.view(x.size(0), -1)``): coremltools' ``Int`` cast
failed on the traced graph ("only 0-dimensional arrays can be converted to Python scalars"); the target now falls
back to ``torch.export`` and records both attempts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("coremltools", reason="coreml target needs coremltools (pip install 'edgeconv[coreml]')")

from edgeconv.pipeline import convert_reference, prepare  # noqa: E402


@pytest.mark.slow
def test_shape_arithmetic_converts_through_torch_export(cifar_pattern: Any, tmp_path: Path, find_key: Any) -> None:
    prep = prepare(cifar_pattern, inputs=["input:1x3x32x32"], use_cache=False)
    art = convert_reference(prep, "ios", out=tmp_path / "ios", precision="fp32", use_cache=False)
    assert find_key(art.manifest, "frontend") == "torch.export"
    attempts = find_key(art.manifest, "frontend_attempts")
    assert [a["frontend"] for a in attempts] == ["torch.jit.trace", "torch.export"]
    assert attempts[0]["status"] == "failed" and "0-dimensional" in attempts[0]["error"]
    assert attempts[1]["status"] == "ok"


