"""Detectors end to end: one detections contract, in the graph where the backend has the ops, beside it otherwise.

Contract (``spec.py``): ``detections (N, K, 6)`` float32 ``x1, y1, x2, y2, score, class`` in input pixels, padded
with zero rows, and ``count (N,)`` int32.  Entry points:

* ``spec_for(prepared, **options)`` / ``decode_params_from_module(module, bundled_info)``: the decode from the model.
* ``make_end2end_onnx(reference_onnx, spec, out, nms="onnx"|"none"|"efficientnms")``: decode (+ NMS) in the ONNX.
* ``end2end_module(module, spec)``: the same decode in torch for torch-route backends.
* ``write_postprocessor(out_dir, spec, stage=)`` / ``apply_postprocessor(raw, spec)``: the files beside the graph.
* ``plan_postprocess(backend, spec)`` + ``end2end_reference(prepared, spec, placement, work)``: per-backend wiring.
* ``compare_detections(ref, got)`` / ``contract_map(dets, labels, metas)``: verification on the contract.
* ``postprocess_node_names(onnx)``: the decode/NMS nodes to keep float on INT8 routes.

Importing this package is cheap (numpy only); onnx and torch are imported inside the functions that need them.
"""

from edgeconv.postprocess.beside import (
    apply_postprocessor,
    harness_postprocess,
    load_postprocessor,
    postprocess_record,
    read_postprocessor,
    write_postprocessor,
)
from edgeconv.postprocess.derive import decode_params_from_module, spec_for
from edgeconv.postprocess.graph import KEEP_FP32_PATTERN, make_end2end_onnx, postprocess_node_names
from edgeconv.postprocess.plan import Placement, effective_spec, end2end_reference, int8_keep_fp32, plan_postprocess
from edgeconv.postprocess.spec import (
    CANDIDATE_COUNT,
    CANDIDATES,
    COUNT,
    DETECTIONS,
    DecodeParams,
    PostprocessSpec,
)
from edgeconv.postprocess.torch_head import end2end_module
from edgeconv.postprocess.verify import (
    compare_detections,
    contract_detections,
    contract_map,
    to_detections,
    verify_detection_outputs,
)

__all__ = [
    "CANDIDATES", "CANDIDATE_COUNT", "COUNT", "DETECTIONS", "KEEP_FP32_PATTERN", "DecodeParams", "Placement",
    "PostprocessSpec", "apply_postprocessor", "compare_detections", "contract_detections", "contract_map",
    "decode_params_from_module", "effective_spec", "end2end_module", "end2end_reference", "harness_postprocess",
    "int8_keep_fp32", "load_postprocessor", "make_end2end_onnx", "plan_postprocess", "postprocess_node_names",
    "postprocess_record", "read_postprocessor", "spec_for", "to_detections", "verify_detection_outputs",
    "write_postprocessor",
]
