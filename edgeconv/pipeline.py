"""The conversion pipeline: source → reference ONNX → target artifact, verified before it is reported converted.

Data flows one way; each stage takes an artifact and returns one. ``prepare`` builds the reference once so a
matrix of targets shares it; ``convert_reference`` makes one artifact: it builds the target's ``ConvertContext``
(all a target sees), keys the artifact by the hash of that context, and — for backends that load native code —
converts *and verifies* in a child process with a time limit, so a crash or hang is that row's failure.
Orchestration over many targets lives in ``edgeconv.plan`` (one path for ``convert``, ``run`` and ``demo``).
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgeconv import __version__
from edgeconv.calibration.dataset import CalibrationSet
from edgeconv.calibration.preprocess import Preprocess
from edgeconv.core import cache, keep
from edgeconv.core.artifact import Artifact, atomic_dir, file_table, write_manifest
from edgeconv.core.compare import compare_outputs, within
from edgeconv.core.console import log, status
from edgeconv.core.errors import (
    CalibrationError,
    ConfigError,
    ConversionError,
    EdgeconvError,
    MissingDependencyError,
    VerificationError,
)
from edgeconv.core.hashing import code_fingerprint, sha256_json
from edgeconv.core.isolate import run_isolated
from edgeconv.core.tensors import TensorSpec, name_inputs, parse_input_spec
from edgeconv.export.onnx_export import EXPORTERS, DynamicSpec
from edgeconv.export.reference import REFERENCE_FILE, ReferenceModel, prepare_reference
from edgeconv.intake.loader import load_source, parse_model_args
from edgeconv.profiles import DEFAULT_TOLERANCES, Profile, load_profile
from edgeconv.targets.base import ConversionResult, ConvertContext, Target, TaskEvaluator
from edgeconv.targets.registry import get_target

ZOO_PREFIX = "zoo:"
#: Bumped when what verification checks changes, so artifacts verified under older rules are rebuilt.
VERIFY_RULES = 2
DEFAULT_TIMEOUT_S = 1800.0


@dataclass
class Prepared:
    """A reference model plus what the bundled zoo (or the user) says about its data."""

    reference: ReferenceModel
    preprocess: Preprocess | None = None
    calib_dir: Path | None = None
    info: dict[str, Any] = field(default_factory=dict)


def resolve_zoo(model: str) -> dict[str, Any] | None:
    """The bundled model behind ``zoo:NAME`` as plain settings, or None for any other spec."""
    if not model.startswith(ZOO_PREFIX):
        return None
    from edgeconv import zoo

    name = model[len(ZOO_PREFIX):]
    if name not in zoo.BUNDLED:
        raise ConfigError(f"no bundled model '{name}'", hint=f"bundled: {', '.join(zoo.BUNDLED)}")
    b = zoo.BUNDLED[name]
    return {"model": b.factory, "weights": str(b.weights),
            "inputs": [TensorSpec(b.input_name, tuple(b.input_shape), "float32", "NCHW")],
            "output_names": list(b.output_names), "preprocess": Preprocess.from_dict(b.preprocess),
            "calib_dir": Path(b.calibration_dir),
            "info": {"bundled": name, "task": b.task, "postprocess": b.postprocess}}


def prepare(model: Any, *, weights: str | None = None, model_args: dict[str, Any] | list[str] | None = None,
            inputs: list[str | TensorSpec] | None = None, output_names: list[str] | None = None, opset: int = 17,
            exporters: tuple[str, ...] = EXPORTERS, dynamic: DynamicSpec | None = None, simplify: bool = True,
            trust_checkpoint: bool = False, use_cache: bool = True, preprocess: Preprocess | None = None) -> Prepared:
    """Load the model and produce its verified, simplified reference ONNX (``zoo:NAME`` picks a bundled model)."""
    if isinstance(model_args, (list, tuple)):
        model_args = parse_model_args(list(model_args))
    info: dict[str, Any] = {}
    calib_dir = None
    zoo = resolve_zoo(model) if isinstance(model, str) else None
    if zoo is not None:
        model, weights = zoo["model"], weights or zoo["weights"]
        inputs = inputs or zoo["inputs"]
        output_names = output_names or zoo["output_names"]
        preprocess = preprocess or zoo["preprocess"]
        calib_dir, info = zoo["calib_dir"], zoo["info"]
    specs = [parse_input_spec(s) if isinstance(s, str) else s for s in inputs or []]
    with status("loading model"):
        source = load_source(model, weights=weights, model_args=model_args or {}, trust_checkpoint=trust_checkpoint)
    if not specs and source.details.get("input"):  # a checkpoint that knows its training image size
        specs = [parse_input_spec(source.details["input"])]
        log.info("input %s (%s; --input overrides)", source.details["input"], source.details.get("input_from"))
    if any(not s.name for s in specs):
        specs = name_inputs(specs, _input_names(source))
    if preprocess is None and source.details.get("preprocess") and specs and len(specs[0].shape) == 4:
        h, w = specs[0].shape[2:]
        preprocess = Preprocess.parse(f"size={h}x{w},{source.details['preprocess']}")
        log.info("preprocessing %s (a YOLO detection head's training contract; --preprocess overrides)",
                 source.details["preprocess"])
    # The source hash covers the code file, weights and args; the factory's name must be part of the identity too
    # (two factories in one file are two models), and so must the kind of source.
    factory = str(source.spec).rpartition(":")[2] if source.kind == "factory" else None
    source.sha256 = sha256_json({"source": source.sha256, "kind": source.kind, "factory": factory})
    with cache.disabled(not use_cache):
        ref = prepare_reference(source, specs or None, output_names=output_names, opset=opset, exporters=exporters,
                                dynamic=dynamic, do_simplify=simplify, use_cache=use_cache)
    log.info("reference ONNX ready (%s, %s; %d → %d nodes)", ref.record["export"]["route"],
             ref.record["simplify"].get("simplifier") or "not simplified", ref.record["simplify"]["nodes_before"],
             ref.record["simplify"]["nodes_after"])
    return Prepared(ref, preprocess, calib_dir, info)


def _input_names(source: Any) -> list[str]:
    """The model's own input names, in order: the ONNX graph's, or the parameters of the module's ``forward``."""
    import inspect

    if source.kind == "onnx":
        import onnx

        g = onnx.load(str(source.onnx_path or source.spec), load_external_data=False).graph
        inits = {i.name for i in g.initializer}
        return [v.name for v in g.input if v.name not in inits]
    try:
        params = inspect.signature(source.module.forward).parameters.values()
    except (TypeError, ValueError, AttributeError):  # scripted or C++ modules may not have one
        return []
    names = [p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return [] if any(n.startswith("_") for n in names) else names  # `_x`, `__0`: generated, not names to keep


def default_preprocess(ref: ReferenceModel) -> Preprocess:
    """The contract assumed when none is given: RGB, stretch to the input size, /255, NCHW float32."""
    spec = ref.inputs[0]
    if len(spec.static_shape) != 4:
        raise ConfigError("calibration from images needs a 4-D image input; give .npy/.npz tensors instead")
    _, c, h, w = spec.static_shape
    return Preprocess(size=(h, w), color="GRAY" if c == 1 else "RGB")


def contract_for(prep: Prepared, profile: Profile | None = None, user: Preprocess | None = None) -> Preprocess | None:
    """The preprocessing contract of one row: the user's, else the profile's own, else the model's."""
    if user is not None:
        return user
    if profile is not None and profile.preprocess:
        return Preprocess.from_dict(profile.preprocess)
    return prep.preprocess


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
    ins = prep.reference.inputs
    if len(ins) > 1:
        raise CalibrationError(f"INT8 calibration feeds one input; this model has {len(ins)} "
                               f"({', '.join(i.name for i in ins)})",
                               hint="convert it at fp32/fp16 (calibrating several inputs is not supported yet)")
    spec = ins[0]
    return CalibrationSet(root, pp, spec.name, spec.static_shape, size=size, seed=seed)


def _synthetic_feeds(ref: ReferenceModel, pp: Preprocess | None, n: int) -> list[dict[str, np.ndarray]]:
    """Inputs like the real ones, generated through the contract (when the contract can generate them)."""
    gen = getattr(pp, "synthetic_feeds", None)
    if gen is None or len(ref.inputs) != 1:
        return []
    try:
        made = list(gen(ref.inputs[0], n, 0))
    except EdgeconvError:
        return []
    name = ref.inputs[0].name
    return [f if isinstance(f, dict) else {name: np.ascontiguousarray(f)} for f in made]


def verification_feeds(ref: ReferenceModel, calib: CalibrationSet | None, precision: str, n_real: int | None = None,
                       preprocess: Preprocess | None = None, held_out: list[dict[str, np.ndarray]] | None = None
                       ) -> list[tuple[str, dict[str, np.ndarray]]]:
    """(kind, feeds) pairs: real inputs from the sample, inputs made through the contract, and uniform noise.

    Reduced precisions are judged on realistic inputs only when any exist: uniform noise drives activations far
    outside anything the model sees (and outside the calibrated ranges), so drift there measures the noise, not the
    conversion. fp32 must match everywhere, so it also gets noise, reported as its own check. ``held_out``: real
    inputs the calibration did not see (the task evaluator's); an INT8 model judged on its own calibration images
    is judged on the inputs its ranges were fitted to (FastestDet's ncnn int8: cosine 0.972 there, 0.965 on fresh
    images, under its 0.97 bar), so reduced precisions are judged on these when there are any (kind ``held-out``).
    """
    n_real = n_real if n_real is not None else (4 if precision == "fp32" else 16)
    if held_out and precision != "fp32":
        return [("held-out", f) for f in held_out[:n_real]]
    feeds: list[tuple[str, dict[str, np.ndarray]]] = []
    if calib is not None:
        for i, f in enumerate(calib.feeds()):
            if i >= n_real:
                break
            feeds.append(("real", f))
    if not feeds:
        feeds += [("contract", f) for f in _synthetic_feeds(ref, preprocess or (calib.preprocess if calib else None),
                                                             max(2, n_real // 2))]
    if precision == "fp32" or not feeds:
        feeds = [("noise", f) for f in ref.random_feeds(2)] + feeds
    return feeds


def reference_outputs(ref: ReferenceModel, feeds: list[dict[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
    from edgeconv.targets.base import OrtRunner

    with OrtRunner(ref.onnx_path) as r:
        return [r.infer(f) for f in feeds]


def _verification_sample(prep: Prepared, pp: Preprocess | None) -> CalibrationSet | None:
    """Real inputs for verification when no calibration set was asked for (bundled models have one)."""
    if prep.calib_dir is None or pp is None or not prep.calib_dir.exists():
        return None
    spec = prep.reference.inputs[0]
    try:
        return CalibrationSet(prep.calib_dir, pp, spec.name, spec.static_shape, size=16, seed=0, warn_small=False)
    except EdgeconvError:
        return None


def _check_backend(backend: Target, profile: Profile, precision: str, ref: ReferenceModel) -> None:
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


def build_context(prep: Prepared, profile: Profile, precision: str, *, calibration: CalibrationSet | None = None,
                  keep_fp32: tuple[str, ...] = (), options: dict[str, Any] | None = None,
                  preprocess: Preprocess | None = None, evaluator: TaskEvaluator | None = None,
                  out_dir: Path | None = None, postprocess: dict[str, Any] | None = None
                  ) -> tuple[Target, ConvertContext]:
    """The backend and the complete context of one conversion (options checked against the backend's schema)."""
    ref = prep.reference
    backend = get_target(profile.backend)
    _check_backend(backend, profile, precision, ref)
    backend.check_options(dict(profile.options), f"profile {profile.path or profile.name} [options]")
    opts = backend.check_options({k: v for k, v in (options or {}).items() if v is not None}, "--option")
    pp = (calibration.preprocess if calibration is not None else None) or preprocess or prep.preprocess
    keep_fp32, nodes = _module_patterns(ref, tuple(keep_fp32)) if keep_fp32 else ((), ())
    ctx = ConvertContext(ref, profile, precision, out_dir or Path("."), calibration, tuple(keep_fp32), opts,
                         task=dict(prep.info), preprocess=pp, keep_fp32_nodes=nodes, evaluator=evaluator,
                         postprocess=postprocess, device=_device_for(profile, opts.get("device")),
                         tools=backend.versions())
    return backend, ctx


def _module_patterns(ref: ReferenceModel, patterns: tuple[str, ...]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """``--keep-fp32`` patterns with PyTorch module names (``backbone.0.conv``, ``head``) that match no node name
    replaced by the exact nodes of that module, so every backend's own matching sees node names it can find; and
    the matched nodes, in graph order (what ``keep.resolve`` gives, from the one load of the graph).

    Module names come from the exporter's metadata, legacy node names, weight names or a scoped re-export
    (``edgeconv.diagnose.modules``); a node whose module is only inferred from upstream is not counted."""
    nodes = keep.graph_nodes(ref.onnx_path)
    out: list[str] = []
    hit: set[str] = set()
    modules: dict[str, Any] | None = None
    for p in patterns:
        try:
            hit.update(*keep.match(nodes, [p]).values())
            out.append(p)
            continue
        except ConfigError as e:
            if str(p).startswith("op:"):
                raise
            if modules is None:
                from edgeconv.diagnose.modules import reference_module_map

                try:
                    modules = reference_module_map(ref)
                except Exception as why:  # noqa: BLE001 - no module names: the pattern's own error stands
                    log.debug("module names unavailable for --keep-fp32: %s", why)
                    modules = {}
            name = str(p).strip().strip("/").replace("/", ".")
            hits = [n for n, _, _ in nodes if (m := modules.get(n)) is not None and m.module and
                    m.source != "upstream" and (m.module == name or m.module.startswith(name + "."))]
            if not hits:
                raise ConfigError(e.message, hint=(e.hint or "") + "; PyTorch module names (backbone.0.conv) work "
                                  "too") from None
            log.info("--keep-fp32 %s: module %s = %d node(s)", p, name, len(hits))
            out.extend(hits)
            hit.update(hits)
    return tuple(dict.fromkeys(out)), tuple(n for n, _, _ in nodes if n in hit)


def _device_for(profile: Profile, explicit: str | None) -> str | None:
    """The device an artifact of ``profile`` is also verified on: ``--device``, else the first usable device that
    serves the profile (``devices/*.toml``: e.g. raspberry-pi-5 → the emulated arm64 board once it is built)."""
    try:
        from edgeconv.devices import device_for_profile
    except ImportError:
        return explicit
    dev = device_for_profile(profile.name, explicit=explicit)
    if dev is None:
        return None
    return str(getattr(dev, "path", None) or dev.name) if explicit else dev.name


def _verify_on_device(art: Artifact, ctx: ConvertContext, tagged: list[tuple[str, dict[str, np.ndarray]]],
                      refs: list[dict[str, np.ndarray]], tol: dict[str, float]) -> dict[str, Any] | None:
    """The artifact's drift on ``ctx.device`` with the device's own kernels (fp16 arithmetic, int8 dot products);
    None without a device. A device that cannot run this backend is recorded as skipped, with the reason."""
    if not ctx.device:
        return None
    from edgeconv.devices import unsupported_reason, verify_on_device

    why = unsupported_reason(ctx.device, ctx.profile.backend)  # the worker's runners + the device's runtimes
    if why:
        return {"status": "skipped", "device": ctx.device, "reason": why}
    idx = [i for i, (k, _) in enumerate(tagged) if k != "noise"] or list(range(len(tagged)))
    with status(f"verifying {ctx.profile.name} {ctx.precision} on device {ctx.device}"):
        return verify_on_device(art.path, ctx.device, [tagged[i][1] for i in idx], [refs[i] for i in idx], tol)


def _key_material(backend: Target, ctx: ConvertContext) -> dict[str, Any]:
    """What both keys hash: edgeconv's version and source code, the backend, the host CPU's ISA features
    (verification ran on its kernels, and options such as OpenVINO's ``overflow_fix=auto`` resolve by them) and the
    context itself."""
    from edgeconv.core.env import isa_features

    return {"edgeconv": __version__, "code": code_fingerprint(), "backend": backend.name, "isa": isa_features(),
            "context": ctx.fingerprint()}


def artifact_key(backend: Target, ctx: ConvertContext) -> str:
    """The full sha256 of everything that determines the artifact: ``_key_material``, the verification rules and
    the tolerances it was judged by."""
    return sha256_json({**_key_material(backend, ctx), "verify_rules": VERIFY_RULES,
                        "tolerance": ctx.profile.tol(ctx.precision)})


def conversion_key(backend: Target, ctx: ConvertContext) -> str:
    """The artifact key without the tolerances: two contexts with the same conversion key ask the backend for the
    same conversion and differ only in how strictly its result is judged (the float-fallback search converts under
    lifted tolerances). A converter that reads a tolerance to pick a route is covered: the adopted is re-verified."""
    material = _key_material(backend, ctx)
    profile = material["context"].get("profile")
    if isinstance(profile, dict):
        material["context"]["profile"] = {**profile, "tolerance": None}
    return sha256_json(material)


def convert_reference(prep: Prepared, target: str | Profile, *, out: str | Path, precision: str | None = None,
                      calibration: CalibrationSet | None = None, keep_fp32: tuple[str, ...] = (),
                      options: dict[str, Any] | None = None, use_cache: bool = True,
                      preprocess: Preprocess | None = None, evaluator: TaskEvaluator | None = None,
                      postprocess: dict[str, Any] | None = None, adopt: Artifact | None = None) -> Artifact:
    """Convert the reference to one target/precision, verify it against the reference, write the artifact.

    ``postprocess`` (from ``edgeconv.plan``): the detections contract an end2end reference implements; the
    artifact then ships the post-processor files and is verified on detections, not raw tensors.

    ``adopt``: an artifact already converted with this very conversion (same ``conversion_key``), judged under
    other tolerances — the float-fallback attempt the search chose. Its files are verified again under this call's
    tolerances instead of converting anew: a converter that is not deterministic (MNN's int8 tool gave -2.23,
    -1.46 and -1.55 mAP50-95 on three identical runs) would otherwise ship another artifact than the one the search
    measured. An artifact of another conversion, or one that fails here, is converted anew."""
    profile = target if isinstance(target, Profile) else load_profile(target)
    precision = precision or profile.precision
    backend, ctx = build_context(prep, profile, precision, calibration=calibration, keep_fp32=keep_fp32,
                                 options=options, preprocess=preprocess, evaluator=evaluator, postprocess=postprocess)
    out = Path(out)
    key = artifact_key(backend, ctx)
    with cache.disabled(not use_cache):
        hit = cache.lookup("artifacts", key)
        if hit is not None:
            art = _from_cache(hit, out, key, profile, precision)
            if art is not None:
                return art
        art = None
        if adopt is not None:
            art = _adopt(prep, backend, ctx, out, key, adopt)
        if art is None:
            art = _build(prep, backend, ctx, out, key)
        if cache.store("artifacts", key, out) is None and use_cache:
            log.debug("artifact %s %s not cached", profile.name, precision)
    return art


def _from_cache(hit: Path, out: Path, key: str, profile: Profile, precision: str) -> Artifact | None:
    """Copy a verified cache entry out; an entry whose manifest does not parse or does not match is evicted."""
    try:
        cached = Artifact.load(hit)
        if cached.manifest.get("cache_key") != key:
            raise ConfigError("manifest names another key")
    except (EdgeconvError, KeyError, TypeError) as e:
        cache.evict(hit, getattr(e, "message", str(e)))
        return None
    with atomic_dir(out) as tmp:
        cache.copy_out(hit, tmp)
    log.info("cache hit: %s %s (key %s)", profile.name, precision, key)
    art = Artifact.load(out)
    art.manifest["cache"] = "hit"
    return art


def _adopt(prep: Prepared, backend: Target, ctx: ConvertContext, out: Path, key: str,
           source: Artifact) -> Artifact | None:
    """``source``'s files as this call's artifact, re-verified under its tolerances; None: convert anew."""
    theirs, ours = source.manifest.get("conversion_key"), conversion_key(backend, ctx)
    if theirs != ours:
        log.debug("%s %s: %s is another conversion (key %s, not %s); converting anew", ctx.profile.name,
                  ctx.precision, source.path, theirs, ours)
        return None
    try:
        art = _build(prep, backend, ctx, out, key, adopt=source)
    except (ConversionError, VerificationError) as e:
        log.info("%s %s: the chosen attempt does not pass as this row's artifact (%s); converting anew",
                 ctx.profile.name, ctx.precision, e.message)
        return None
    art.manifest["adopted"] = {"from": str(source.path), "conversion_key": ours,
                               "convert_seconds": source.manifest.get("convert_seconds")}
    write_manifest(art.path, art.manifest)
    return art


def _adopted_result(source: Artifact, ctx: ConvertContext) -> ConversionResult:
    """The files an earlier conversion made, copied into ``ctx.out_dir`` as if the backend had just made them."""
    import shutil

    from edgeconv.core.hashing import sha256_file

    m = source.manifest
    files = [str(f) for f in m.get("files") or {}]
    for f in files:
        src, dst = source.path / f, ctx.out_dir / f
        if sha256_file(src) != m["files"][f].get("sha256"):
            raise ConversionError(f"{src} changed since its conversion", stage="convert", target=ctx.profile.name)
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dst)
    return ConversionResult(files, dict(m.get("roles") or {}), dict(m.get("conversion") or {}),
                            m.get("input_layout") or "NCHW")


def _build(prep: Prepared, backend: Target, ctx: ConvertContext, out: Path, key: str,
           adopt: Artifact | None = None) -> Artifact:
    ref, profile, precision = prep.reference, ctx.profile, ctx.precision
    sample = ctx.calibration or _verification_sample(prep, ctx.preprocess)
    ev = ctx.evaluator
    held_out = [f for f, _ in ev.items] if ev is not None and ev.held_out and ev.items else None
    tagged = verification_feeds(ref, sample, precision, preprocess=ctx.preprocess, held_out=held_out)
    ctx.sample_feeds = [f for _, f in tagged]
    ctx.sample_kinds = [k for k, _ in tagged]
    ctx.sample_outputs = reference_outputs(ref, ctx.sample_feeds)
    from edgeconv.export.onnx_export import check_finite

    kinds = ", ".join(sorted({k for k, _ in tagged}))
    check_finite(ctx.sample_outputs, str(ref.source.spec), f"the verification inputs ({kinds})")
    reference_score = _reference_score(ref, ctx.evaluator) if ctx.evaluator and precision != "fp32" else None
    timeout = float(ctx.option("timeout_s", DEFAULT_TIMEOUT_S))
    t0 = time.perf_counter()
    with atomic_dir(out) as tmp:
        ctx.out_dir = tmp
        label = f"{backend.name} {precision} conversion"
        isolate = backend.isolate
        loaded = [m for m in backend.fork_unsafe_modules if m in sys.modules]
        if isolate and loaded:
            log.debug("%s: %s already loaded in this process; converting in-process (a forked child would hang)",
                      backend.name, ", ".join(loaded))
            isolate = False
        if isolate:
            preload(backend)
        with status(f"converting to {profile.name} {precision}" + (" (isolated)" if isolate else "")):
            if isolate:
                result, record = run_isolated(_convert_and_verify, backend, ctx, tagged, reference_score, adopt,
                                              timeout=timeout, what=label, target=profile.name, stage="convert")
            else:
                result, record = _convert_and_verify(backend, ctx, tagged, reference_score, adopt)
        (tmp / REFERENCE_FILE).write_bytes(ref.onnx_path.read_bytes())
        files = list(result.files)
        post_record = None
        if ctx.postprocess is not None:
            from edgeconv import postprocess as pp

            files += [f for f in pp.write_postprocessor(tmp, ctx.postprocess["spec"], stage=ctx.postprocess["stage"])
                      if f not in files]
            post_record = {**pp.postprocess_record(ctx.postprocess["spec"], ctx.postprocess["stage"]),
                           "placement": ctx.postprocess["placement"]}
        convert_s = time.perf_counter() - t0
        pp = ctx.preprocess
        manifest: dict[str, Any] = {
            "edgeconv": __version__, "target": backend.name, "profile_name": profile.name,
            "profile": profile.to_dict(), "precision": precision, "cache_key": key,
            "conversion_key": conversion_key(backend, ctx),
            "source": ref.source.manifest(), "export": ref.record.get("export"), "simplify": ref.record.get("simplify"),
            "reference": {"file": REFERENCE_FILE, "sha256": ref.sha256},
            "inputs": [s.to_dict() for s in ref.inputs], "outputs": [s.to_dict() for s in ref.outputs],
            "input_layout": result.input_layout, "dynamic_profiles": ref.dynamic_profiles,
            "preprocess": pp.to_dict() if pp else None, "preprocess_sha256": pp.sha256 if pp else None,
            "calibration": ctx.calibration.manifest() if ctx.calibration else None,
            "keep_fp32": list(ctx.keep_fp32), "keep_fp32_nodes": list(ctx.keep_fp32_nodes),
            "options": ctx.options, "tools": dict(ctx.tools), "isolated": isolate,
            "files": file_table(tmp, files), "roles": result.roles, "conversion": result.meta,
            "postprocess": post_record,
            "convert_seconds": round(convert_s, 3), "task": prep.info or _task_record(ctx.evaluator),
            "verification": record,
        }
        write_manifest(tmp, manifest)
    art = Artifact.load(out)
    log.info("converted %s %s in %.1f s → %s", profile.name, precision, convert_s, out)
    return art


def preload(backend: Target) -> None:
    """Import ``backend.preload_modules`` in this process (see ``Target.preload_modules``). One that does not
    import is left to the child, whose conversion then reports it as that row's error."""
    import importlib

    for name in backend.preload_modules:
        if name in sys.modules or name in backend.fork_unsafe_modules:
            continue
        try:
            with status(f"importing {name}"):
                importlib.import_module(name)
        except Exception as e:  # noqa: BLE001 - any import failure is the child's to report, with its context
            log.debug("preloading %s failed (%s: %s); the conversion imports it itself", name, type(e).__name__, e)
            return


def _reference_score(ref: ReferenceModel, ev: TaskEvaluator) -> float:
    """The task metric of the reference on the evaluator's items (computed once per reference and data)."""
    memo = ev.meta.setdefault("_reference_scores", {})
    if ref.sha256 not in memo:
        from edgeconv.targets.base import OrtRunner

        with status(f"reference {ev.metric} on {len(ev.items)} held-out inputs"), OrtRunner(ref.onnx_path) as r:
            memo[ref.sha256] = ev.evaluate(r.infer)
    return float(memo[ref.sha256])


def _convert_and_verify(backend: Target, ctx: ConvertContext, tagged: list[tuple[str, dict[str, np.ndarray]]],
                        reference_score: float | None, adopt: Artifact | None = None
                        ) -> tuple[ConversionResult, dict[str, Any]]:
    """Convert into ``ctx.out_dir`` (or copy ``adopt``'s files there) and verify the result (runs in the child
    process for native backends)."""
    name = ctx.profile.name
    try:
        result = _adopted_result(adopt, ctx) if adopt is not None else backend.convert(ctx)
    except EdgeconvError as e:
        e.target = e.target or name
        e.stage = e.stage or "convert"
        raise
    except Exception as e:
        raise ConversionError(f"{backend.name} conversion raised {type(e).__name__}: {e}", stage="convert",
                              target=name) from e
    missing = [f for f in result.files if not (ctx.out_dir / f).is_file() or (ctx.out_dir / f).stat().st_size == 0]
    if missing:
        raise ConversionError(f"{backend.name} produced no (or empty) {', '.join(missing)}", stage="convert",
                              target=name)
    write_manifest(ctx.out_dir, {"target": backend.name, "precision": ctx.precision, "roles": result.roles,
                                 "inputs": [s.to_dict() for s in ctx.reference.inputs],
                                 "outputs": [s.to_dict() for s in ctx.reference.outputs],
                                 "input_layout": result.input_layout, "conversion": result.meta,
                                 "profile": ctx.profile.to_dict(), "options": ctx.options,
                                 "files": file_table(ctx.out_dir, result.files)})
    art = Artifact.load(ctx.out_dir)
    if not result.runnable_here:  # e.g. CoreML on Linux: structurally checked by the target, never "ok"
        return result, {"status": "not-executed", "samples": 0, "note": result.verify_note, "runs_here": False,
                        "proxy": False, "checks": result.meta.get("checks"), "task": None, "task_checked": False}
    record = verify(art, ctx, backend, result, tagged, reference_score)
    return result, record


def _check_scores(records: list[dict[str, Any]], target: str) -> None:
    """The reference's own detections (the top scores the detection checks saw) must score in [0, 1]: a decode whose
    parameters do not fit the head (a YOLOv5 fork with 8 landmark channels per anchor, read as 10 classes to make the
    shape fit) scored boxes ~480 and the artifact, decoding the same wrong way, matched it perfectly."""
    top = max((float(r["reference_score_max"]) for r in records if r.get("reference_score_max") is not None),
              default=0.0)
    if top > 1.0 + 1e-3:
        raise ConfigError(f"post-processing: the decode scores the reference's boxes up to {top:.4g} on real inputs; "
                          "scores are probabilities in [0, 1], so the decode parameters do not fit this head",
                          hint="check head=, num_classes=, outputs= (and objectness=); a head with extra per-anchor "
                               "channels (landmarks, keypoints) has no end2end decode: convert without --postprocess",
                          stage="postprocess", target=target)


def _task_record(evaluator: TaskEvaluator | None) -> dict[str, Any] | None:
    """The user's task as ``bench`` reads it back (``task``, ``postprocess``): a row held to ``--task`` at
    conversion is measured by that task later without repeating it (the bundled models record theirs in
    ``prep.info``)."""
    spec = (evaluator.meta.get("spec") if evaluator is not None else None)
    if not spec:
        return None
    return {"task": spec, "postprocess": evaluator.meta.get("postprocess"),  # type: ignore[union-attr]
            "eval": evaluator.meta.get("source")}  # type: ignore[union-attr]


def _rounding_only(fails: list[str], drift: dict[str, Any], tol: dict[str, float]) -> bool:
    """Whether a float row failed only its max-abs bar, by less than 10x, with the cosine bar met: the signature
    of kernels that sum in another order (MNN's Winograd: 1.06e-4 of the output scale on a plate recogniser), not
    of a wrong conversion, which moves the cosine or misses by orders of magnitude."""
    if not fails or not all(f.startswith("max_abs ") for f in fails) or "max_abs" not in tol:
        return False
    scaled = drift.get("max_abs_scaled", drift.get("max_abs"))
    cos = drift.get("cosine")
    return scaled is not None and cos is not None and float(scaled) < 10 * float(tol["max_abs"]) \
        and float(cos) >= float(tol.get("cosine", DEFAULT_TOLERANCES["fp32"]["cosine"]))


def _round_up(x: float) -> str:
    """``x`` rounded up to one significant digit, as a tolerance a user would type (2.1e-4 -> '3e-04')."""
    import math

    exp = math.floor(math.log10(x))
    digit = math.ceil(round(x / 10 ** exp, 9))
    return f"{digit}e{exp:+03d}" if digit < 10 else f"1e{exp + 1:+03d}"


def verify(art: Artifact, ctx: ConvertContext, backend: Target, result: ConversionResult,
           tagged: list[tuple[str, dict[str, np.ndarray]]], reference_score: float | None = None) -> dict[str, Any]:
    """Compare the artifact with the reference on sample inputs (and on the task metric when an evaluator is
    given); raise VerificationError beyond tolerance. Noise inputs are a separate, advisory check when realistic
    inputs exist, because a correct model can amplify out-of-distribution noise far beyond its real drift."""
    profile, precision = ctx.profile, ctx.precision
    ok_here, why = backend.runs_here()
    refs = ctx.sample_outputs or []
    tol = {k: v for k, v in profile.tol(precision).items() if k in ("max_abs", "rel_l2", "cosine", "snr_db")}
    with status(f"verifying {profile.name} {precision} against the reference"):
        try:
            with backend.runner(art, threads=profile.threads or None) as runner:
                gots = [runner.infer(f) for _, f in tagged]
                proxy = getattr(runner, "proxy", False)
                task = None
                if reference_score is not None and ctx.evaluator is not None:
                    value = ctx.evaluator.evaluate(runner.infer)
                    task = {"metric": ctx.evaluator.metric, "reference": reference_score, "value": value,
                            "delta": value - reference_score, "samples": len(ctx.evaluator.items),
                            **{k: v for k, v in ctx.evaluator.meta.items() if not k.startswith("_")}}
        except EdgeconvError:
            raise
        except Exception as e:
            raise VerificationError(f"the converted model does not run: {type(e).__name__}: {e}", stage="verify",
                                    target=profile.name) from e
    kinds = sorted({k for k, _ in tagged})
    checks: dict[str, Any] = {}
    for kind in kinds:
        idx = [i for i, (k, _) in enumerate(tagged) if k == kind]
        d = compare_outputs([refs[i] for i in idx], [gots[i] for i in idx])
        ok, fails = within(d, tol)
        checks[kind] = {"samples": len(idx), "passed": ok, "failures": fails,
                        "drift": {k: v for k, v in d.items() if k != "per_output"}, "per_output": d["per_output"]}
    stage = (ctx.postprocess or {}).get("stage")
    if stage in ("detections", "candidates"):
        # Tensor tolerances mean nothing on boxes whose near-tied candidates swap order: compare detections.
        from edgeconv.postprocess import verify_detection_outputs

        for kind in kinds:
            idx = [i for i, (k, _) in enumerate(tagged) if k == kind]
            ok, fails_k, rec = verify_detection_outputs([refs[i] for i in idx], [gots[i] for i in idx],
                                                        ctx.postprocess["spec"], min_matched=float(
                                                            profile.tol(precision).get("detections_matched", 0.99)))
            checks[kind].update(passed=ok, failures=fails_k, detections=rec)
        _check_scores([checks[k]["detections"] for k in kinds], profile.name)
    blocking = [k for k in kinds if k != "noise"] or kinds
    drift = compare_outputs([refs[i] for i, (k, _) in enumerate(tagged) if k in blocking],
                            [gots[i] for i, (k, _) in enumerate(tagged) if k in blocking])
    fails = [f"{f} (on {k} inputs)" for k in blocking for f in checks[k]["failures"]]
    device = _verify_on_device(art, ctx, tagged, refs, tol) if stage not in ("detections", "candidates") else None
    if device is not None and device.get("status") == "failed":
        fails.append(f"on device {ctx.device}: " + "; ".join(device.get("failures") or []))
    budget = _task_budget(ctx)
    if task is not None and budget is not None:
        task["budget"] = budget
        if task["delta"] < -budget:
            where = "held-out" if ctx.evaluator is None or ctx.evaluator.held_out else "calibration (in-sample)"
            fails.append(f"task {task['metric']} drops {-task['delta']:.4f} > budget {budget:.4f} "
                         f"on {task['samples']} {where} inputs")
    record = {"status": "ok" if not fails else "failed", "samples": len(tagged), "tolerance": tol,
              "inputs": {k: checks[k]["samples"] for k in kinds}, "checks": checks, "blocking": blocking,
              "drift": {k: v for k, v in drift.items() if k != "per_output"}, "per_output": drift["per_output"],
              "task": task, "task_checked": task is not None, "proxy": proxy, "runs_here": ok_here,
              "device": device,
              "note": result.verify_note or (why or None)}
    if stage in ("detections", "candidates"):
        seen = sum(int((checks[k].get("detections") or {}).get("reference_detections") or 0) for k in blocking)
        record["detections_seen"] = seen
        if seen == 0:  # two empty lists agree: the boxes were not compared at all
            empty = (f"the detection check found no detection in its {sum(checks[k]['samples'] for k in blocking)} "
                     f"{'/'.join(blocking)} input(s) at score_threshold "
                     f"{ctx.postprocess['spec'].get('score_threshold')}: boxes unchecked (--calib images holding "
                     "objects are used for every row)")
            log.warning("%s %s: %s", profile.name, precision, empty)
            record["note"] = "; ".join(n for n in (record["note"], empty) if n)
    if fails:
        if task and task["delta"] < -(budget or 0):
            hint = ("the artifact's accuracy is below the budget: --keep-fp32 sensitive layers, another calibration "
                    "method (--calib-method), or a larger calibration sample")
        elif ctx.calibration is not None:  # a quantization error, not a converter bug: say what changes INT8
            hint = ("INT8 quantization error: `edgeconv lint MODEL --calib DIR` / `edgeconv diagnose ARTIFACT` name "
                    "the layers; keep them float (--keep-fp32 NAME), try --calib-method percentile|entropy or a larger "
                    f"--calib-size, or accept more drift (--tol {precision}.cosine=...)")
        elif _rounding_only(fails, drift, tol):
            scaled = float(drift.get("max_abs_scaled", drift["max_abs"]))
            hint = (f"only the largest difference is over the bar ({scaled:.3g} of the output scale against "
                    f"{tol['max_abs']:.3g}) at cosine {drift['cosine']:.7f}: float-accumulation order (Winograd, "
                    f"fused kernels) differs like this; if that is acceptable, --tol {precision}.max_abs="
                    f"{_round_up(2 * scaled)}, else see --verbose")
        else:
            hint = "the converter produced a model that differs; see --verbose, try --route or --opset"
        alt = backend.int8_alternative
        if precision == "int8" and alt and (ctx.calibration is not None or task) and ctx.option(alt[0]) != alt[1]:
            hint += f"; or --option {alt[0]}={alt[1]} ({alt[2]})"
        err = VerificationError(f"{profile.name} {precision} differs from the reference: {'; '.join(fails)}",
                                hint=hint, stage="verify", target=profile.name)
        err.task = task  # type: ignore[attr-defined]  # callers tell a budget failure from a drift failure
        err.drift = {k: v for k, v in drift.items() if k != "per_output"}  # type: ignore[attr-defined]
        raise err
    return record


def _task_budget(ctx: ConvertContext) -> float | None:
    """The allowed task-metric drop in points (evaluators score in percent): --max-drop (a fraction, 0.01 = 1 point,
    as NNCF takes it), else the profile's ``task_delta`` (points, as the benchmark report shows them)."""
    md = ctx.option("max_drop")
    if md is not None:
        return float(md) * 100.0
    td = ctx.profile.tol(ctx.precision).get("task_delta")
    return float(td) if td is not None else None
