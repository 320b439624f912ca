"""Decoders against independent head implementations, and the in-graph decode + NMS against the numpy reference."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgeconv.core.errors import ConfigError
from edgeconv.postprocess import (
    CANDIDATES,
    COUNT,
    DETECTIONS,
    DecodeParams,
    PostprocessSpec,
    apply_postprocessor,
    compare_detections,
    decode_params_from_module,
    make_end2end_onnx,
    postprocess_node_names,
)
from edgeconv.postprocess import standalone as sa

torch = pytest.importorskip("torch", reason="synthetic heads are torch modules")
ort = pytest.importorskip("onnxruntime", reason="the end2end graphs run on ONNX Runtime")
onnx = pytest.importorskip("onnx", reason="graphs are built with onnx.helper")

LEVELS = ("p3", "p4", "p5")


def _inputs(seed: int, n: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).random((n, 3, 64, 64), dtype=np.float32)


def _xyxy(xywh: np.ndarray) -> np.ndarray:
    return np.concatenate([xywh[..., :2] - xywh[..., 2:] / 2, xywh[..., :2] + xywh[..., 2:] / 2], -1)


def _setup(heads, kind: str, seed: int = 0, n: int = 1) -> tuple[DecodeParams, dict[str, np.ndarray]]:
    """Decode parameters derived from a synthetic module and its raw outputs for seeded inputs."""
    if kind == "centernet":
        raw = heads.centernet_raw(seed, n)
        return DecodeParams("centernet", 3, (64, 64), ("heatmap", "wh", "offset"), strides=(4,),
                            output_shapes=tuple(v.shape for v in raw.values())).validate(), raw
    x = _inputs(seed, n)
    if kind in ("yolov8", "yolov8-decoded"):
        net = heads.build_v8()
    else:
        net = heads.build_v5()
    if kind.endswith("decoded"):
        with torch.no_grad():
            raw = {"output0": net(torch.from_numpy(x)).numpy()}
    else:
        raw = heads.raw_outputs(net, x, list(LEVELS))
    dec = decode_params_from_module(net, outputs=[(k, v.shape) for k, v in raw.items()], input_size=(64, 64))
    return dec, raw


def test_yolov8_dfl_decode_matches_the_ultralytics_formulas(heads):
    net = heads.build_v8()
    x = _inputs(1, 2)
    raw = heads.raw_outputs(net, x, list(LEVELS))
    dec = decode_params_from_module(net, outputs=[(k, v.shape) for k, v in raw.items()], input_size=(64, 64))
    boxes, scores = sa.decode_yolo(raw, dec.to_dict())
    with torch.no_grad():
        ref = net(torch.from_numpy(x)).numpy()  # (N, 4+nc, A): xywh pixels + sigmoid class scores
    np.testing.assert_allclose(boxes, _xyxy(ref[:, :4].transpose(0, 2, 1)), atol=2e-4)
    np.testing.assert_allclose(scores, ref[:, 4:], atol=1e-6)
    d2 = decode_params_from_module(net, outputs=[("output0", ref.shape)], input_size=(64, 64))
    b2, s2 = sa.decode_yolo({"output0": ref}, d2.to_dict())
    np.testing.assert_allclose(b2, boxes, atol=2e-4)
    np.testing.assert_allclose(s2, scores, atol=1e-6)


def test_yolov5_anchor_decode_matches_the_yolov5_formulas(heads):
    net = heads.build_v5()
    x = _inputs(2)
    raw = heads.raw_outputs(net, x, list(LEVELS))
    dec = decode_params_from_module(net, outputs=[(k, v.shape) for k, v in raw.items()], input_size=(64, 64))
    boxes, scores = sa.decode_yolo(raw, dec.to_dict())
    with torch.no_grad():
        ref = net(torch.from_numpy(x)).numpy()  # (N, A, 5+nc), YOLOv5's export form
    np.testing.assert_allclose(boxes, _xyxy(ref[..., :4]), atol=2e-4)
    np.testing.assert_allclose(scores, (ref[..., 5:] * ref[..., 4:5]).transpose(0, 2, 1), atol=1e-6)


def test_nms_semantics_on_a_hand_made_case():
    """Suppression is IoU > thr (equal survives), score > thr, class-aware unless agnostic, best first."""
    boxes = np.array([[[0, 0, 10, 10], [0, 0, 10, 5], [0, 0, 10, 9], [20, 20, 30, 30]]], np.float32)
    scores = np.zeros((1, 2, 4), np.float32)
    scores[0, 0] = [0.9, 0.8, 0.7, 0.3]  # box 1 has IoU exactly 0.5 with box 0; box 2 has 0.9
    scores[0, 1, 2] = 0.95
    dec = DecodeParams("yolo-decoded", 2, (32, 32), ("o",))
    spec = dict(PostprocessSpec(dec, iou_threshold=0.5, score_threshold=0.3).to_dict())
    dets, count = sa.nms_contract(boxes, scores, spec)
    assert count.tolist() == [3]
    assert dets[0, :3, 4].tolist() == pytest.approx([0.95, 0.9, 0.8])
    assert dets[0, :3, 5].tolist() == [1, 0, 0] and not dets[0, 3:].any()
    spec["class_agnostic"] = True
    dets, count = sa.nms_contract(boxes, scores, spec)
    assert count.tolist() == [1]  # box 2 (best class 1) now suppresses box 0 (IoU 0.9) and box 1 (IoU 0.56)
    assert dets[0, 0].tolist() == pytest.approx([0, 0, 10, 9, 0.95, 1])


KINDS = ["yolov5", "yolov8", "yolov8-decoded", "yolov5-decoded", "centernet"]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("nms", ["onnx", "none"])
@pytest.mark.parametrize("agnostic", [False, True])
def test_end2end_graph_matches_the_numpy_reference(heads, tmp_path: Path, kind: str, nms: str, agnostic: bool):
    dec, raw = _setup(heads, kind, seed=3, n=2)
    spec = PostprocessSpec(dec, max_det=20, score_threshold=0.05, iou_threshold=0.5, class_agnostic=agnostic,
                           max_candidates=60).validate()
    ref_onnx = heads.identity_onnx(tmp_path / "raw.onnx", {k: ("N", *v.shape[1:]) for k, v in raw.items()})
    path = make_end2end_onnx(ref_onnx, spec, tmp_path / "e2e.onnx", nms=nms)
    sess = ort.InferenceSession(str(path))
    out = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, {f"in_{k}": v for k, v in raw.items()})))
    staged = DETECTIONS if kind == "centernet" or nms == "onnx" else CANDIDATES
    assert staged in out and out[staged].dtype == np.float32 and out[COUNT if staged == DETECTIONS else
                                                                       "candidate_count"].dtype == np.int32
    got, got_n = apply_postprocessor(out, spec)
    ref, ref_n = apply_postprocessor(raw, spec)
    assert got.shape == ref.shape == (2, 20, 6)
    assert got_n.tolist() == ref_n.tolist() and ref_n.min() > 0
    for i in range(2):  # padding rows are exactly zero
        assert not got[i, got_n[i]:].any()
    cmp = compare_detections((ref, ref_n), (got, got_n), iou=0.99)
    assert cmp["matched_fraction"] == 1.0 and cmp["extra_fraction"] == 0.0 and cmp["score_drift_max"] < 1e-5
    names = postprocess_node_names(path)
    assert names and all(n.startswith("ec_post/") for n in names)
    assert len(names) == len(onnx.load(str(path)).graph.node) - len(raw)  # every added node is prefixed


def test_pre_nms_cap_keeps_only_the_best_candidates(heads, tmp_path: Path):
    dec, raw = _setup(heads, "yolov8", seed=4)
    spec = PostprocessSpec(dec, max_det=10, score_threshold=0.0, max_candidates=12).validate()
    ref_onnx = heads.identity_onnx(tmp_path / "raw.onnx", {k: v.shape for k, v in raw.items()})
    sess = ort.InferenceSession(str(make_end2end_onnx(ref_onnx, spec, tmp_path / "e2e.onnx")))
    got = sess.run(None, {f"in_{k}": v for k, v in raw.items()})
    ref, ref_n = apply_postprocessor(raw, spec)
    _, scores = sa.decode_yolo(raw, dec.to_dict())
    kth = np.sort(scores.reshape(-1))[::-1][11]
    assert ref[0, : ref_n[0], 4].min() >= kth  # nothing below the 12th best pair survives
    assert got[1].tolist() == ref_n.tolist()
    np.testing.assert_allclose(got[0], ref, atol=1e-4)


def test_efficientnms_variant_structure_and_plugin_inputs(heads, tmp_path: Path):
    """ONNX Runtime cannot run EfficientNMS_TRT: check the node and that its inputs are the decoded boxes/scores."""
    dec, raw = _setup(heads, "yolov8", seed=5)
    spec = PostprocessSpec(dec, max_det=25, score_threshold=0.2, iou_threshold=0.45).validate()
    ref_onnx = heads.identity_onnx(tmp_path / "raw.onnx", {k: v.shape for k, v in raw.items()})
    m = onnx.load(str(make_end2end_onnx(ref_onnx, spec, tmp_path / "trt.onnx", nms="efficientnms")))
    plugin = [n for n in m.graph.node if n.op_type == "EfficientNMS_TRT"]
    assert len(plugin) == 1 and plugin[0].domain == "TRT"
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in plugin[0].attribute}
    assert attrs["max_output_boxes"] == 25 and attrs["box_coding"] == 0 and attrs["background_class"] == -1
    assert attrs["iou_threshold"] == pytest.approx(0.45) and attrs["score_threshold"] == pytest.approx(0.2)
    assert attrs["plugin_version"] == b"1" and attrs["class_agnostic"] == 0 and attrs["score_activation"] == 0
    assert [o.name for o in m.graph.output] == [DETECTIONS, COUNT]
    # Cut the graph at the plugin and run what feeds it: (N, A, 4) xyxy boxes and (N, A, C) scores.
    idx = list(m.graph.node).index(plugin[0])
    cut = onnx.helper.make_graph(list(m.graph.node)[:idx], "cut", list(m.graph.input),
                                 [onnx.helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, None)
                                  for n in plugin[0].input], list(m.graph.initializer))
    sess = ort.InferenceSession(onnx.helper.make_model(cut, opset_imports=list(m.opset_import)[:1]).SerializeToString())
    boxes, nac = sess.run(None, {f"in_{k}": v for k, v in raw.items()})
    rb, rs = sa.decode_yolo(raw, dec.to_dict())
    np.testing.assert_allclose(boxes, rb, atol=2e-4)
    np.testing.assert_allclose(nac, rs.transpose(0, 2, 1), atol=1e-6)


def test_graph_refusals_are_config_errors(heads, tmp_path: Path):
    dec, raw = _setup(heads, "yolov8")
    spec = PostprocessSpec(dec).validate()
    shapes = {k: v.shape for k, v in raw.items()}
    with pytest.raises(ConfigError, match="opset 11"):
        make_end2end_onnx(heads.identity_onnx(tmp_path / "o11.onnx", shapes, opset=11), spec, tmp_path / "x.onnx")
    ok = heads.identity_onnx(tmp_path / "raw.onnx", shapes)
    with pytest.raises(ConfigError, match="unknown nms mode"):
        make_end2end_onnx(ok, spec, tmp_path / "x.onnx", nms="fast")
    big = PostprocessSpec(dec, max_candidates=4000).validate()  # 84 boxes x 3 classes = 252 pairs: no cap needed
    make_end2end_onnx(ok, big, tmp_path / "x.onnx", tensorrt=True)
    wide = heads.identity_onnx(tmp_path / "wide.onnx", {"p3": (1, 67, 64, 64), "p4": (1, 67, 32, 32),
                                                         "p5": (1, 67, 16, 16)})
    wdec = DecodeParams("yolov8", 3, (512, 512), LEVELS, strides=(8, 16, 32)).validate()
    with pytest.raises(ConfigError, match="TensorRT's limit of 3840"):
        make_end2end_onnx(wide, PostprocessSpec(wdec, max_candidates=4000), tmp_path / "x.onnx", tensorrt=True)
    other = PostprocessSpec(DecodeParams("yolov8", 3, (64, 64), ("a", "b", "c"), strides=(8, 16, 32)))
    with pytest.raises(ConfigError, match=r"outputs \['a', 'b', 'c'\] are not outputs"):
        make_end2end_onnx(ok, other, tmp_path / "x.onnx")


def test_int8_keep_fp32_and_detection_level_verification(heads, tmp_path: Path):
    from edgeconv.postprocess import int8_keep_fp32, verify_detection_outputs

    dec, raw = _setup(heads, "yolov8", seed=6)
    spec = PostprocessSpec(dec, max_det=20, score_threshold=0.05).validate()
    e2e = make_end2end_onnx(heads.identity_onnx(tmp_path / "raw.onnx", {k: v.shape for k, v in raw.items()}), spec,
                            tmp_path / "e2e.onnx")
    keep = int8_keep_fp32(e2e, spec)
    assert keep[0] == "ec_post/*" and sorted(keep[1:]) == ["id_p3", "id_p4", "id_p5"]  # decode + head producers
    sess = ort.InferenceSession(str(e2e))
    out = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, {f"in_{k}": v for k, v in raw.items()})))
    ok, fails, rec = verify_detection_outputs([raw], [out], spec)  # raw reference vs in-graph contract
    assert ok and not fails and rec["matched_fraction"] == 1.0
    moved = dict(out, detections=out["detections"] + np.array([1000, 1000, 1000, 1000, 0, 0], np.float32))
    ok, fails, rec = verify_detection_outputs([out], [moved], spec)
    assert not ok and "detections matched 0.0000" in fails[0]
