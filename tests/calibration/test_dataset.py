"""CalibrationSet: seeded sampling, streaming, corrupt/shape handling, disjointness, input statistics."""

from __future__ import annotations

import logging
import shutil
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from edgeconv.calibration.dataset import CalibrationSet, check_disjoint
from edgeconv.calibration.preprocess import Preprocess
from edgeconv.calibration.stats import input_stats_warning
from edgeconv.core.errors import CalibrationError

PP = Preprocess(size=(16, 16))
SHAPE = (1, 3, 16, 16)


def make(root: Path, **kw) -> CalibrationSet:
    return CalibrationSet(root, kw.pop("preprocess", PP), "images", kw.pop("input_shape", SHAPE), **kw)


def test_seeded_sample_is_reproducible(image_dir: Path) -> None:
    a, b, c = make(image_dir, size=8, seed=1), make(image_dir, size=8, seed=1), make(image_dir, size=8, seed=2)
    assert len(a) == 8 and a.samples == b.samples and a.key == b.key
    assert a.samples != c.samples and a.key != c.key
    x = [f["images"] for f in a.feeds()]
    y = [f["images"] for f in b.feeds()]
    assert all(np.array_equal(u, v) for u, v in zip(x, y, strict=True))
    assert x[0].shape == SHAPE and x[0].dtype == np.float32


def test_key_hashes_preprocessing(image_dir: Path) -> None:
    assert make(image_dir).key != make(image_dir, preprocess=Preprocess(size=(16, 16), color="BGR")).key


def test_small_sample_warns(image_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    logging.getLogger("edgeconv").propagate = True
    with caplog.at_level(logging.WARNING, logger="edgeconv"):
        cal = make(image_dir)
    assert len(cal) == 20
    assert "NVIDIA advises >= 500" in caplog.text
    assert cal.manifest()["below_recommended"] is True


def test_corrupt_image_is_skipped_and_counted(image_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    (image_dir / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg")
    good = sorted(image_dir.glob("*.png"))[0]
    (image_dir / "truncated.png").write_bytes(good.read_bytes()[:200])
    logging.getLogger("edgeconv").propagate = True
    cal = make(image_dir)
    with caplog.at_level(logging.WARNING, logger="edgeconv"):
        n = sum(1 for _ in cal.feeds())
    assert n == 20 and len(cal.skipped) == 2
    assert cal.manifest()["skipped"] == 2 and cal.manifest()["used"] == 20
    assert "skipping unreadable calibration input" in caplog.text


def test_all_corrupt_is_an_error(tmp_path: Path) -> None:
    for i in range(3):
        (tmp_path / f"x{i}.png").write_bytes(b"nope")
    with pytest.raises(CalibrationError, match="none of the 3"):
        list(make(tmp_path).feeds())


def test_shape_mismatch_is_clear(image_dir: Path) -> None:
    cal = make(image_dir, input_shape=(1, 3, 32, 32))
    with pytest.raises(CalibrationError, match=r"shape \(1, 3, 16, 16\).*'images' is \(1, 3, 32, 32\)") as e:
        next(cal.feeds())
    assert "--preprocess size=HxW" in e.value.hint


def test_tensor_rows_stream(tmp_path: Path) -> None:
    np.save(tmp_path / "b.npy", np.arange(4 * 3 * 16 * 16, dtype=np.float32).reshape(4, 3, 16, 16))
    cal = make(tmp_path)
    xs = [f["images"] for f in cal.feeds()]
    assert len(xs) == 4 and all(x.shape == SHAPE for x in xs)
    assert xs[1][0, 0, 0, 0] == 3 * 16 * 16


def _peak_while_streaming(root: Path) -> int:
    cal = make(root)
    tracemalloc.start()
    try:
        for _ in cal.feeds():
            pass
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_memory_does_not_grow_with_sample_size(tmp_path: Path) -> None:
    x = np.ones(SHAPE[1:], np.float32)  # 3 KB each
    for n, d in ((20, tmp_path / "small"), (400, tmp_path / "large")):
        d.mkdir()
        for i in range(n):
            np.save(d / f"{i:04d}.npy", x * i)
    small, large = _peak_while_streaming(tmp_path / "small"), _peak_while_streaming(tmp_path / "large")
    retained = 400 * x.nbytes  # what holding every tensor would cost
    assert large < retained / 4, (small, large)
    assert large < 2 * small + 64 * 1024, (small, large)


def test_check_disjoint_by_content(make_images, tmp_path: Path, image_dir: Path) -> None:
    cal = make(image_dir)
    ev = tmp_path / "eval"
    make_images(ev, 5, seed=7)
    assert check_disjoint(cal, ev) == 0
    shutil.copyfile(sorted(image_dir.glob("*.png"))[3], ev / "renamed_copy.png")
    with pytest.raises(CalibrationError, match="1 evaluation input"):
        check_disjoint(cal, ev)
    assert check_disjoint(cal, sorted(ev.iterdir()), allow_overlap=True) == 1


def test_input_stats_and_warning(image_dir: Path) -> None:
    cal = make(image_dir)
    feeds = list(cal.feeds())
    st = cal.manifest()["input_stats"]
    assert st["samples"] == 20 and len(st["mean"]) == 3
    assert abs(st["mean"][0] - float(np.mean([f["images"][0, 0] for f in feeds]))) < 1e-4
    assert input_stats_warning(st, feeds) is None
    unscaled = [{"images": f["images"] * 255.0} for f in feeds]  # forgot /255 at evaluation
    msg = input_stats_warning(st, unscaled)
    assert msg and "same --preprocess" in msg
    shifted = [{"images": (f["images"] - 0.45) / 0.25} for f in feeds]  # ImageNet-style normalisation added
    assert input_stats_warning(st, shifted)
