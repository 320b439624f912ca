"""Small on-disk calibration sources built per test (images, tensors, layouts), so tests need no committed data."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image


def write_images(folder: Path, n: int, size: int = 32, seed: int = 0, suffix: str = ".png") -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        p = folder / f"img_{seed}_{i:04d}{suffix}"
        Image.fromarray((rng.random((size, size, 3)) * 255).astype("uint8")).save(p)
        out.append(p)
    return out


@pytest.fixture
def make_images() -> Callable[..., list[Path]]:
    """The image writer as a fixture (test modules cannot import conftest under every import mode)."""
    return write_images


@pytest.fixture
def image_dir(tmp_path: Path) -> Path:
    d = tmp_path / "imgs"
    write_images(d, 20)
    return d
