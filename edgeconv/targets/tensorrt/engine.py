"""Engine builds: the tensorrt Python API where it is installed, and the equivalent ``trtexec`` command lines.

The two generations differ in how precision is asked for:
- TensorRT 10: weakly typed by default - ``BuilderFlag.FP16`` / ``BuilderFlag.INT8`` (``--fp16`` / ``--int8``) let
  the builder pick lower precision; implicit INT8 reads a calibration cache through a calibrator (``--calib``);
  explicit Q/DQ models also build here (``--int8 --fp16`` so non-quantized layers may use fp16).
- TensorRT 11: every network is strongly typed; the precision flags, calibrators and ``--calib`` are gone.  fp16
  means an ONNX whose tensors are fp16 (our cast pass), INT8 means Q/DQ nodes.

Nothing here runs without TensorRT; the command lines are written into every artifact so a user can build on the
device with ``trtexec`` alone.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeconv.core.errors import ConversionError
from edgeconv.core.lazy import require

ENGINE_FILE = "model.engine"
SCRIPT_FILE = "build_engine.sh"
# trtexec's banner says "[TensorRT v100300]" (NV_TENSORRT_VERSION): 5-6 digits from 10 on, 4 before.
_DETECT_FROM_TRTEXEC = ("V=$(trtexec --help 2>&1 | sed -n 's/.*TensorRT v\\([0-9][0-9]*\\).*/\\1/p' | head -n1)\n"
                        'if [ -n "$V" ]; then GEN=$((V >= 100000 ? V / 10000 : V / 1000)); fi\n'
                        'GEN="${TRT_GENERATION:-$GEN}"')
_DETECT_FROM_PYTHON = ('if [ -z "$GEN" ]; then GEN=$(python3 -c "import tensorrt;'
                       " print(tensorrt.__version__.split('.')[0])\" 2>/dev/null || true); fi")
_UNKNOWN = ("  *) echo \"unsupported or unknown TensorRT generation '$GEN' (set TRT_GENERATION=10 or 11)\" >&2;"
            " exit 2;;")


@dataclass
class BuildPlan:
    """One way to build an engine: which ONNX, which generation, which precision switches."""

    generation: str  # "10" | "11"
    onnx: str  # file name inside the artifact
    route: str  # fp32 | fp16-flag | fp16-typed | int8-explicit | int8-implicit
    fp16_flag: bool = False
    int8_flag: bool = False
    calib_cache: str | None = None
    strongly_typed: bool = False
    layer_fp32: list[str] = field(default_factory=list)

    def describe(self) -> str:
        return f"TensorRT {self.generation}: {self.route} from {self.onnx}"


def _shape(dims: list[int]) -> str:
    return "x".join(str(int(d)) for d in dims)


def trtexec_line(plan: BuildPlan, profiles: dict[str, dict[str, list[int]]], workspace_mib: int,
                 engine: str = ENGINE_FILE) -> str:
    """The trtexec command equivalent to :func:`build_engine` for ``plan``."""
    args = ["trtexec", f"--onnx={plan.onnx}", f"--saveEngine={engine}",
            f"--memPoolSize=workspace:{int(workspace_mib)}M"]
    if plan.generation == "10":
        if plan.strongly_typed:
            args.append("--stronglyTyped")
        if plan.fp16_flag:
            args.append("--fp16")
        if plan.int8_flag:
            args.append("--int8")
        if plan.calib_cache:
            args.append(f"--calib={plan.calib_cache}")
        if plan.layer_fp32:
            args += ["--precisionConstraints=obey",
                     "--layerPrecisions=" + ",".join(f"{n}:fp32" for n in plan.layer_fp32)]
    if profiles:
        for flag, key in (("--minShapes", "min"), ("--optShapes", "opt"), ("--maxShapes", "max")):
            args.append(flag + "=" + ",".join(f"{n}:{_shape(p[key])}" for n, p in profiles.items()))
    return " ".join(shlex.quote(a) if any(c in a for c in " ;&|") else a for a in args)


def build_script(plans: list[BuildPlan], profiles: dict[str, dict[str, list[int]]], workspace_mib: int,
                 notes: list[str]) -> str:
    """A POSIX shell script: pick the generation from the installed trtexec (or $TRT_GENERATION) and build."""
    lines = ["#!/bin/sh", "# Build the TensorRT engine on the device (written by edgeconv).", "#"]
    lines += [f"# {n}" for n in notes]
    lines += ["set -e", 'cd "$(dirname "$0")"',
              _DETECT_FROM_TRTEXEC, _DETECT_FROM_PYTHON,
              'case "$GEN" in']
    by_gen: dict[str, list[BuildPlan]] = {}
    for p in plans:
        by_gen.setdefault(p.generation, []).append(p)
    for gen, ps in sorted(by_gen.items()):
        lines.append(f"  {gen})")
        for i, p in enumerate(ps):
            prefix = "    " if i == 0 else "    # alternative: "
            lines.append(f"    # {p.describe()}")
            lines.append(prefix + trtexec_line(p, profiles, workspace_mib))
        lines.append("    ;;")
    lines += [_UNKNOWN, "esac", ""]
    return "\n".join(lines)


def _cache_calibrator(trt: Any, cache_path: Path) -> Any:
    """An IInt8EntropyCalibrator2 that never sees data: it only hands TensorRT the cache (TensorRT 10)."""
    data = Path(cache_path).read_bytes()

    class CacheCalibrator(trt.IInt8EntropyCalibrator2):  # type: ignore[misc,name-defined]
        def __init__(self) -> None:
            trt.IInt8EntropyCalibrator2.__init__(self)

        def get_batch_size(self) -> int:
            return 1

        def get_batch(self, names: list[str]) -> None:
            return None  # the cache covers every tensor: TensorRT must not ask for data

        def read_calibration_cache(self) -> bytes:
            return data

        def write_calibration_cache(self, cache: bytes) -> None:
            return None

    return CacheCalibrator()


def build_engine(artifact_dir: Path, plan: BuildPlan, profiles: dict[str, dict[str, list[int]]],
                 workspace_mib: int, engine_name: str = ENGINE_FILE) -> dict[str, Any]:
    """Build and serialize the engine with the tensorrt Python API; returns build metadata."""
    trt = require("tensorrt", "tensorrt")
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    major = int(trt.__version__.split(".")[0])
    flags = 0
    if plan.strongly_typed and major < 11:
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(artifact_dir / plan.onnx)):
        errs = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ConversionError(f"TensorRT's ONNX parser rejected {plan.onnx}: {errs}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_mib) << 20)
    if major < 11:
        if plan.fp16_flag:
            config.set_flag(trt.BuilderFlag.FP16)
        if plan.int8_flag:
            config.set_flag(trt.BuilderFlag.INT8)
        if plan.calib_cache:
            config.int8_calibrator = _cache_calibrator(trt, artifact_dir / plan.calib_cache)
        if plan.layer_fp32:
            config.set_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)
            keep = set(plan.layer_fp32)
            for i in range(network.num_layers):
                layer = network.get_layer(i)
                if layer.name in keep:
                    layer.precision = trt.float32
    if profiles:
        prof = builder.create_optimization_profile()
        for name, p in profiles.items():
            prof.set_shape(name, p["min"], p["opt"], p["max"])
        config.add_optimization_profile(prof)
        if plan.calib_cache and major < 11:
            config.set_calibration_profile(prof)
    blob = builder.build_serialized_network(network, config)
    if blob is None:
        raise ConversionError(f"TensorRT {trt.__version__} could not build the engine ({plan.describe()})",
                              hint="rerun with --verbose; see the TensorRT log above")
    (artifact_dir / engine_name).write_bytes(bytes(blob))
    return {"built": True, "tensorrt": trt.__version__, "route": plan.route, "onnx": plan.onnx,
            "engine": engine_name, "generation": str(major)}
