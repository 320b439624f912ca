"""Prepared failure-pattern models (tests/fixtures/int8_patterns.py) with calibration data and evaluators."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


@pytest.fixture(scope="session")
def pattern(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """pattern name -> (prepared reference, calibration set, evaluator); built once per pattern per session."""
    pytest.importorskip("onnxruntime", reason="the INT8 proxy runs on ONNX Runtime")
    import int8_patterns as patterns

    from edgeconv.calibration.dataset import CalibrationSet
    from edgeconv.calibration.preprocess import Preprocess
    from edgeconv.pipeline import prepare

    made: dict[str, Any] = {}

    def get(name: str) -> Any:
        if name not in made:
            prep = prepare(f"{FIXTURES / 'int8_patterns.py'}:build_{name}", inputs=["images:1x3x32x32"],
                           exporters=("legacy",))
            root = patterns.write_calibration(name, tmp_path_factory.mktemp(f"calib-{name}"))
            cal = CalibrationSet(root, Preprocess(size=(32, 32)), "images", (1, 3, 32, 32), size=None,
                                 warn_small=False)
            made[name] = (prep, cal, patterns.evaluator(name, prep.reference.onnx_path))
        return made[name]

    return get
