"""OpenCV DNN: the reference ONNX itself, loaded by ``cv2.dnn.readNetFromONNX`` (or an exact OpenCV-friendly variant).

"Conversion" is: load the reference with the profile's engine/backend/target and run it once on a random input
next to the reference.  When OpenCV rejects operators, the ones ONNX defines as functions are expanded into their
primitive definition (``rewrites.py``), the rewrite is recorded, and the variant is loaded instead; an operator with
no such definition ends as a ConversionError naming it.  Output names are matched to the reference by name and
checked by shape, because OpenCV's importer is known to mis-read some layouts and slices (the pipeline then
verifies every output's values).
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

from edgeconv.core.compare import tensor_drift
from edgeconv.core.console import log, status
from edgeconv.core.errors import ConfigError, ConversionError
from edgeconv.core.lazy import require
from edgeconv.targets.base import ConversionResult, ConvertContext

MODEL_FILE = "model.onnx"
_LAYER_TYPE = re.compile(r'of type "([^"]+)"')
_UNSUPPORTED = re.compile(r"Unsupported operations:\s*((?:\s*[A-Za-z0-9_.]+)+)")


def describe_cv_error(err: Exception) -> tuple[str, list[str]]:
    """One line for an OpenCV load/forward error and the operator types it names."""
    text = " ".join(str(err).split())
    ops = sorted(set(_LAYER_TYPE.findall(text)) | {o for m in _UNSUPPORTED.finditer(text) for o in m.group(1).split()})
    short = text.split(" error: ", 1)[-1][:240]
    return short, ops


def _onnx_op_types(path: Path) -> set[str]:
    import onnx

    return {n.op_type for n in onnx.load(str(path), load_external_data=False).graph.node}


def try_load(path: Path, ref: Any, settings: dict[str, Any]) -> tuple[dict[str, Any] | None, Exception | None]:
    """Load ``path`` in OpenCV with ``settings`` and run it on one random input; (probe report, None) or
    (None, the OpenCV error)."""
    from edgeconv.targets.base import OrtRunner
    from edgeconv.targets.opencv.runner import OpenCvRunner

    cv2 = require("cv2", "opencv")
    feeds = ref.random_feeds(1, seed=123)[0]
    try:
        with OpenCvRunner(path, inputs=[s.name for s in ref.inputs], outputs=[s.name for s in ref.outputs],
                          threads=1, **settings) as r:
            got = r.infer(feeds)
            layers = r.layer_types()
    except cv2.error as e:
        return None, e
    with OrtRunner(ref.onnx_path) as o:
        want = o.infer(feeds)
    report: dict[str, Any] = {"layers": layers, "outputs": {}}
    for spec in ref.outputs:
        a, b = want[spec.name], got[spec.name]
        if a.shape != b.shape:
            raise ConversionError(f"OpenCV output '{spec.name}' has shape {b.shape}, the reference {a.shape}",
                                  hint="OpenCV's importer mis-read a layout or a slice; try engine=classic|new")
        d = tensor_drift(a.ravel(), b.ravel())
        report["outputs"][spec.name] = {"probe_max_abs": d["max_abs"], "probe_cosine": d["cosine"]}
    return report, None


def settings_for(ctx: ConvertContext) -> dict[str, Any]:
    """Engine, backend and target from the profile; fp16 = OpenCV's DNN_TARGET_CPU_FP16 where the build has it."""
    cv2 = require("cv2", "opencv")
    engine = str(ctx.option("engine", "auto"))
    backend = str(ctx.option("backend", "opencv"))
    if backend == "openvino":
        if not cv2.dnn.getAvailableTargets(cv2.dnn.DNN_BACKEND_INFERENCE_ENGINE):
            raise ConfigError("this OpenCV build has no OpenVINO (Inference Engine) backend",
                              hint="use backend = \"opencv\", or an OpenCV built with OpenVINO")
        if engine == "new":
            raise ConfigError("OpenCV's new DNN engine runs on its own CPU backend only", hint="engine = \"classic\"")
        engine = "classic"
    target = "cpu"
    if ctx.precision == "fp16":
        be = cv2.dnn.DNN_BACKEND_OPENCV if backend == "opencv" else cv2.dnn.DNN_BACKEND_INFERENCE_ENGINE
        have = list(cv2.dnn.getAvailableTargets(be))
        if cv2.dnn.DNN_TARGET_CPU_FP16 not in have:
            raise ConversionError(f"OpenCV {cv2.__version__} offers no fp16 CPU target here (DNN_TARGET_CPU_FP16 is "
                                  f"not among the available targets {have})",
                                  hint="fp16 is for OpenCV builds on ARM CPUs with fp16 arithmetic; use fp32")
        target = "cpu_fp16"
        engine = "classic" if engine == "auto" else engine
    elif ctx.precision != "fp32":
        raise ConfigError(f"opencv has no '{ctx.precision}' route", hint="use fp32 (or fp16 where OpenCV offers it)")
    from edgeconv.targets.opencv.runner import engine_flag

    engine_flag(cv2, engine)  # an engine this OpenCV lacks (classic on 5.1): the user's error, before converting
    return {"engine": engine, "backend": backend, "target": target}


def convert(ctx: ConvertContext) -> ConversionResult:
    import onnx

    ref = ctx.reference
    cv2 = require("cv2", "opencv")
    settings = settings_for(ctx)
    out = ctx.out_dir / MODEL_FILE
    shutil.copyfile(ref.onnx_path, out)
    meta: dict[str, Any] = {"format": "onnx", "converter": f"cv2.dnn.readNetFromONNX (OpenCV {cv2.__version__})",
                            "runtime": settings, "rewrites": []}
    with status(f"OpenCV DNN: loading the reference ({settings['engine']} engine)"):
        report, err = try_load(out, ref, settings)
    if err is not None:
        from edgeconv.targets.opencv.rewrites import expand_functions

        first, ops = describe_cv_error(err)
        # the new engine logs the operators instead of raising; the classic one names them (OpenCV < 5.1 only)
        if not ops and settings["engine"] != "classic" and hasattr(cv2.dnn, "ENGINE_CLASSIC"):
            _, diag = try_load(out, ref, {**settings, "engine": "classic"})
            ops = describe_cv_error(diag)[1] if diag is not None else []
        present = _onnx_op_types(out)
        missing = {o for o in ops if o in present} or present
        log.warning("OpenCV rejects the reference (%s); trying an OpenCV-friendly variant", first)
        model, done = expand_functions(onnx.load(str(out)), missing)
        if not done:
            raise ConversionError(f"OpenCV DNN cannot load the model: {first}"
                                  + (f" (unsupported operator(s): {', '.join(ops)})" if ops else ""),
                                  hint="OpenCV lacks these operators: change the model, or pick another target")
        onnx.save(model, str(out))
        meta["rewrites"] = done
        for r in done:
            log.info("opencv rewrite: %s %s → %s", r["rewrite"], r["op"], ", ".join(r["into"]))
        report, err = try_load(out, ref, settings)
        if err is not None:
            msg, ops2 = describe_cv_error(err)
            raise ConversionError(f"OpenCV DNN cannot load the model even after {len(done)} rewrite(s): {msg}"
                                  + (f" (unsupported operator(s): {', '.join(ops2)})" if ops2 else ""),
                                  hint="OpenCV lacks these operators: change the model, or pick another target")
    assert report is not None
    meta["probe"] = report["outputs"]
    meta["layers"] = report["layers"]
    meta["io"] = {"inputs": [s.name for s in ref.inputs], "outputs": [s.name for s in ref.outputs]}
    meta["unchanged_reference"] = not meta["rewrites"]
    return ConversionResult([MODEL_FILE], {"model": MODEL_FILE}, meta)

