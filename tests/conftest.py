"""Shared fixtures: an isolated cache per test session and small prepared models."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

FIXTURES = Path(__file__).parent / "fixtures"
sys.path.insert(0, str(FIXTURES))


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Each test session gets its own cache so tests never depend on a developer's ~/.cache."""
    import os

    if "EDGECONV_TEST_KEEP_CACHE" not in os.environ:
        os.environ["EDGECONV_CACHE"] = str(tmp_path_factory.mktemp("edgeconv-cache"))


@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import tiny_model
    import torch

    p = tmp_path_factory.mktemp("w") / "tiny.pth"
    torch.save(tiny_model.build().state_dict(), p)
    return p


@pytest.fixture(scope="session")
def tiny_prepared(tiny_weights: Path):
    """The tiny conv net exported, verified and simplified (shared by backend tests)."""
    from edgeconv.pipeline import prepare

    return prepare(f"{FIXTURES / 'tiny_model.py'}:build", weights=str(tiny_weights), inputs=["images:1x3x64x64"])


@pytest.fixture(scope="session")
def tiny_calib_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """32 small random-texture PNGs: enough to exercise INT8 code paths quickly (not to judge accuracy)."""
    import numpy as np
    from PIL import Image

    d = tmp_path_factory.mktemp("calib")
    rng = np.random.default_rng(0)
    for i in range(32):
        img = (rng.random((64, 64, 3)) * 255).astype("uint8")
        Image.fromarray(img).save(d / f"img_{i:03d}.png")
    return d


@pytest.fixture(scope="session")
def pattern(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """INT8 failure-pattern models (fixtures/int8_patterns.py) for the quant and lint tests: pattern name ->
    (prepared reference, calibration set, evaluator); built once per pattern per session."""
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
