"""An Ultralytics ONNX export carries its head in ``metadata_props`` (author, task, names, stride): the decode of
``--model yolo11n.onnx --postprocess end2end`` is read from there, and only from an Ultralytics detect export."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest
from onnx import TensorProto, helper

from edgeconv.postprocess.derive import decode_params_from_module, from_onnx_metadata


def _onnx(path: Path, meta: dict[str, str], n: int = 2100) -> Path:
    node = helper.make_node("Identity", ["x"], ["output0"])
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 84, n])],
                          [helper.make_tensor_value_info("output0", TensorProto.FLOAT, [1, 84, n])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    for k, v in meta.items():
        m.metadata_props.add(key=k, value=v)
    onnx.save(m, path)
    return path


META = {"author": "Ultralytics", "task": "detect", "stride": "32", "end2end": "False",
        "names": str({i: f"c{i}" for i in range(80)}), "imgsz": "[320, 320]"}


def test_an_ultralytics_detect_export_gives_its_decode(tmp_path: Path) -> None:
    path = _onnx(tmp_path / "y.onnx", META)
    assert from_onnx_metadata(path) == {"head": "yolov8", "num_classes": 80, "strides": (8, 16, 32), "reg_max": 16}
    d = decode_params_from_module(None, outputs=[("output0", (1, 84, 2100))], input_size=(320, 320), onnx_path=path)
    assert d.head == "yolo-decoded" and d.num_classes == 80


@pytest.mark.parametrize("change", [{"author": "someone"}, {"task": "segment"}, {"end2end": "True"},
                                    {"names": "not a dict"}, {"stride": "7"}])
def test_anything_else_is_not_guessed(tmp_path: Path, change: dict[str, str]) -> None:
    path = _onnx(tmp_path / "y.onnx", {**META, **change})
    assert from_onnx_metadata(path) is None
    with pytest.raises(Exception, match="no PyTorch module and no head= option"):
        decode_params_from_module(None, outputs=[("output0", (1, 84, 2100))], input_size=(320, 320), onnx_path=path)
