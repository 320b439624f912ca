"""Broken models and inputs: each is its own error kind, naming the user's file, found before a target runs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from edgeconv.core.errors import ConfigError, ExportError, ModelLoadError
from edgeconv.core.tensors import TensorSpec, parse_input_spec
from edgeconv.export.reference import prepare_reference
from edgeconv.intake.loader import load_source

FIX = Path(__file__).parents[1] / "fixtures" / "tiny_model.py"
SPEC = [TensorSpec("images", (1, 3, 16, 16), "float32", "NCHW")]

MODELS = '''
import sys
import torch
from torch import nn

class Raises(nn.Module):
    def forward(self, x):
        raise ValueError("my forward is broken")

class Exits(nn.Module):
    def forward(self, x):
        sys.exit(3)

class ReturnsNone(nn.Module):
    def forward(self, x):
        return None

class TwoInputs(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 1)
    def forward(self, x, y):
        return self.conv(x) + y

class Nan(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 1)
    def forward(self, x):
        return torch.log(self.conv(x) - 100.0)

def build(kind):
    return {"raises": Raises, "exits": Exits, "none": ReturnsNone, "two": TwoInputs, "nan": Nan}[kind]()
'''


@pytest.fixture(scope="module")
def models_py(tmp_path_factory: pytest.TempPathFactory) -> Path:
    f = tmp_path_factory.mktemp("m") / "broken_models.py"
    f.write_text(MODELS)
    return f


@pytest.mark.parametrize(("kind", "words"), [("raises", "my forward is broken"), ("exits", "sys.exit(3)"),
                                             ("none", "returned no tensor"), ("two", "forward takes 2")])
def test_a_broken_forward_is_a_model_load_error_naming_the_file(models_py: Path, kind: str, words: str) -> None:
    src = load_source(f"{models_py}:build", model_args={"kind": kind})
    with pytest.raises(ModelLoadError) as ei:
        prepare_reference(src, SPEC, use_cache=False)
    text = ei.value.message + " " + (ei.value.hint or "")
    assert str(models_py) in ei.value.message and words in text


def test_a_model_whose_own_output_is_nan_is_blamed_on_the_reference(models_py: Path) -> None:
    src = load_source(f"{models_py}:build", model_args={"kind": "nan"})
    with pytest.raises(ExportError) as ei:
        prepare_reference(src, SPEC, use_cache=False)
    assert "reference itself is not finite" in ei.value.message and ei.value.stage == "export"
    assert "converter" not in (ei.value.hint or "")


def test_wrong_channel_count_names_the_input() -> None:
    src = load_source(f"{FIX}:build")
    with pytest.raises(ModelLoadError) as ei:
        prepare_reference(src, [parse_input_spec("images:1x4x32x32")], use_cache=False)
    assert "images:1x4x32x32" in ei.value.message and "--input" in ei.value.hint


@pytest.mark.parametrize("text", ["x:1x3x100000x200000", "x:1x0x4", "x:" + "x".join(["2"] * 9),
                                  "x:1x3x99999999999999x2"])
def test_absurd_input_specs_are_usage_errors(text: str) -> None:
    with pytest.raises(ConfigError):
        parse_input_spec(text)


def test_224_gib_input_says_how_big() -> None:
    with pytest.raises(ConfigError, match="GiB"):
        parse_input_spec("images:1x3x100000x200000")


# --- user ONNX files ---------------------------------------------------------------------------------------------


def _onnx_model(dims=(1, 3, 4, 4), op="Relu", domain="") -> onnx.ModelProto:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, list(dims))
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, list(dims))
    w = helper.make_tensor("w", TensorProto.FLOAT, [1], [2.0])
    nodes = [helper.make_node("Mul", ["x", "w"], ["t"]), helper.make_node(op, ["t"], ["y"], domain=domain)]
    opsets = [helper.make_opsetid("", 17)] + ([helper.make_opsetid(domain, 1)] if domain else [])
    return helper.make_model(helper.make_graph(nodes, "g", [x], [y], [w]), opset_imports=opsets)


def _ref_error(path: Path) -> ModelLoadError:
    src = load_source(str(path))
    with pytest.raises(ModelLoadError) as ei:
        prepare_reference(src, None, use_cache=False)
    assert str(path) in ei.value.message, ei.value.message
    assert ei.value.hint
    return ei.value


def test_corrupt_and_truncated_onnx(tmp_path: Path) -> None:
    good = tmp_path / "good.onnx"
    onnx.save(_onnx_model(), str(good))
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"\x08\x07garbage that is not a protobuf" * 5)
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2])
    for p in (corrupt, truncated):
        _ref_error(p)
    assert prepare_reference(load_source(str(good)), None, use_cache=False).inputs[0].shape == (1, 3, 4, 4)


def test_zero_dim_and_custom_op_onnx(tmp_path: Path) -> None:
    zero = tmp_path / "zero.onnx"
    onnx.save(_onnx_model(dims=(1, 0, 4, 4)), str(zero))
    assert "zero-size" in _ref_error(zero).message
    custom = tmp_path / "custom.onnx"
    onnx.save(_onnx_model(op="MyOp", domain="com.example"), str(custom))
    assert "com.example::MyOp" in _ref_error(custom).message


def test_external_data_is_read_from_the_users_folder_or_missing_by_name(tmp_path: Path) -> None:
    m = _onnx_model()
    big = helper.make_tensor("w", TensorProto.FLOAT, [1], np.array([2.0], np.float32).tobytes(), raw=True)
    m.graph.initializer[0].CopyFrom(big)
    ext = tmp_path / "ext.onnx"
    onnx.save(m, str(ext), save_as_external_data=True, location="ext.onnx.data", size_threshold=0)
    assert (tmp_path / "ext.onnx.data").is_file()
    ref = prepare_reference(load_source(str(ext)), None, use_cache=False)
    from edgeconv.export.onnx_export import onnx_outputs

    x = np.ones((1, 3, 4, 4), np.float32)
    assert np.allclose(next(iter(onnx_outputs(ref.onnx_path, {"x": x}).values())), 2.0)
    (tmp_path / "ext.onnx.data").unlink()
    assert "ext.onnx.data" in _ref_error(ext).message


@pytest.mark.parametrize("location", ["../../outside.bin", "/etc/hostname"])
def test_external_data_outside_the_models_folder_is_refused_unread(tmp_path: Path, location: str) -> None:
    (tmp_path / "outside.bin").write_bytes(np.array([3.0], np.float32).tobytes())
    m = _onnx_model()
    t = m.graph.initializer[0]
    t.ClearField("float_data")
    t.data_location = TensorProto.EXTERNAL
    for k, v in (("location", location), ("offset", "0"), ("length", "4")):
        e = t.external_data.add()
        e.key, e.value = k, v
    (tmp_path / "a" / "b").mkdir(parents=True)
    path = tmp_path / "a" / "b" / "m.onnx"
    onnx.save(m, str(path))
    err = _ref_error(path)
    assert "inside the model's folder" in err.hint


def test_an_opset_newer_than_onnx_knows_is_named(tmp_path: Path) -> None:
    m = _onnx_model()
    m.opset_import[0].version = onnx.defs.onnx_opset_version() + 2
    path = tmp_path / "future.onnx"
    onnx.save(m, str(path))
    err = _ref_error(path)
    assert f"opset {onnx.defs.onnx_opset_version() + 2}" in err.message and "re-export" in err.hint


def test_onnx_whose_output_is_nan_is_an_export_error(tmp_path: Path) -> None:
    p = tmp_path / "nan.onnx"
    onnx.save(_onnx_model(op="Log"), str(p))  # log(2x) of x in [0, 1): -inf at 0 is possible, so force NaN below
    m = _onnx_model(op="Sqrt")
    m.graph.initializer[0].CopyFrom(helper.make_tensor("w", TensorProto.FLOAT, [1], [-2.0]))
    onnx.save(m, str(p))
    with pytest.raises(ExportError, match="reference itself is not finite"):
        prepare_reference(load_source(str(p)), None, use_cache=False)
