"""Per-backend placement of the post-processing and its refusals."""

from __future__ import annotations

import pytest

from edgeconv.core.errors import ConfigError
from edgeconv.postprocess import DecodeParams, PostprocessSpec, effective_spec, plan_postprocess

YOLO = PostprocessSpec(DecodeParams("yolov5", 5, (256, 256), ("p3", "p4", "p5"), strides=(8, 16, 32),
                                    anchors=(((14.0, 14.0),) * 3, ((32.0, 32.0),) * 3, ((62.0, 62.0),) * 3),
                                    output_shapes=((1, 30, 32, 32), (1, 30, 16, 16), (1, 30, 8, 8)))).validate()
CENTERNET = PostprocessSpec(DecodeParams("centernet", 5, (256, 256), ("heatmap", "wh", "offset"), strides=(4,),
                                         output_shapes=((1, 5, 64, 64), (1, 2, 64, 64), (1, 2, 64, 64)))).validate()


@pytest.mark.parametrize("backend, spec, stage, nms, torch_wrapper", [
    ("onnxruntime", YOLO, "detections", "onnx", False),
    ("openvino", YOLO, "detections", "onnx", False),
    ("tensorrt", YOLO, "detections", "onnx", False),
    ("tflite", YOLO, "candidates", "none", True),
    ("tflite", CENTERNET, "detections", "none", True),
    ("onnxruntime", CENTERNET, "detections", "none", False),
    ("ncnn", YOLO, "raw", None, False),
    ("ncnn", CENTERNET, "raw", None, False),
    ("mnn", YOLO, "raw", None, False),
    ("executorch", CENTERNET, "raw", None, False),
])
def test_default_placement_per_backend(backend, spec, stage, nms, torch_wrapper):
    p = plan_postprocess(backend, spec)
    assert (p.stage, p.nms, p.torch_wrapper) == (stage, nms, torch_wrapper)
    assert p.tensorrt == (backend == "tensorrt") and p.note


def test_backend_without_the_ops_refuses_in_graph_placement():
    with pytest.raises(ConfigError, match="ncnn has no NonMaxSuppression op") as ei:
        plan_postprocess("ncnn", YOLO, mode="graph")
    assert "beside" in ei.value.hint and "\n" not in ei.value.one_line()
    with pytest.raises(ConfigError, match="mnn has no TopK"):
        plan_postprocess("mnn", CENTERNET, mode="decode")
    with pytest.raises(ConfigError, match="unknown placement"):
        plan_postprocess("onnxruntime", YOLO, mode="everywhere")
    with pytest.raises(ConfigError, match="tflite has no NonMaxSuppression"):
        plan_postprocess("tflite", YOLO, mode="graph")


def test_capabilities_and_explicit_modes_override_the_table():
    assert plan_postprocess("mnn", YOLO, capabilities={"nms_in_graph"}).stage == "detections"
    assert plan_postprocess("ncnn", YOLO, capabilities={"topk_in_graph"}).stage == "candidates"
    assert plan_postprocess("onnxruntime", YOLO, mode="beside").stage == "raw"
    assert plan_postprocess("openvino", YOLO, mode="decode").stage == "candidates"


def test_tensorrt_lifts_a_pre_nms_cap_above_its_topk_limit():
    p = plan_postprocess("tensorrt", YOLO)
    assert effective_spec(YOLO, p).max_candidates == 3 * 1344 * 5  # 10000 > 3840: no cap, TensorRT bounds it
    small = YOLO.with_options(max_candidates=2000)
    assert effective_spec(small, p) == small
    assert effective_spec(YOLO, plan_postprocess("onnxruntime", YOLO)) == YOLO
