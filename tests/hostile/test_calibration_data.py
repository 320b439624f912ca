"""Calibration data as real folders hold it: odd image modes, NaN tensors, symlink loops, too few files."""

from __future__ import annotations

import logging
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edgeconv.calibration.dataset import CalibrationSet
from edgeconv.calibration.preprocess import Preprocess
from edgeconv.calibration.sources import discover
from edgeconv.core.errors import CalibrationError

PP = Preprocess(size=(8, 8))


def _png16_rgb(path: Path, rgb16: np.ndarray) -> Path:
    """A 48-bit RGB PNG written by hand (PIL cannot write one): IHDR depth 16, colour type 2."""
    h, w, _ = rgb16.shape
    raw = b"".join(b"\x00" + rgb16[y].astype(">u2").tobytes() for y in range(h))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
    return path


def test_16_bit_grey_png_and_tiff_are_not_clipped_to_white(tmp_path: Path) -> None:
    grey = np.full((6, 5), 40000, np.uint16)  # 61 % of full scale: was read as 255 (white)
    for suffix in (".png", ".tif"):
        p = tmp_path / f"g16{suffix}"
        Image.fromarray(grey).save(p)
        assert Image.open(p).mode.startswith("I;16")
        arr = PP.load(p)
        assert arr.shape == (6, 5, 3) and int(arr.max()) == 40000 >> 8


def test_16_bit_colour_png(tmp_path: Path) -> None:
    rgb = np.zeros((4, 4, 3), np.uint16)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 65535, 32768, 256
    arr = PP.load(_png16_rgb(tmp_path / "c16.png", rgb))
    assert arr[0, 0].tolist() == [255, 128, 1]


def test_palette_cmyk_grey_alpha_modes(tmp_path: Path) -> None:
    rgb = np.zeros((4, 4, 3), np.uint8)
    rgb[..., 0] = 200
    pal = Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE, colors=4)
    pal.info["transparency"] = 0
    pal.save(tmp_path / "pal.png", transparency=0)
    Image.fromarray(rgb).convert("CMYK").save(tmp_path / "cmyk.jpg", quality=100)
    Image.fromarray(np.full((4, 4), 77, np.uint8)).save(tmp_path / "grey.png")
    rgba = np.concatenate([rgb, np.zeros((4, 4, 1), np.uint8)], axis=-1)  # fully transparent
    Image.fromarray(rgba, "RGBA").save(tmp_path / "alpha.png")
    assert PP.load(tmp_path / "pal.png")[0, 0].tolist() == [200, 0, 0]
    assert abs(int(PP.load(tmp_path / "cmyk.jpg")[0, 0, 0]) - 200) <= 3
    assert PP.load(tmp_path / "grey.png")[0, 0].tolist() == [77, 77, 77]
    assert PP.load(tmp_path / "alpha.png")[0, 0].tolist() == [200, 0, 0]  # alpha dropped, as cv2.imread does
    bgr = Preprocess(size=(8, 8), color="BGR")
    assert bgr.load(tmp_path / "alpha.png")[0, 0].tolist() == [0, 0, 200]


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    img = np.zeros((4, 8, 3), np.uint8)
    img[:, :4] = 255  # left half white, 8 wide x 4 high as stored
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    p = tmp_path / "rot.jpg"
    Image.fromarray(img).save(p, exif=exif, quality=100)
    arr = PP.load(p)
    assert arr.shape[:2] == (8, 4)  # displayed upright: 4 wide x 8 high
    assert arr[:3].mean() > 200 and arr[-3:].mean() < 50  # the white half is now on top


def test_float_images_are_refused_by_name_and_counted(tmp_path: Path) -> None:
    Image.fromarray(np.full((8, 8), 0.5, np.float32)).save(tmp_path / "float.tif")
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "ok.png")
    with pytest.raises(CalibrationError, match=r"float\.tif"):
        PP.load(tmp_path / "float.tif")
    cal = CalibrationSet(tmp_path, PP, "x", (1, 3, 8, 8), size=None, warn_small=False)
    assert len(list(cal.feeds())) == 1 and any("float.tif" in s for s in cal.skipped)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_calibration_tensors_are_refused_naming_tensor_and_file(tmp_path: Path, bad: float) -> None:
    x = np.zeros((3, 8, 8), np.float32)
    np.save(tmp_path / "a.npy", x)
    x[1, 2, 3] = bad
    np.savez(tmp_path / "b.npz", images=x)
    cal = CalibrationSet(tmp_path, PP, "images", (1, 3, 8, 8), size=None, warn_small=False)
    with pytest.raises(CalibrationError) as ei:
        list(cal.feeds())
    assert "b.npz" in ei.value.message and "images" in ei.value.message
    assert ("NaN" if np.isnan(bad) else "Inf") in ei.value.message


def test_symlink_loop_counts_each_image_once(tmp_path: Path) -> None:
    root = tmp_path / "data"
    (root / "sub").mkdir(parents=True)
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(root / "sub" / "one.png")
    (root / "sub" / "loop").symlink_to(root, target_is_directory=True)  # data/sub/loop -> data
    (root / "again").symlink_to(root / "sub", target_is_directory=True)  # a second name for sub/
    (root / "sub" / "alias.png").symlink_to(root / "sub" / "one.png")
    _, samples = discover(root)
    assert len(samples) == 1


def test_calib_size_larger_than_the_data_is_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    for i in range(3):
        Image.fromarray(np.full((8, 8, 3), i, np.uint8)).save(tmp_path / f"{i}.png")
    from edgeconv.core.console import log

    log.propagate = True
    try:
        with caplog.at_level(logging.WARNING, logger="edgeconv"):
            cal = CalibrationSet(tmp_path, PP, "x", (1, 3, 8, 8), size=100)
    finally:
        log.propagate = False
    assert len(cal) == 3 and cal.manifest()["requested"] == 100 and cal.manifest()["available"] == 3
    assert any("--calib-size 100" in r.getMessage() for r in caplog.records)
    caplog.clear()
    log.propagate = True
    try:
        with caplog.at_level(logging.WARNING, logger="edgeconv"):
            CalibrationSet(tmp_path, PP, "x", (1, 3, 8, 8))  # the default size is no request: used whole, quietly
    finally:
        log.propagate = False
    assert not any("asked for" in r.getMessage() for r in caplog.records)
    assert Path(cal.manifest()["root"]).is_absolute()


@pytest.mark.parametrize("size", [0, -5, True, 2.5])
def test_bad_calib_sizes(tmp_path: Path, size: object) -> None:
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "a.png")
    with pytest.raises(CalibrationError):
        CalibrationSet(tmp_path, PP, "x", (1, 3, 8, 8), size=size)  # type: ignore[arg-type]


def test_a_model_with_two_inputs_is_a_calibration_error_and_its_fp32_rows_convert(tmp_path: Path) -> None:
    """Calibration feeds one input: a two-input model's INT8 rows fail with that named (exit 2, not an internal
    error from deep inside a quantizer), its fp32 rows still convert."""
    from click.testing import CliRunner

    from edgeconv.cli import main

    (tmp_path / "m.py").write_text(
        "import torch\n"
        "class M(torch.nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.a, self.b = torch.nn.Conv2d(3, 4, 1), torch.nn.Conv2d(1, 4, 1)\n"
        "    def forward(self, img, depth):\n"
        "        return self.a(img) + self.b(depth)\n"
        "def build():\n"
        "    return M()\n")
    calib = tmp_path / "calib"
    calib.mkdir()
    for i in range(4):
        Image.fromarray(np.full((8, 8, 3), 40 * i, np.uint8)).save(calib / f"{i}.png")
    res = CliRunner().invoke(main, ["convert", "--model", f"{tmp_path / 'm.py'}:build", "--input", "1x3x8x8",
                                    "--input", "1x1x8x8", "-t", "onnxruntime", "-p", "fp32", "-p", "int8",
                                    "--calib", str(calib), "--out", str(tmp_path / "out"), "--no-cache"])
    assert res.exit_code == 2, res.output
    assert "calibration feeds one input; this model has 2 (img, depth)" in res.output
    assert (tmp_path / "out" / "onnxruntime-fp32" / "manifest.json").is_file()
    assert not (tmp_path / "out" / "onnxruntime-int8").exists()
