"""User-typed settings: --opset, --preprocess, profiles. Nonsense is a usage error naming the key; nothing is
silently replaced."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgeconv.calibration.preprocess import Preprocess, cv2_resize_linear
from edgeconv.core.errors import ConfigError
from edgeconv.core.tensors import TensorSpec, random_feeds
from edgeconv.export.onnx_export import check_opset, export_verified, opset_ranges
from edgeconv.intake.loader import load_source
from edgeconv.profiles import DEFAULT_TOLERANCES, PRECISIONS, load_profile_file, profile_json_schema

FIX = Path(__file__).parents[1] / "fixtures" / "tiny_model.py"


@pytest.mark.parametrize("opset", [999, 3, 0, -1, 24])
def test_out_of_range_opsets_name_every_exporters_range(opset: int) -> None:
    with pytest.raises(ConfigError) as ei:
        check_opset(opset)
    r = opset_ranges()
    for name, (lo, hi) in r.items():
        assert f"{name} {lo}-{hi}" in ei.value.message


@pytest.mark.parametrize("max_batch", [0, -3, True, 2.5])
def test_bad_max_batch_is_a_usage_error(max_batch: object) -> None:
    from edgeconv.export.onnx_export import DynamicSpec

    with pytest.raises(ConfigError, match="max-batch"):
        DynamicSpec(batch=True, max_batch=max_batch)  # type: ignore[arg-type]


def test_opset_plan_raises_and_skips_and_is_recorded(tmp_path: Path) -> None:
    assert check_opset(17) == {"dynamo": 18, "legacy": 17}
    assert check_opset(22)["legacy"] is None
    with pytest.raises(ConfigError):
        check_opset(22, ("legacy",))
    with pytest.raises(ConfigError):
        check_opset("17")  # type: ignore[arg-type]
    spec = [TensorSpec("images", (1, 3, 16, 16))]
    rec = export_verified(load_source(f"{FIX}:build").module, spec, None, tmp_path / "m.onnx", opset=17,
                          exporters=("dynamo",), sample_feeds=[random_feeds(spec)])
    assert rec["opset"] == 18 and rec["opset_requested"] == 17 and "raised opset 17 to 18" in rec["opset_notes"][0]


@pytest.mark.parametrize(("text", "words"), [
    ("size=abc", "size"), ("scale=1/0", "divides by zero"), ("scale=abc", "not a number"), ("colour=RGB", "unknown"),
    ("mean=0.5/0.5", "2 values"), ("std=1/0/1", "std"), ("size=0x10", "1-16384"), ("pad_value=300", "pad_value"),
    ("scale=inf", "finite"), ("resize=squash", "resize"), ("resize_filter=lanczos", "resize_filter"),
    ("size", "key=value"), ("mean=a/b/c", "not a number"),
])
def test_malformed_preprocess_values_are_config_errors(text: str, words: str) -> None:
    with pytest.raises(ConfigError) as ei:
        Preprocess.parse(text)
    assert words in ei.value.message


def test_preprocess_tables_with_wrong_types(tmp_path: Path) -> None:
    for bad in ({"size": "big"}, {"mean": "x"}, {"scale": [1]}, {"color": 3}, {"nope": 1}, {"size": [1, 2, 3]}):
        with pytest.raises(ConfigError):
            Preprocess.from_dict(bad)
    f = tmp_path / "pp.json"
    f.write_text("{not json")
    with pytest.raises(ConfigError, match=r"pp\.json"):
        Preprocess.parse(str(f))


def test_default_filter_keeps_existing_contract_hashes() -> None:
    pp = Preprocess(size=(32, 32))
    assert "resize_filter" not in pp.to_dict()
    cv = Preprocess(size=(32, 32), resize_filter="cv2-bilinear")
    assert cv.to_dict()["resize_filter"] == "cv2-bilinear" and cv.sha256 != pp.sha256
    assert Preprocess.from_dict(cv.to_dict()) == cv


def test_cv2_bilinear_equals_opencv() -> None:
    cv2 = pytest.importorskip("cv2", reason="opencv-python-headless is only used to check equality")
    rng = np.random.default_rng(0)
    for _ in range(60):
        hs, ws = (int(v) for v in rng.integers(1, 160, 2))
        h, w = (int(v) for v in rng.integers(1, 160, 2))
        img = rng.integers(0, 256, (hs, ws, 3), dtype=np.uint8)
        want = cv2.resize(img, (w, h), interpolation=cv2.INTER_LINEAR)
        np.testing.assert_array_equal(cv2_resize_linear(img, w, h), want)
    for hs, ws, h, w in ((480, 640, 240, 320), (100, 100, 256, 256), (37, 53, 20, 30)):
        img = rng.integers(0, 256, (hs, ws), dtype=np.uint8)
        want = cv2.resize(img, (w, h), interpolation=cv2.INTER_LINEAR)
        np.testing.assert_array_equal(cv2_resize_linear(img, w, h), want)


def test_cv2_bilinear_is_not_antialiased_and_is_used_by_the_contract() -> None:
    img = np.zeros((64, 64, 3), np.uint8)
    img[::4, ::4] = 255  # isolated dots on the grid cv2's 4x downscale never samples (it reads 4k+1 and 4k+2)
    pil = Preprocess(size=(16, 16), scale=1.0).apply(img)
    cv = Preprocess(size=(16, 16), scale=1.0, resize_filter="cv2-bilinear").apply(img)
    assert float(pil.mean()) > 5 and float(cv.max()) == 0.0  # PIL averages the dots in, cv2 skips them
    np.testing.assert_array_equal(cv[0].transpose(1, 2, 0).astype(np.uint8), cv2_resize_linear(img, 16, 16))


def test_synthetic_feeds_follow_the_contract() -> None:
    pp = Preprocess(size=(32, 48), mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    spec = TensorSpec("x", (2, 3, 32, 48))
    feeds = pp.synthetic_feeds(spec, 3, seed=1)
    assert len(feeds) == 3 and all(f["x"].shape == (2, 3, 32, 48) and f["x"].dtype == np.float32 for f in feeds)
    x = np.concatenate([f["x"] for f in feeds])
    lo = (0 - np.array(pp.mean)) / np.array(pp.std)
    hi = (1 - np.array(pp.mean)) / np.array(pp.std)
    assert (x.min(axis=(0, 2, 3)) >= lo - 1e-5).all() and (x.max(axis=(0, 2, 3)) <= hi + 1e-5).all()
    # image-like: neighbouring pixels correlate (uniform noise does not), and the range is used
    a, b = x[..., :, :-1].ravel(), x[..., :, 1:].ravel()
    assert np.corrcoef(a, b)[0, 1] > 0.5 and x.std() > 0.5
    assert np.array_equal(pp.synthetic_feeds(spec, 3, seed=1)[0]["x"], feeds[0]["x"])  # deterministic
    grey = Preprocess(size=(16, 16), color="GRAY").synthetic_feeds(TensorSpec("g", (1, 1, 16, 16)), 1)
    assert grey[0]["g"].shape == (1, 1, 16, 16)
    with pytest.raises(ConfigError):
        pp.synthetic_feeds(TensorSpec("x", (1, 3, 64, 64)), 1)


@pytest.mark.parametrize(("body", "key"), [
    ('precisions = "fp32"', "precisions"), ('threads = "2"', "threads"), ("threads = -1", "threads"),
    ('layout = "NWHC"', "layout"), ("[tolerance.fp16]\ncosine = \"high\"", "tolerance.fp16.cosine"),
    ("[tolerance.fp64]\ncosine = 0.9", "tolerance.fp64"), ("[tolerance.int8]\ncosinus = 0.9", "cosinus"),
    ("options = 3", "options"), ("[preprocess]\nsize = \"abc\"", "preprocess"), ('name = "a/b"', "name"),
    ('precision = "int8"\nprecisions = ["fp32"]', "precision"),
])
def test_profiles_of_the_wrong_shape_name_file_and_key(tmp_path: Path, body: str, key: str) -> None:
    p = tmp_path / "mine.toml"
    p.write_text(f'backend = "onnxruntime"\n{body}\n')
    with pytest.raises(ConfigError) as ei:
        load_profile_file(p)
    assert str(p) in ei.value.message and key in ei.value.message


def test_bf16_precision_and_schema(tmp_path: Path) -> None:
    assert "bf16" in PRECISIONS and DEFAULT_TOLERANCES["bf16"] == {"cosine": 0.999, "task_delta": 0.3,
                                                                   "detections_matched": 0.97}
    p = tmp_path / "my board.toml"
    p.write_text('backend = "openvino"\nprecisions = ["fp32", "bf16"]\n[tolerance.bf16]\ncosine = 0.99\n')
    prof = load_profile_file(p)
    assert prof.name == "my-board" and prof.tol("bf16") == {"cosine": 0.99, "task_delta": 0.3,
                                                            "detections_matched": 0.97}
    schema = profile_json_schema()
    assert schema["properties"]["threads"]["type"] == "integer" and "backend" in schema["required"]
