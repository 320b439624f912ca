"""Decode parameters read from the model (its detection head) or given as options, never guessed.

Why from the module: anchors, strides, DFL bins and the class count are properties of the trained head; copying
them by hand into an export flag is how decoders silently drift from training.  Recognised heads: the bundled
``zoo:yolo`` (YOLOv5 anchors, ``edgeconv.zoo.yolo``) and ``zoo:centernet``; Ultralytics-style ``Detect`` modules —
YOLOv5 (``anchors`` (nl, na, 2) in grid units, ``stride``) and YOLOv8/YOLO11 (``reg_max``, ``stride``).  Which
output form the graph has (per-level maps or one decoded tensor) is read from the reference's output shapes.
Anything else is a ConfigError naming what is missing, with the options that would supply it.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from edgeconv.core.errors import ConfigError
from edgeconv.postprocess.spec import DecodeParams, PostprocessSpec

CONTRACT_OPTIONS = ("max_det", "score_threshold", "iou_threshold", "class_agnostic", "max_candidates")
DECODE_OPTIONS = ("head", "num_classes", "strides", "anchors", "reg_max", "outputs", "input_size", "objectness",
                  "channels_first", "heatmap_sigmoid", "min_sizes", "variances", "background", "conf_softmax")
_HINT = ("pass postprocess options: head=yolov5|yolov8|yolo-decoded|centernet|ssd, num_classes=N, strides=8,16,32, "
         "anchors=[[[w,h],...],...] (yolov5), reg_max=16 (yolov8), min_sizes=10/16/24;32/48;64/96;128/192/256 (ssd: "
         "RetinaFace/UltraFace priors, with strides=8,16,32,64)")

Outputs = Sequence[Any]  # TensorSpec-like (.name, .shape) or (name, shape) pairs


def _fail(msg: str, hint: str = _HINT) -> ConfigError:
    return ConfigError(f"post-processing: {msg}", hint=hint, stage="postprocess")


def _named_shapes(outputs: Outputs | None) -> list[tuple[str, tuple[int, ...]]]:
    res = []
    for o in outputs or []:
        if hasattr(o, "name"):
            res.append((str(o.name), tuple(int(d) for d in o.shape)))
        else:
            name, shape = o
            res.append((str(name), tuple(int(d) for d in shape)))
    return res


def _parse_option(key: str, value: Any) -> Any:
    """CLI-friendly forms: ``"8,16,32"``, JSON text, ``"256x256"``, ``"true"``."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    if key == "min_sizes" and not text.startswith("["):  # 10/16/24;32/48: levels by ';', sizes by '/' or ','
        try:
            return tuple(tuple(float(v) for v in lvl.replace(",", "/").split("/") if v.strip())
                         for lvl in text.split(";") if lvl.strip())
        except ValueError as e:
            raise _fail(f"option min_sizes={value!r} is not sizes per level", "min_sizes=10/16/24;32/48;64/96") from e
    if key == "variances" and not text.startswith("["):
        try:
            return tuple(float(v) for v in text.split(",") if v.strip())
        except ValueError as e:
            raise _fail(f"option variances={value!r} is not two numbers", "variances=0.1,0.2") from e
    if key in ("objectness", "channels_first", "heatmap_sigmoid", "class_agnostic", "background", "conf_softmax"):
        if text.lower() not in ("true", "false", "1", "0", "yes", "no"):
            raise _fail(f"option {key}={value!r} must be true or false", f"{key}=true")
        return text.lower() in ("true", "1", "yes")
    if key in ("head",):
        return text
    if key == "input_size" and "x" in text:
        return tuple(int(v) for v in text.lower().split("x"))
    if text.startswith("["):
        try:
            return json.loads(text)
        except ValueError as e:
            raise _fail(f"option {key}: {value!r} is not valid JSON", f"e.g. {key}=[[[10,13],[16,30]]]") from e
    if key in ("strides", "outputs", "input_size"):
        parts = [p.strip() for p in text.split(",") if p.strip()]
        return tuple(parts) if key == "outputs" else tuple(int(p) for p in parts)
    try:
        return int(text) if key in ("num_classes", "reg_max", "max_det", "max_candidates") else float(text)
    except ValueError as e:
        raise _fail(f"option {key}={value!r} is not a number", f"{key}=<number>") from e


def _split(options: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    unknown = sorted(set(options) - set(CONTRACT_OPTIONS) - set(DECODE_OPTIONS))
    if unknown:
        raise _fail(f"unknown option(s) {unknown}", f"valid: {', '.join(CONTRACT_OPTIONS + DECODE_OPTIONS)}")
    parsed = {k: _parse_option(k, v) for k, v in options.items()}
    return ({k: v for k, v in parsed.items() if k in DECODE_OPTIONS},
            {k: v for k, v in parsed.items() if k in CONTRACT_OPTIONS})


def _find_head(module: Any) -> Any | None:
    """The Ultralytics-style detection head: a submodule with ``stride`` and ``nc`` plus ``anchors`` or ``reg_max``."""
    mods = list(module.modules()) if hasattr(module, "modules") else [module]
    for m in reversed(mods):
        if hasattr(m, "stride") and hasattr(m, "nc") and (hasattr(m, "reg_max") or hasattr(m, "anchors")):
            return m
    return None


def _floats(t: Any) -> list[float]:
    return [float(v) for v in (t.detach().reshape(-1).tolist() if hasattr(t, "detach") else list(t))]


def _from_ultralytics(head: Any) -> dict[str, Any]:
    strides = _floats(head.stride)
    if not strides or any(s <= 0 for s in strides):
        raise _fail(f"{type(head).__name__}.stride is not set ({strides}); the head was never built on an input",
                    "build the model as its training code does (strides are computed on a dummy input) or pass "
                    "strides=8,16,32")
    if any(s != int(s) for s in strides):
        raise _fail(f"{type(head).__name__}.stride {strides} are not whole pixels", "pass strides=8,16,32")
    d: dict[str, Any] = {"num_classes": int(head.nc), "strides": tuple(int(s) for s in strides)}
    if hasattr(head, "reg_max"):
        d.update(head="yolov8", reg_max=int(head.reg_max))
    else:
        anc = head.anchors.detach().float()  # (nl, na, 2) in grid units (YOLOv5 divides by stride at build time)
        px = anc * head.stride.detach().float().view(-1, 1, 1)
        d.update(head="yolov5", anchors=tuple(tuple((float(w), float(h)) for w, h in lvl) for lvl in px.tolist()))
    return d


def from_onnx_metadata(onnx_path: Any) -> dict[str, Any] | None:
    """Decode parameters an Ultralytics ONNX export writes into its ``metadata_props`` (``author: Ultralytics``,
    ``task: detect``, ``names``, ``stride`` = the largest stride), so ``--model yolo11n.onnx --postprocess end2end``
    needs no options; None for any other file. Which output form (decoded or per-level maps) is still read from the
    graph's outputs."""
    import ast

    if onnx_path is None:
        return None
    try:
        import onnx

        meta = {p.key: p.value for p in onnx.load(str(onnx_path), load_external_data=False).metadata_props}
    except Exception:  # noqa: BLE001 - an unreadable file has no metadata to offer; the caller says what is missing
        return None
    if meta.get("author") != "Ultralytics" or meta.get("task") != "detect" or meta.get("end2end") == "True":
        return None
    try:
        names = ast.literal_eval(meta.get("names", ""))
        top = int(meta["stride"])
    except (ValueError, SyntaxError, KeyError):
        return None
    if not isinstance(names, dict) or top not in (32, 64):
        return None
    strides = tuple(top >> k for k in range(top.bit_length() - 4, -1, -1))  # 32: 8, 16, 32; 64: 8 .. 64
    return {"head": "yolov8", "num_classes": len(names), "strides": strides, "reg_max": 16}


def _from_bundled(name: str, module: Any) -> dict[str, Any]:
    if name == "yolo":
        src = sys.modules.get(type(module).__module__) if module is not None else None
        from edgeconv.zoo import yolo as zy

        anchors = getattr(src, "ANCHORS", zy.ANCHORS)
        nc = int(getattr(module, "num_classes", zy.NUM_CLASSES))
        strides = tuple(int(s) for s in getattr(module, "strides", zy.STRIDES))
        return {"head": "yolov5", "num_classes": nc, "strides": strides, "anchors": anchors,
                "outputs": tuple(zy.OUTPUT_NAMES)}
    if name == "centernet":
        from edgeconv.zoo import centernet as zc

        nc = int(module.hm[-1].out_channels) if module is not None and hasattr(module, "hm") else zc.NUM_CLASSES
        return {"head": "centernet", "num_classes": nc, "strides": (zc.STRIDE,), "outputs": tuple(zc.OUTPUT_NAMES),
                "heatmap_sigmoid": True}
    raise _fail(f"bundled model '{name}' is not a detector", "post-processing applies to detection models")


def _output_form(d: dict[str, Any], outs: list[tuple[str, tuple[int, ...]]]) -> dict[str, Any]:
    """Fill ``outputs``/``output_shapes`` (and the decoded form) from the reference's outputs."""
    if not outs:
        return d
    nc = d.get("num_classes")
    if d.get("outputs"):
        by = dict(outs)
        missing = [n for n in d["outputs"] if n not in by]
        if missing:
            raise _fail(f"outputs {missing} are not outputs of the model (it has {list(by)})",
                        "pass outputs=NAME,NAME,... in level order")
        d["output_shapes"] = tuple(by[n] for n in d["outputs"])
        return d
    if d.get("head") == "ssd" and nc:  # loc: the (N, A, 4) output; conf: the (N, A, [1+]nc) one beside it
        cols = int(nc) + int(d.get("background", True))
        loc = [(n, s) for n, s in outs if len(s) == 3 and s[2] == 4]
        conf = [(n, s) for n, s in outs if len(s) == 3 and s[2] == cols and (not loc or s[1] == loc[0][1][1])]
        if len(loc) == 1 and conf and (cols != 4 or len(conf) == 2):
            cf = next(c for c in conf if c[0] != loc[0][0])
            d.update(outputs=(loc[0][0], cf[0]), output_shapes=(loc[0][1], cf[1]))
            return d
        raise _fail(f"cannot tell the ssd loc (N, A, 4) and conf (N, A, {cols}) outputs among "
                    f"{[(n, list(s)) for n, s in outs]}", "pass outputs=LOC,CONF")
    maps = [(n, s) for n, s in outs if len(s) == 4]
    if d.get("head") in ("yolov5", "yolov8") and len(maps) == len(d.get("strides", ())) and maps:
        maps.sort(key=lambda ns: -ns[1][-1] * ns[1][-2])  # finest level first
        d.update(outputs=tuple(n for n, _ in maps), output_shapes=tuple(s for _, s in maps))
        return d
    flat = [(n, s) for n, s in outs if len(s) == 3]
    if d.get("head") in ("yolov5", "yolov8", "yolo-decoded") and flat and nc:
        name, shp = flat[0]
        obj = d.get("head") == "yolov5" or bool(d.get("objectness"))
        want = 4 + int(obj) + nc
        if shp[1] == want and shp[2] != want:
            cf = True
        elif shp[2] == want:
            cf = False
        else:
            raise _fail(f"output '{name}' {shp} fits neither (N, {want}, A) nor (N, A, {want}) for {nc} classes",
                        "pass head=, num_classes= and outputs= explicitly; a head with extra per-anchor channels "
                        "(landmarks, keypoints) has no end2end decode: convert it without --postprocess")
        d.update(head="yolo-decoded", outputs=(name,), output_shapes=(shp,), objectness=obj, channels_first=cf)
        d.pop("anchors", None)
        return d
    raise _fail(f"cannot match the {d.get('head')} head to the model outputs {[n for n, _ in outs]} "
                f"({len(d.get('strides', ()))} levels expected)", "pass outputs=NAME,NAME,... in level order")


def _is_decoded(outs: list[tuple[str, tuple[int, ...]]], d: dict[str, Any]) -> bool:
    """True when the graph gives one 3-D decoded tensor (anchors/strides are then already applied)."""
    return not d.get("outputs") and any(len(s) == 3 for _, s in outs) and not any(len(s) == 4 for _, s in outs)


def _finish(d: dict[str, Any], outs: list[tuple[str, tuple[int, ...]]],
            input_size: Sequence[int] | None) -> DecodeParams:
    if input_size is not None:
        d.setdefault("input_size", tuple(int(v) for v in input_size))
    need = ["head", "num_classes", "input_size"]
    if d.get("head") in ("yolov8", "centernet", "ssd") or (d.get("head") == "yolov5" and not _is_decoded(outs, d)):
        need.append("strides")
    if d.get("head") == "ssd":
        need.append("min_sizes")
    if d.get("head") == "yolov5" and not _is_decoded(outs, d):
        need.append("anchors")
    missing = [k for k in need if not d.get(k)]
    if missing:
        raise _fail(f"decode parameters missing: {', '.join(missing)}")
    d = _output_form(d, outs)
    if not d.get("outputs"):
        raise _fail("decode parameters missing: outputs", "pass outputs=NAME,NAME,... (the raw head outputs)")
    if "strides" in d:
        d["strides"] = tuple(int(s) for s in d["strides"])
    if "anchors" in d:
        d["anchors"] = tuple(tuple((float(w), float(h)) for w, h in lvl) for lvl in d["anchors"])
    if "min_sizes" in d:
        d["min_sizes"] = tuple(tuple(float(v) for v in lvl) for lvl in d["min_sizes"])
    if "variances" in d:
        d["variances"] = tuple(float(v) for v in d["variances"])
    try:
        return DecodeParams(**d).validate()
    except TypeError as e:
        raise _fail(f"bad decode parameters: {e}") from e


def decode_params_from_module(module: Any, bundled_info: Mapping[str, Any] | None = None, *,
                              outputs: Outputs | None = None, input_size: Sequence[int] | None = None,
                              onnx_path: Any = None, **options: Any) -> DecodeParams:
    """Decode parameters of ``module``'s detection head; ``options`` fill or override (CLI strings accepted).

    ``bundled_info``: ``Prepared.info`` (``{"bundled": "yolo", ...}``) for the zoo models.  ``outputs``: the reference
    ONNX outputs (``TensorSpec`` or ``(name, shape)``), which decide the output form and record shapes for C++.
    """
    dec_opts, contract = _split(options)
    if contract:
        raise _fail(f"{sorted(contract)} are contract options, not decode parameters", "pass them to spec_for()")
    d: dict[str, Any] = {}
    name = (bundled_info or {}).get("bundled")
    if name:
        d = _from_bundled(str(name), module)
    elif module is not None:
        head = _find_head(module)
        if head is not None:
            d = _from_ultralytics(head)
        elif not dec_opts.get("head"):
            raise _fail(f"unknown detection head: no Detect-style submodule in {type(module).__name__} (looked for "
                        "`stride` + `nc` + `anchors` (YOLOv5) or `reg_max` (YOLOv8/YOLO11))")
    elif not dec_opts.get("head"):
        d = from_onnx_metadata(onnx_path) or {}
        if not d:
            raise _fail("no PyTorch module and no head= option: the decode cannot be derived from an ONNX file "
                        "alone (Ultralytics' own ONNX exports are read from their metadata)")
    d.update(dec_opts)
    size = _parse_option("input_size", input_size) if input_size is not None else None
    return _finish(d, _named_shapes(outputs), size)


def spec_for(prepared: Any, **options: Any) -> PostprocessSpec:
    """The ``PostprocessSpec`` of a ``edgeconv.pipeline.Prepared`` model: decode from its module (or the options),
    contract options (``max_det``, ``score_threshold``, ``iou_threshold``, ``class_agnostic``, ``max_candidates``)
    from ``options``; everything validated (out-of-range thresholds are a ConfigError)."""
    dec_opts, contract = _split(options)
    ref = prepared.reference
    if (prepared.info or {}).get("task") not in (None, "detection"):
        raise _fail(f"model task is {prepared.info.get('task')!r}; post-processing is for detectors",
                    "drop --postprocess for this model")
    shape = ref.inputs[0].shape
    size = tuple(int(v) for v in shape[2:4]) if len(shape) == 4 and min(shape[2:4]) > 0 else None
    src = getattr(ref, "source", None)
    dec = decode_params_from_module(ref.module, prepared.info or None, outputs=ref.outputs, input_size=size,
                                    onnx_path=getattr(src, "onnx_path", None), **dec_opts)
    return PostprocessSpec(dec).with_options(**contract)
