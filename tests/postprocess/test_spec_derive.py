"""The contract's parameters: validation (one-line ConfigErrors), JSON round trip, and derivation from modules."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edgeconv.core.errors import ConfigError
from edgeconv.postprocess import DecodeParams, PostprocessSpec, decode_params_from_module
from edgeconv.postprocess import standalone as sa

torch = pytest.importorskip("torch", reason="derivation reads torch modules")

V8_OUTS = [("p3", (1, 67, 8, 8)), ("p5", (1, 67, 2, 2)), ("p4", (1, 67, 4, 4))]  # 4*16 + 3 channels, unordered


def _yolo_spec(**kw) -> PostprocessSpec:
    dec = DecodeParams("yolov5", 5, (256, 256), ("p3", "p4", "p5"), strides=(8, 16, 32),
                       anchors=(((10.0, 13.0),), ((30.0, 61.0),), ((116.0, 90.0),)))
    return PostprocessSpec(dec, **kw)


@pytest.mark.parametrize("kw, needle", [
    ({"score_threshold": 1.5}, "score_threshold = 1.5 is out of range"),
    ({"score_threshold": -0.1}, "score_threshold"),
    ({"score_threshold": float("nan")}, "score_threshold"),
    ({"iou_threshold": 0.0}, "iou_threshold = 0.0 is out of range (0, 1]"),
    ({"iou_threshold": 1.2}, "iou_threshold"),
    ({"max_det": 0}, "max_det"),
    ({"max_candidates": 10}, "max_candidates"),
])
def test_contract_options_out_of_range_are_one_line_config_errors(kw, needle):
    with pytest.raises(ConfigError) as ei:
        _yolo_spec(**kw).validate()
    assert needle in str(ei.value)
    assert "\n" not in ei.value.one_line() and ei.value.hint


def test_unknown_head_and_malformed_decode_are_config_errors():
    with pytest.raises(ConfigError, match="unknown head 'retinanet'"):
        DecodeParams("retinanet", 5, (256, 256), ("x",)).validate()
    with pytest.raises(ConfigError, match="ssd head needs outputs"):
        DecodeParams("ssd", 5, (256, 256), ("x",)).validate()
    with pytest.raises(ConfigError, match="anchors per level"):
        DecodeParams("yolov5", 5, (256, 256), ("p3", "p4"), strides=(8, 16), anchors=(((1.0, 2.0),),)).validate()
    with pytest.raises(ConfigError, match="stride"):
        DecodeParams("yolov8", 5, (256, 256), ("p3", "p4"), strides=(8,)).validate()
    with pytest.raises(ConfigError, match="unknown option"):
        _yolo_spec().with_options(nms_threshold=0.5)


def test_spec_round_trips_through_json_and_feeds_the_standalone_module():
    spec = _yolo_spec(max_det=50, score_threshold=0.25, class_agnostic=True).validate()
    text = json.dumps(spec.to_dict())
    back = PostprocessSpec.from_dict(json.loads(text))
    assert back == spec
    with pytest.raises(ConfigError, match="unknown parameter"):
        PostprocessSpec.from_dict({**spec.to_dict(), "nms": "fast"})
    # The numpy module takes exactly this dict (no edgeconv objects on the device side).
    raw = {n: np.zeros((1, 10, s, s), np.float32) for n, s in (("p3", 32), ("p4", 16), ("p5", 8))}
    dets, count = sa.apply(raw, {"spec": json.loads(text)})
    assert dets.shape == (1, 50, 6) and dets.dtype == np.float32 and count.tolist() == [0]


def test_bundled_models_derive_from_their_modules():
    from edgeconv.zoo import centernet, yolo

    ymod = yolo.build()
    d = decode_params_from_module(ymod, {"bundled": "yolo"}, input_size=(256, 256),
                                  outputs=[("p3", (1, 30, 32, 32)), ("p4", (1, 30, 16, 16)), ("p5", (1, 30, 8, 8))])
    assert d.head == "yolov5" and d.num_classes == 5 and d.strides == (8, 16, 32)
    assert d.anchors == yolo.ANCHORS and d.output_shapes[0] == (1, 30, 32, 32) and d.total_boxes == 3 * 1344
    c = decode_params_from_module(centernet.build(), {"bundled": "centernet"}, input_size=(256, 256),
                                  outputs=[("heatmap", (1, 5, 64, 64)), ("wh", (1, 2, 64, 64)),
                                           ("offset", (1, 2, 64, 64))])
    assert (c.head, c.strides, c.outputs, c.heatmap_sigmoid) == ("centernet", (4,), ("heatmap", "wh", "offset"), True)


def test_ultralytics_style_heads_derive_anchors_strides_and_dfl(heads):
    v8 = decode_params_from_module(heads.build_v8(nc=3), outputs=V8_OUTS, input_size=(64, 64))
    assert (v8.head, v8.reg_max, v8.strides, v8.num_classes) == ("yolov8", 16, (8, 16, 32), 3)
    assert v8.outputs == ("p3", "p4", "p5")  # finest level first, whatever order the graph lists them in
    dec = decode_params_from_module(heads.build_v8(nc=3), outputs=[("output0", (1, 7, 84))], input_size=(64, 64))
    assert (dec.head, dec.channels_first, dec.objectness) == ("yolo-decoded", True, False)
    v5 = decode_params_from_module(heads.build_v5(nc=3), outputs=[("output0", (1, 252, 8))], input_size=(64, 64))
    assert (v5.head, v5.channels_first, v5.objectness) == ("yolo-decoded", False, True)
    v5m = decode_params_from_module(heads.build_v5(nc=3), input_size=(64, 64),
                                    outputs=[("a", (1, 24, 8, 8)), ("b", (1, 24, 4, 4)), ("c", (1, 24, 2, 2))])
    assert v5m.head == "yolov5" and v5m.anchors[2][2] == pytest.approx((373.0, 326.0))  # grid units x stride


def test_unknown_head_names_what_is_missing(heads):
    with pytest.raises(ConfigError, match=r"unknown detection head.*Sequential") as ei:
        decode_params_from_module(torch.nn.Sequential(torch.nn.Conv2d(3, 8, 1)), outputs=[("y", (1, 8, 4, 4))],
                                  input_size=(4, 4))
    assert "head=" in ei.value.hint
    with pytest.raises(ConfigError, match="decode cannot be derived from an ONNX file"):
        decode_params_from_module(None, outputs=[("y", (1, 8, 4, 4))], input_size=(4, 4))
    with pytest.raises(ConfigError, match="missing: strides"):
        decode_params_from_module(None, head="yolov8", num_classes=3, outputs=V8_OUTS, input_size=(64, 64))
    net = heads.build_v8()
    net.model[0].stride = torch.zeros(3)
    with pytest.raises(ConfigError, match="stride is not set"):
        decode_params_from_module(net, outputs=V8_OUTS, input_size=(64, 64))


def test_options_supply_the_decode_for_onnx_only_models_in_cli_form():
    d = decode_params_from_module(None, head="yolov8", num_classes="3", strides="8,16,32", reg_max="16",
                                  outputs=V8_OUTS, input_size="64x64")
    assert d.strides == (8, 16, 32) and d.num_classes == 3 and d.input_size == (64, 64)
    y5 = decode_params_from_module(None, head="yolov5", num_classes=5, strides=[8, 16, 32], input_size=(256, 256),
                                   anchors="[[[14,14]],[[32,32]],[[62,62]]]",
                                   outputs=[("p3", (1, 10, 32, 32)), ("p4", (1, 10, 16, 16)), ("p5", (1, 10, 8, 8))])
    assert y5.anchors[1] == ((32.0, 32.0),)
    with pytest.raises(ConfigError, match="unknown option"):
        decode_params_from_module(None, head="yolov8", anchor_free=True)
