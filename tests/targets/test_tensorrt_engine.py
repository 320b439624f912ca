"""The engine path: build with the tensorrt Python API and run it. Only on a machine with TensorRT and a GPU."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgeconv.targets.tensorrt import NOT_HERE, TensorRtTarget, tensorrt_here

pytest.importorskip("tensorrt", reason=NOT_HERE)
if not tensorrt_here()[0]:
    pytest.skip(tensorrt_here()[1], allow_module_level=True)


@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_engine_builds_and_matches_reference(tiny_prepared, tiny_calib_dir, tmp_path: Path, precision: str) -> None:
    from edgeconv.pipeline import convert_reference, make_calibration

    calib = make_calibration(tiny_prepared, tiny_calib_dir) if precision == "int8" else None
    art = convert_reference(tiny_prepared, "tensorrt", out=tmp_path / precision, precision=precision,
                            calibration=calib, use_cache=False)
    assert (art.path / "model.engine").stat().st_size > 0
    assert art.manifest["conversion"]["engine"]["built"] is True
    assert art.manifest["verification"]["proxy"] is False
    assert TensorRtTarget().runs_here()[0]
