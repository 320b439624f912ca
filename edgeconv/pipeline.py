"""The conversion pipeline: source → reference ONNX → target artifact, verified before it is reported converted.

Data flows one way; each stage takes an artifact and returns one.  ``prepare`` builds the reference once so a
matrix of targets (``edgeconv demo``, ``edgeconv run``) shares it; ``convert_reference`` makes one artifact.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgeconv import __version__
from edgeconv.calibration.dataset import CalibrationSet
from edgeconv.calibration.preprocess import Preprocess
from edgeconv.core import cache
from edgeconv.core.artifact import Artifact, atomic_dir, file_table, write_manifest
from edgeconv.core.compare import compare_outputs, within
from edgeconv.core.console import log, status
from edgeconv.core.errors import ConfigError, ConversionError, EdgeconvError, MissingDependencyError, VerificationError
from edgeconv.core.hashing import sha256_json
from edgeconv.core.tensors import TensorSpec, parse_input_spec
from edgeconv.export.onnx_export import EXPORTERS, DynamicSpec
from edgeconv.export.reference import REFERENCE_FILE, ReferenceModel, prepare_reference
from edgeconv.intake.loader import load_source, parse_model_args
from edgeconv.profiles import Profile, load_profile
from edgeconv.targets.base import ConvertContext
from edgeconv.targets.registry import get_target

ZOO_PREFIX = "zoo:"


@dataclass
class Prepared:
    """A reference model plus what the bundled zoo (or the user) says about its data."""

    reference: ReferenceModel
    preprocess: Preprocess | None = None
    calib_dir: Path | None = None
    info: dict[str, Any] = field(default_factory=dict)


def prepare(model: str, *, weights: str | None = None, model_args: dict[str, Any] | list[str] | None = None,
            inputs: list[str | TensorSpec] | None = None, output_names: list[str] | None = None, opset: int = 17,
            exporters: tuple[str, ...] = EXPORTERS, dynamic: DynamicSpec | None = None, simplify: bool = True,
            trust_checkpoint: bool = False, use_cache: bool = True, preprocess: Preprocess | None = None) -> Prepared:
    """Load the model and produce its verified, simplified reference ONNX (``zoo:NAME`` picks a bundled model)."""
    if isinstance(model_args, (list, tuple)):
        model_args = parse_model_args(list(model_args))
    info: dict[str, Any] = {}
    calib_dir = None
    if model.startswith(ZOO_PREFIX):
        from edgeconv import zoo

        name = model[len(ZOO_PREFIX):]
        if name not in zoo.BUNDLED:
            raise ConfigError(f"no bundled model '{name}'", hint=f"bundled: {', '.join(zoo.BUNDLED)}")
        b = zoo.BUNDLED[name]
        model, weights = b.factory, weights or str(b.weights)
        inputs = inputs or [TensorSpec(b.input_name, tuple(b.input_shape), "float32", "NCHW")]
        output_names = output_names or list(b.output_names)
        preprocess = preprocess or Preprocess.from_dict(b.preprocess)
        calib_dir = Path(b.calibration_dir)
        info = {"bundled": name, "task": b.task, "postprocess": b.postprocess}
    specs = [parse_input_spec(s) if isinstance(s, str) else s for s in inputs or []]
    with status("loading model"):
        source = load_source(model, weights=weights, model_args=model_args or {}, trust_checkpoint=trust_checkpoint)
    ref = prepare_reference(source, specs or None, output_names=output_names, opset=opset, exporters=exporters,
                            dynamic=dynamic, do_simplify=simplify, use_cache=use_cache)
    log.info("reference ONNX ready (%s, %s; %d → %d nodes)", ref.record["export"]["route"],
             ref.record["simplify"].get("simplifier") or "not simplified", ref.record["simplify"]["nodes_before"],
             ref.record["simplify"]["nodes_after"])
    return Prepared(ref, preprocess, calib_dir, info)


def default_preprocess(ref: ReferenceModel) -> Preprocess:
    """The contract assumed when none is given: RGB, stretch to the input size, /255, NCHW float32."""
    spec = ref.inputs[0]
    if len(spec.static_shape) != 4:
        raise ConfigError("calibration from images needs a 4-D image input; give .npy/.npz tensors instead")
    _, c, h, w = spec.static_shape
    return Preprocess(size=(h, w), color="GRAY" if c == 1 else "RGB")


def make_calibration(prep: Prepared, calib: str | Path | None, *, size: int = 512, seed: int = 0,
                     preprocess: Preprocess | None = None) -> CalibrationSet:
    root = Path(calib) if calib else prep.calib_dir
    if root is None:
        raise ConfigError("int8 needs calibration data", hint="pass --calib DIR (images or .npy/.npz tensors)")
    pp = preprocess or prep.preprocess
    if pp is None:
        pp = default_preprocess(prep.reference)
        log.warning("no --preprocess given: calibrating with %s; it must match your inference preprocessing",
                    pp.to_dict())
    spec = prep.reference.inputs[0]
    return CalibrationSet(root, pp, spec.name, spec.static_shape, size=size, seed=seed)


def verification_feeds(ref: ReferenceModel, calib: CalibrationSet | None, precision: str,
                       n_real: int = 4) -> list[dict[str, np.ndarray]]:
    """Random inputs (fp32) plus real ones from the calibration sample when there is one.

    Reduced precisions (fp16, int8) are judged on real inputs only when any exist: uniform noise drives
    activations far outside anything the model sees (and outside the calibrated ranges), so their drift there
    measures the noise, not the conversion. fp32 must match everywhere, so it also gets random inputs.
    """
    feeds: list[dict[str, np.ndarray]] = []
    if calib is not None:
        for i, f in enumerate(calib.feeds()):
            if i >= n_real:
                break
            feeds.append(f)
    if precision == "fp32" or not feeds:
        feeds = ref.random_feeds(2) + feeds
    return feeds


def _reference_outputs(ref: ReferenceModel, feeds: list[dict[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
    from edgeconv.targets.onnxruntime.runner import OrtRunner

    with OrtRunner(ref.onnx_path) as r:
        return [r.infer(f) for f in feeds]


def convert_reference(prep: Prepared, target: str | Profile, *, out: str | Path, precision: str | None = None,
                      calibration: CalibrationSet | None = None, keep_fp32: tuple[str, ...] = (),
                      options: dict[str, Any] | None = None, use_cache: bool = True) -> Artifact:
    """Convert the reference to one target/precision, verify it against the reference, write the artifact."""
    ref = prep.reference
    profile = target if isinstance(target, Profile) else load_profile(target)
    backend = get_target(profile.backend)
    precision = precision or profile.precision
    if precision not in backend.precisions or precision not in profile.precisions:
        allowed = [p for p in backend.precisions if p in profile.precisions]
        raise ConfigError(f"target '{profile.name}' has no {precision} route", hint=f"precisions: {allowed}",
                          target=profile.name)
    if not backend.available():
        raise MissingDependencyError(
            f"backend '{backend.name}' is not installed (missing {', '.join(backend.missing())})",
            hint=f"pip install 'edgeconv[{backend.extra}]'", target=profile.name)
    if backend.needs_torch_module and ref.module is None:
        raise ConfigError(f"{backend.name} converts from the PyTorch model, but only ONNX was given",
                          hint="pass --model FILE.py:FACTORY --weights ... instead of an .onnx file",
                          target=profile.name)
    options = dict(options or {})
    out = Path(out)
    key = sha256_json({
        "edgeconv": __version__, "reference": ref.sha256, "backend": backend.name, "versions": backend.versions(),
        "profile": profile.to_dict(), "precision": precision, "calibration": calibration.key if calibration else None,
        "calib_size": len(calibration) if calibration else None, "keep_fp32": list(keep_fp32),
        "options": options, "inputs": [s.to_dict() for s in ref.inputs],
    })
    hit = cache.lookup("artifacts", key) if use_cache else None
    if hit is not None:
        with atomic_dir(out) as tmp:
            cache.copy_out(hit, tmp)
        log.info("cache hit: %s %s (key %s)", profile.name, precision, key)
        art = Artifact.load(out)
        art.manifest["cache"] = "hit"
        return art
    t0 = time.perf_counter()
    with atomic_dir(out) as tmp:
        ctx = ConvertContext(ref, profile, precision, tmp, calibration, tuple(keep_fp32), options,
                             task=dict(prep.info),
                             preprocess=calibration.preprocess if calibration else prep.preprocess)
        with status(f"converting to {profile.name} {precision}"):
            try:
                result = backend.convert(ctx)
            except EdgeconvError as e:
                e.target = e.target or profile.name
                e.stage = e.stage or "convert"
                raise
            except Exception as e:
                raise ConversionError(f"{backend.name} conversion raised {type(e).__name__}: {e}", stage="convert",
                                      target=profile.name) from e
        missing = [f for f in result.files if not (tmp / f).is_file() or (tmp / f).stat().st_size == 0]
        if missing:
            raise ConversionError(f"{backend.name} produced no (or empty) {', '.join(missing)}", stage="convert",
                                  target=profile.name)
        (tmp / REFERENCE_FILE).write_bytes(ref.onnx_path.read_bytes())
        convert_s = time.perf_counter() - t0
        manifest: dict[str, Any] = {
            "edgeconv": __version__, "target": backend.name, "profile_name": profile.name,
            "profile": profile.to_dict(), "precision": precision, "cache_key": key,
            "source": ref.source.manifest(), "export": ref.record.get("export"), "simplify": ref.record.get("simplify"),
            "reference": {"file": REFERENCE_FILE, "sha256": ref.sha256},
            "inputs": [s.to_dict() for s in ref.inputs], "outputs": [s.to_dict() for s in ref.outputs],
            "input_layout": result.input_layout, "dynamic_profiles": ref.dynamic_profiles,
            "preprocess": (calibration.preprocess if calibration else prep.preprocess).to_dict()
            if (calibration or prep.preprocess) else None,
            "preprocess_sha256": (calibration.preprocess if calibration else prep.preprocess).sha256
            if (calibration or prep.preprocess) else None,
            "calibration": calibration.manifest() if calibration else None,
            "keep_fp32": list(keep_fp32), "options": options, "tools": {**backend.versions()},
            "files": file_table(tmp, result.files), "roles": result.roles, "conversion": result.meta,
            "convert_seconds": round(convert_s, 3), "task": prep.info or None,
        }
        write_manifest(tmp, manifest)
        art = Artifact(tmp, Artifact.load(tmp).manifest)
        sample = calibration or _verification_sample(prep)
        manifest["verification"] = verify(art, ref, profile, precision, sample, backend, result)
        write_manifest(tmp, manifest)
    art = Artifact.load(out)
    if use_cache:
        try:
            cache.store("artifacts", key, out)
        except OSError as e:
            log.warning("could not cache the artifact: %s", e)
    log.info("converted %s %s in %.1f s → %s", profile.name, precision, convert_s, out)
    return art


def _verification_sample(prep: Prepared) -> CalibrationSet | None:
    """A few real inputs for verification when no calibration set was asked for (bundled models have one)."""
    if prep.calib_dir is None or prep.preprocess is None or not prep.calib_dir.exists():
        return None
    spec = prep.reference.inputs[0]
    try:
        return CalibrationSet(prep.calib_dir, prep.preprocess, spec.name, spec.static_shape, size=4, seed=0,
                              warn_small=False)
    except EdgeconvError:
        return None


def verify(art: Artifact, ref: ReferenceModel, profile: Profile, precision: str, calib: CalibrationSet | None,
           backend: Any, result: Any) -> dict[str, Any]:
    """Compare the artifact with the reference on sample inputs; raise VerificationError beyond tolerance."""
    ok_here, why = backend.runs_here()
    feeds = verification_feeds(ref, calib, precision)
    refs = _reference_outputs(ref, feeds)
    tol = {k: v for k, v in profile.tol(precision).items() if k in ("max_abs", "rel_l2", "cosine", "snr_db")}
    with status(f"verifying {profile.name} {precision} against the reference"):
        try:
            with backend.runner(art, threads=profile.threads or None) as runner:
                gots = [runner.infer(f) for f in feeds]
                proxy = getattr(runner, "proxy", False)
        except EdgeconvError:
            raise
        except Exception as e:
            raise VerificationError(f"the converted model does not run: {type(e).__name__}: {e}", stage="verify",
                                    target=profile.name) from e
    drift = compare_outputs(refs, gots)
    passed, fails = within(drift, tol)
    record = {"status": "ok" if passed else "failed", "samples": len(feeds), "tolerance": tol,
              "drift": {k: v for k, v in drift.items() if k != "per_output"}, "per_output": drift["per_output"],
              "proxy": proxy, "runs_here": ok_here, "note": result.verify_note or (why or None)}
    if not passed:
        raise VerificationError(f"{profile.name} {precision} differs from the reference: {'; '.join(fails)}",
                                hint="the converter produced a wrong model; see --verbose, try another route/opset",
                                stage="verify", target=profile.name)
    return record
