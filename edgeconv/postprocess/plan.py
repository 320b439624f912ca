"""Where each backend's post-processing runs, and the end2end reference the pipeline converts instead of the raw one.

Why per backend: ``NonMaxSuppression`` exists in ONNX Runtime, OpenVINO and TensorRT (INMSLayer); ``TopK`` also in
TFLite (litert-torch from the wrapped module); ncnn, MNN, RKNN and ExecuTorch lack them (or lower them badly), so
their artifacts keep the raw graph and ship the post-processor files.  Every artifact carries those files anyway,
so one application code path serves all (``postprocess.apply`` passes a finished contract through).

A target can declare ``capabilities = {"nms_in_graph"}`` / ``{"topk_in_graph"}`` to override the table.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeconv.core.console import log
from edgeconv.core.errors import ConfigError
from edgeconv.core.hashing import sha256_file
from edgeconv.postprocess.graph import KEEP_FP32_PATTERN, TENSORRT_MAX_TOPK, make_end2end_onnx, postprocess_node_names
from edgeconv.postprocess.spec import PostprocessSpec, as_spec

MODES = ("auto", "graph", "decode", "beside")


@dataclass(frozen=True)
class Placement:
    """How one backend gets the contract: ``stage`` its graph ends at, the ONNX ``nms`` variant, the route."""

    backend: str
    stage: str  # "detections" | "candidates" | "raw"
    nms: str | None  # make_end2end_onnx mode, None = raw graph
    torch_wrapper: bool = False  # the backend converts from the module: give it end2end_module(...)
    tensorrt: bool = False
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


_NMS_IN_GRAPH = {"onnxruntime", "openvino", "tensorrt"}
_TOPK_IN_GRAPH = {"tflite"}
_TORCH_ROUTE = {"tflite"}


def plan_postprocess(backend: str, spec: PostprocessSpec | Any, *, mode: str = "auto",
                     capabilities: frozenset[str] | set[str] = frozenset()) -> Placement:
    """Choose in-graph NMS, in-graph decode (NMS beside) or raw + beside for ``backend``.

    ``mode``: ``auto`` (best the backend can do), ``graph`` (contract in the graph or a ConfigError), ``decode``
    (decode + top-K in the graph, NMS beside), ``beside`` (raw graph, everything in the post-processor files).
    """
    spec = as_spec(spec)
    if mode not in MODES:
        raise ConfigError(f"post-processing: unknown placement '{mode}'", hint=f"choose from {', '.join(MODES)}",
                          stage="postprocess", target=backend)
    nms_ok = backend in _NMS_IN_GRAPH or "nms_in_graph" in capabilities
    topk_ok = nms_ok or backend in _TOPK_IN_GRAPH or "topk_in_graph" in capabilities
    torch = backend in _TORCH_ROUTE
    centernet = spec.decode.head == "centernet"
    trt = backend == "tensorrt"
    if mode == "beside":
        return Placement(backend, "raw", None, note="raw graph; post-processor files beside it")
    if mode == "graph" and not (nms_ok or (centernet and topk_ok)):
        raise ConfigError(f"post-processing: {backend} has no {'TopK' if centernet else 'NonMaxSuppression'} op, "
                          "so the contract cannot be computed in its graph",
                          hint="use placement 'auto' or 'beside' (the artifact ships postprocess.py/.hpp instead)",
                          stage="postprocess", target=backend)
    if mode == "decode" and not topk_ok:
        raise ConfigError(f"post-processing: {backend} has no TopK op for an in-graph decode",
                          hint="use placement 'beside' (post-processor files)", stage="postprocess", target=backend)
    if centernet and topk_ok:
        return Placement(backend, "detections", "none", torch_wrapper=torch, tensorrt=trt,
                         note="CenterNet peaks + TopK in the graph (no NMS needed)")
    if nms_ok and mode in ("auto", "graph"):
        return Placement(backend, "detections", "onnx", tensorrt=trt,
                         note="NonMaxSuppression in the graph" + (" (TensorRT INMSLayer)" if trt else ""))
    if topk_ok:
        return Placement(backend, "candidates", "none", torch_wrapper=torch,
                         note="decode + top-M in the graph; NMS beside (postprocess.py/.hpp)")
    return Placement(backend, "raw", None, note=f"{backend} lacks TopK/NonMaxSuppression: post-processor files beside")


def effective_spec(spec: PostprocessSpec | Any, placement: Placement) -> PostprocessSpec:
    """The spec the artifact really implements: on TensorRT a pre-NMS cap above its TopK limit (3840) cannot be
    built, so the cap is lifted (INMSLayer/EfficientNMS bound their candidates themselves); otherwise unchanged.
    Write the post-processor files and the manifest from this spec."""
    spec = as_spec(spec)
    pairs = spec.decode.total_boxes
    if not placement.tensorrt or spec.decode.head == "centernet" or pairs is None:
        return spec
    pairs *= 1 if spec.class_agnostic else spec.decode.num_classes
    if TENSORRT_MAX_TOPK < spec.max_candidates < pairs:
        log.warning("tensorrt: pre-NMS cap max_candidates=%d exceeds TensorRT's TopK limit (%d); lifted to all %d "
                    "pairs (TensorRT's NMS bounds its candidates itself)", spec.max_candidates, TENSORRT_MAX_TOPK,
                    pairs)
        return spec.with_options(max_candidates=pairs)
    return spec


def end2end_reference(prepared: Any, spec: PostprocessSpec | Any, placement: Placement, work_dir: str | Path) -> Any:
    """A copy of ``prepared`` whose reference is the end2end ONNX for ``placement`` (or ``prepared`` itself, raw).

    The new reference keeps the source (hashes, export record) and swaps the ONNX (and, for torch-route backends,
    the module for ``end2end_module``), so ``pipeline.convert_reference`` converts and verifies it unchanged.
    """
    if placement.nms is None:
        return prepared
    from edgeconv.export.reference import graph_specs

    spec = effective_spec(spec, placement)
    ref = prepared.reference
    path = make_end2end_onnx(ref.onnx_path, spec, Path(work_dir) / f"end2end-{placement.nms}.onnx",
                             nms=placement.nms, tensorrt=placement.tensorrt)
    g_in, g_out = graph_specs(path)
    by_name = {s.name: s for s in ref.inputs}
    source = ref.source
    if placement.torch_wrapper and source.module is not None:
        from edgeconv.postprocess.torch_head import end2end_module

        source = dataclasses.replace(source, module=end2end_module(source.module, spec,
                                                                   output_names=[o.name for o in ref.outputs]))
    record = dict(ref.record)
    record["postprocess"] = {"placement": placement.to_dict(), "spec": spec.to_dict(),
                             "raw_reference_sha256": ref.sha256, "nodes": len(postprocess_node_names(path))}
    new_ref = dataclasses.replace(ref, onnx_path=path, inputs=[by_name.get(s.name, s) for s in g_in],
                                  outputs=g_out, source=source, record=record, sha256=sha256_file(path))
    return dataclasses.replace(prepared, reference=new_ref)


def int8_keep_fp32(onnx_path: str | Path, spec: PostprocessSpec | Any | None = None) -> tuple[str, ...]:
    """``keep_fp32`` patterns for INT8 routes of an end2end graph: the decode/NMS glob (``ec_post/*``) and, given
    ``spec``, the nodes producing the raw head outputs (what ``keep_outputs_fp32`` keeps on a raw graph: once the
    decode is appended they are no longer graph outputs, so that default stops finding them).

    A glob rather than every node name because backends fold some decode nodes (Shape, constants) away, and an
    exact name that no longer exists is (rightly) a config error there.
    """
    names = postprocess_node_names(onnx_path)
    out = [KEEP_FP32_PATTERN] if names else []
    if spec is not None:
        from edgeconv.core.lazy import require

        raw = set(as_spec(spec).decode.outputs)
        graph = require("onnx", "onnx").load(str(onnx_path), load_external_data=False).graph
        out += [n.name for n in graph.node if not n.name.startswith(KEEP_FP32_PATTERN[:-1])
                and any(o in raw for o in n.output)]
    return tuple(out)


__all__ = ["KEEP_FP32_PATTERN", "MODES", "Placement", "effective_spec", "end2end_reference", "int8_keep_fp32",
           "plan_postprocess"]
