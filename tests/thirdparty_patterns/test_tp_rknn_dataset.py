"""RKNN INT8 on any model: the worker runs in its job folder as ``.``, and the toolkit resolves a relative line of
dataset.txt against the listing's own folder, so every build failed with ``dataset/dataset/00000.npy`` missing."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from edgeconv.targets.rknn.handler import _load_dataset


def test_dataset_listing_holds_absolute_paths_from_a_relative_job_folder(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    arrays = {f"x{i}": np.full((1, 3, 4, 4), i, np.float32) for i in range(3)}
    np.savez("calib.npz", **arrays)
    listing = Path(_load_dataset(Path("calib.npz"), Path(".") / "dataset"))
    lines = listing.read_text().split()
    assert len(lines) == 3
    for i, line in enumerate(lines):
        assert os.path.isabs(line)
        # what rknn-toolkit2 opens: the line joined to the listing's folder (a no-op for an absolute line)
        resolved = Path(os.path.join(os.path.dirname(os.path.abspath(listing)), line))
        assert resolved.is_file()
        assert float(np.load(resolved).mean()) == i
