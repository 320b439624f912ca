"""Shared fixtures: an isolated cache per test session and small prepared models."""

from __future__ import annotations

import sys
from pathlib import Path

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
