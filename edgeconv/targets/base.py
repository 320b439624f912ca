"""The two interfaces every backend implements: a Target (convert + make a runner) and a Runner (infer).

Runners take and return tensors named and laid out as the reference ONNX does (NCHW, batch axis kept), so the
harness compares every backend like for like; a backend with another convention (NHWC, no batch axis, quantized
I/O) converts inside its runner.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from edgeconv.core.errors import ConfigError
from edgeconv.core.lazy import available

if TYPE_CHECKING:
    from edgeconv.calibration.dataset import CalibrationSet
    from edgeconv.core.artifact import Artifact
    from edgeconv.export.reference import ReferenceModel
    from edgeconv.profiles import Profile


@dataclass(frozen=True)
class Option:
    """One backend option: its type, default and one-line help. Every key a target reads must be declared.

    Declaring options lets ``edgeconv targets --json``, the CLI and profile validation know them, and turns a typo
    in a profile's ``[options]`` into a config error naming the valid keys instead of a silently ignored setting.
    """

    type: type | tuple[type, ...]
    default: Any
    help: str
    choices: tuple[Any, ...] | None = None

    def check(self, name: str, value: Any, where: str) -> Any:
        """Return ``value`` coerced to the declared type, or raise a ConfigError naming the key and its type."""
        if value is None:
            return None
        types = self.type if isinstance(self.type, tuple) else (self.type,)
        if float in types and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if tuple in types and isinstance(value, list):
            value = tuple(value)
        if list in types and isinstance(value, tuple):
            value = list(value)
        ok = isinstance(value, types) and not (isinstance(value, bool) and bool not in types)
        if not ok:
            tn = "/".join(t.__name__ for t in types)
            raise ConfigError(f"{where}: option '{name}' must be {tn}, not {type(value).__name__} ({value!r})",
                              hint=f"{name}: {self.help}")
        if self.choices is not None and value not in self.choices:
            raise ConfigError(f"{where}: option '{name}' = {value!r} is not one of {list(self.choices)}",
                              hint=f"{name}: {self.help}")
        return value

    def to_dict(self) -> dict[str, Any]:
        types = self.type if isinstance(self.type, tuple) else (self.type,)
        return {"type": "/".join(t.__name__ for t in types), "default": self.default, "help": self.help,
                "choices": list(self.choices) if self.choices is not None else None}


#: Options the pipeline itself reads for every backend (routes, budgets, calibration), valid on any target.
COMMON_OPTIONS: dict[str, Option] = {
    "route": Option(str, None, "conversion route where the backend has several (see `edgeconv targets --json`)"),
    "calib_method": Option(str, None, "activation statistics for INT8", choices=("minmax", "entropy", "percentile")),
    "max_drop": Option(float, None, "accuracy budget for reduced precisions (task metric points, 0.01 = 1 point)"),
    "timeout_s": Option(float, 1800.0, "time limit of one isolated conversion + verification, in seconds"),
    "int8_fallback": Option(bool, True, "an INT8 row over its task budget searches for the fewest layers to keep "
                            "in float (edgeconv.quant) instead of failing"),
    "int8_fallback_attempts": Option(int, 12, "conversions the float-fallback search may spend"),
    "int8_fallback_max_float": Option(float, 0.5, "largest share of the quantizable layers the float-fallback "
                                      "search may keep in float (beyond it the artifact is no INT8 model: refused)"),
    "int8_fallback_time_s": Option(float, 900.0, "seconds after which the float-fallback search starts no new "
                                   "attempt (the best keep set found so far stands)"),
    "device": Option(str, None, "device (name or .toml, see `edgeconv devices list`) the artifact is also verified "
                     "on; default: the first usable device serving the profile"),
}


@dataclass
class TaskEvaluator:
    """A task metric on held-out inputs, injected by the caller so targets never import bench or zoo.

    ``items`` are ``(feeds, label)`` pairs (feeds in the reference's names and layout); ``score`` maps the outputs
    of every item (reference names) and the labels to the metric, higher is better. ``fingerprint`` identifies
    the data and metric, so an artifact built under accuracy control is cached under the data that controlled it.
    """

    metric: str
    items: list[tuple[dict[str, np.ndarray], Any]]
    score: Callable[[list[dict[str, np.ndarray]], list[Any]], float]
    fingerprint: str
    meta: dict[str, Any] = field(default_factory=dict)
    #: the items are inputs the artifact was not fitted to (labelled evaluation data, disjoint from --calib), so
    #: its tensor drift is judged on them too; False for calibration-sample evaluators
    held_out: bool = False

    def evaluate(self, infer: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]) -> float:
        return float(self.score([infer(f) for f, _ in self.items], [label for _, label in self.items]))


@dataclass
class ConvertContext:
    """Everything a backend's convert() may use, and nothing else: targets never reach into the pipeline.

    ``out_dir`` is a fresh temp folder that becomes the artifact. The artifact's cache key is the hash of
    ``fingerprint()``, computed from these fields themselves, so a field added here cannot be left out of it;
    fields marked ``key: False`` are derived from the others (or are the output folder).
    """

    reference: ReferenceModel
    profile: Profile
    precision: str
    out_dir: Path = field(metadata={"key": False})
    calibration: CalibrationSet | None = None
    keep_fp32: tuple[str, ...] = ()
    options: dict[str, Any] = field(default_factory=dict)
    task: dict[str, Any] = field(default_factory=dict)  # bundled name, task, postprocess spec
    preprocess: Any = None  # the preprocessing contract (calibration's, else the model's); None when unknown
    keep_fp32_nodes: tuple[str, ...] = ()  # reference ONNX node names the keep_fp32 patterns matched
    evaluator: TaskEvaluator | None = None  # task metric on held-out data, when the caller has one
    #: Detections contract of an end2end artifact: {"spec": ..., "placement": ..., "stage": ...} (None: raw heads).
    postprocess: dict[str, Any] | None = None
    #: The device (name or file) the artifact is also verified on, with that device's own kernels (None: host only).
    device: str | None = None
    #: Derived from reference + calibration: a few real inputs and the reference's outputs on them.
    sample_feeds: list[dict[str, np.ndarray]] | None = field(default=None, metadata={"key": False})
    sample_outputs: list[dict[str, np.ndarray]] | None = field(default=None, metadata={"key": False})
    sample_kinds: list[str] | None = field(default=None, metadata={"key": False})  # real / contract / noise
    tools: dict[str, str | None] = field(default_factory=dict)  # backend tool versions (they change artifacts)

    def option(self, name: str, default: Any = None) -> Any:
        """A conversion option: the call's own first, then the profile's [options], then ``default``."""
        if name in self.options and self.options[name] is not None:
            return self.options[name]
        return self.profile.options.get(name, default)

    def blocking_samples(self) -> tuple[list[dict[str, np.ndarray]], list[dict[str, np.ndarray]]]:
        """The sample inputs (and reference outputs) a route is judged on: the realistic ones (real or made through
        the contract) when any exist. Uniform noise is an advisory check in verification — a correct model can
        amplify it far beyond its real drift — so it must not make a correct route look wrong inside a target either."""
        feeds, outs = list(self.sample_feeds or []), list(self.sample_outputs or [])
        kinds = list(self.sample_kinds or ["real"] * len(feeds))
        keep = [i for i, k in enumerate(kinds) if k != "noise"] or list(range(len(feeds)))
        return [feeds[i] for i in keep], [outs[i] for i in keep]

    def stage_files(self, name: str, parts: dict[str, Any],
                    build: Callable[[], dict[str, bytes]]) -> tuple[dict[str, bytes], bool]:
        """``(files, from_cache)``: intermediate files (name → bytes) that rows of one reference share — the fp32
        flatbuffer an fp16 TFLite is cast from — so converting a model to several precisions does the common work
        once. Keyed by the reference, this backend's tool versions, edgeconv's code and ``parts`` (what else
        the file depends on); read back only from an intact cache entry (``cache.lookup`` checks every file's
        hash), else built and stored. No precision, calibration or option beyond ``parts`` enters the key, so a
        caller passes everything its ``build`` reads. Whatever is made from the file is verified as any artifact."""
        import tempfile

        from edgeconv.core import cache
        from edgeconv.core.hashing import code_fingerprint, sha256_json

        key = sha256_json({"stage": name, "code": code_fingerprint(),
                           "reference": _plain(self.reference, "reference"), "tools": _plain(self.tools, "tools"),
                           "parts": _plain(parts, "parts")})
        with cache.building("stages", key):  # a concurrent row building the same stage: wait, then read it
            hit = cache.lookup("stages", key)
            if hit is not None:
                return {p.name: p.read_bytes() for p in hit.iterdir()
                        if p.is_file() and p.name not in (cache.INDEX, cache.COMPLETE)}, True
            files = build()
            with tempfile.TemporaryDirectory(prefix="edgeconv-stage-") as tmp:
                for fname, data in files.items():
                    (Path(tmp) / fname).write_bytes(data)
                cache.store("stages", key, Path(tmp))
        return files, False

    def statistics(self, method: str | None = None, params: dict[str, Any] | None = None) -> Any:
        """Shared activation statistics of the reference on the calibration sample (computed once, cached)."""
        from edgeconv.calibration.stats import compute_stats

        if self.calibration is None:
            raise ConfigError(f"{self.precision} needs calibration data", hint="pass --calib DIR")
        return compute_stats(Path(self.reference.onnx_path), self.reference.sha256, self.calibration,
                             method or self.option("calib_method", "minmax"), params)

    def fingerprint(self) -> dict[str, Any]:
        """Everything this context lets a target read, as plain data (the artifact cache key hashes it)."""
        out: dict[str, Any] = {}
        for f in fields(self):
            if f.metadata.get("key", True):
                out[f.name] = _plain(getattr(self, f.name), f.name)
        return out


def _plain(v: Any, where: str) -> Any:
    """Plain, deterministic data for hashing; an object that cannot say what it is fails loudly."""
    if v is None or isinstance(v, (str, int, float, bool)):
        return v
    if isinstance(v, Path):
        return str(v)
    if isinstance(v, (list, tuple)):
        return [_plain(x, where) for x in v]
    if isinstance(v, dict):
        return {str(k): _plain(x, f"{where}.{k}") for k, x in sorted(v.items(), key=lambda kv: str(kv[0]))}
    for attr in ("fingerprint", "key", "sha256"):
        x = getattr(v, attr, None)
        if isinstance(x, str):
            extra = {"len": len(v)} if attr == "key" and hasattr(v, "__len__") else {}
            if attr == "sha256" and hasattr(v, "inputs") and hasattr(v, "outputs"):
                extra = {"inputs": [s.to_dict() for s in v.inputs], "outputs": [s.to_dict() for s in v.outputs],
                         "dynamic": _plain(getattr(v, "dynamic_profiles", {}), where)}
            return {attr: x, **extra}
    if hasattr(v, "to_dict"):
        return _plain(v.to_dict(), where)
    if callable(v) and hasattr(v, "__qualname__"):  # a Python-API plug-in (validation function): by its name
        return {"callable": f"{getattr(v, '__module__', '?')}:{v.__qualname__}"}
    if isinstance(v, np.ndarray):
        return {"array_sha256": hashlib.sha256(np.ascontiguousarray(v).tobytes()).hexdigest(), "shape": list(v.shape)}
    raise TypeError(f"ConvertContext.{where}: {type(v).__name__} has no fingerprint/key/sha256/to_dict")


@dataclass
class ConversionResult:
    """What convert() produced: deployable files (relative to out_dir), their roles, and backend metadata."""

    files: list[str]
    roles: dict[str, str]
    meta: dict[str, Any] = field(default_factory=dict)
    input_layout: str = "NCHW"
    runnable_here: bool = True  # False: e.g. a TensorRT engine that can only be built on the device
    verify_note: str | None = None


class Runner(ABC):
    """Runs one artifact. A context manager; ``infer`` is called from one thread."""

    proxy: bool = False  # True when it runs a stand-in (e.g. TensorRT's Q/DQ ONNX on ONNX Runtime)

    def __enter__(self) -> Runner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:  # noqa: B027 - optional hook
        """Free runtime resources."""

    @abstractmethod
    def infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run once on reference-layout inputs; return reference-named, reference-layout outputs."""

    def infer_async(self, batch: list[dict[str, np.ndarray]], streams: int) -> list[dict[str, np.ndarray]]:
        """Throughput mode: several requests in flight where the backend supports it (default: sequential)."""
        return [self.infer(f) for f in batch]

    def compute(self, precision: str) -> dict[str, Any] | None:
        """What the runtime executes, where it says so: ``{"int8_path": "VNNI" | "no VNNI", "detail": str,
        "source": str}`` (and for float rows the precision it computes in). Reports print it beside each INT8
        row, because the same artifact is 1.5-2x faster on a CPU with VNNI. None (the default): the runtime picks
        its kernels without reporting them, and a report must not guess."""
        return None


class Target(ABC):
    """A backend. Subclasses set the class variables and implement convert() and runner()."""

    name: ClassVar[str]
    extra: ClassVar[str]  # pip extra that installs it: pip install 'edgeconv[<extra>]'
    modules: ClassVar[tuple[str, ...]]  # Python modules that must be importable to convert
    min_versions: ClassVar[dict[str, str]] = {}  # distribution -> lowest version known to work
    precisions: ClassVar[tuple[str, ...]] = ("fp32",)
    calibrated: ClassVar[tuple[str, ...]] = ("int8",)  # precisions that need calibration data
    routes: ClassVar[tuple[str, ...]] = ("onnx",)  # the first is the default; others are tried as fallbacks
    #: (option, value, what it gives): the backend's lighter INT8 route (weights only), which a refused INT8 row's
    #: hint names unless that row already took it; empty where the backend has none.
    int8_alternative: ClassVar[tuple[str, str, str] | tuple[()]] = ()
    needs_torch_module: ClassVar[bool] = False  # True: converts from the PyTorch module, not from ONNX
    options: ClassVar[dict[str, Option]] = {}  # every key convert()/runner() read through ctx.option()
    tools: ClassVar[tuple[str, ...]] = ()  # distributions whose versions go into doctor and reports
    isolate: ClassVar[bool] = True  # convert + verify in a child process (native code can crash or hang)
    #: Modules whose thread pools (OpenMP, TBB) do not survive a fork: when one is already loaded in this process,
    #: a forked child would hang in its first parallel region, so the row runs in-process instead (the CLI never
    #: loads a backend in the parent; library users who run backends in-process get no isolation for them).
    fork_unsafe_modules: ClassVar[tuple[str, ...]] = ()
    #: Heavy modules the conversion imports that are safe to hold across a fork (Python, or native code whose
    #: pools re-create themselves in the child, as OpenBLAS's do): imported here before an isolated child is
    #: forked, so the rows of one backend converted by one process (precisions, layouts, a plan worker's rows)
    #: import them once instead of once per child (litert-torch: ~4-8 s of CPU each time).
    preload_modules: ClassVar[tuple[str, ...]] = ()
    #: precision -> the precision whose shared stage (``ConvertContext.stage_files``) it is made from (TFLite fp16
    #: casts the fp32 lowering): a plan converts it after the heavy rows, when that stage is already cached.
    derived_from: ClassVar[dict[str, str]] = {}
    capabilities: ClassVar[frozenset[str]] = frozenset()  # e.g. "trt_calibration_cache", "nms_in_graph"
    environment: ClassVar[str | None] = None  # name of a backend environment of its own (see edgeconv.envs)
    #: precision -> why ``edgeconv demo`` leaves it out by default (still convertible with --precision).
    demo_skip: ClassVar[dict[str, str]] = {}
    description: ClassVar[str] = ""

    def available(self) -> bool:
        return all(available(m) for m in self.modules)

    def missing(self) -> list[str]:
        return [m for m in self.modules if not available(m)]

    def skip_reason(self, precision: str, device: str = "CPU") -> str | None:
        """Why ``precision`` cannot be made and verified on this machine (None when it can), asked before converting
        so a plan row is skipped with the reason instead of failing (e.g. bf16 on a CPU without bf16 units)."""
        return None

    def runs_here(self) -> tuple[bool, str]:
        """Whether artifacts can be executed on this machine (TensorRT overrides: needs an NVIDIA GPU)."""
        return (True, "") if self.available() else (False, f"missing {', '.join(self.missing())}")

    @abstractmethod
    def convert(self, ctx: ConvertContext) -> ConversionResult:
        """Write the artifact's files into ``ctx.out_dir``."""

    @abstractmethod
    def runner(self, artifact: Artifact, *, threads: int | None = None, **kw: Any) -> Runner:
        """A Runner for a converted (possibly not yet renamed-into-place) artifact."""

    def versions(self) -> dict[str, str | None]:
        """Versions of the modules and tools this backend depends on (part of every artifact's cache key)."""
        from edgeconv.core.lazy import version

        return {m: version(m) for m in dict.fromkeys((*self.modules, *self.tools))}

    @classmethod
    def option_schema(cls) -> dict[str, Option]:
        """The options valid for this backend: the common ones plus its own declarations."""
        return {**COMMON_OPTIONS, **cls.options}

    @classmethod
    def check_options(cls, options: dict[str, Any], where: str) -> dict[str, Any]:
        """Validate and coerce ``options``; unknown keys are a ConfigError naming the closest valid ones."""
        import difflib

        schema = cls.option_schema()
        out: dict[str, Any] = {}
        for k, v in options.items():
            if k not in schema:
                close = difflib.get_close_matches(k, list(schema), n=3)
                raise ConfigError(f"{where}: unknown option '{k}' for backend {cls.name}",
                                  hint=(f"did you mean {', '.join(close)}? " if close else "")
                                  + f"valid: {', '.join(sorted(schema))}")
            out[k] = schema[k].check(k, v, where)
        if out.get("route") is not None and out["route"] not in cls.routes:
            raise ConfigError(f"{where}: backend {cls.name} has no route '{out['route']}'",
                              hint=f"routes: {', '.join(cls.routes)}")
        return out


class OrtRunner(Runner):
    """ONNX Runtime on the CPU: the reference runtime every artifact is verified against, and the proxy for graphs
    a device builds (TensorRT's Q/DQ ONNX). It lives here, beside ``Runner``, because the pipeline and several
    targets need it and targets never import each other."""

    def __init__(self, model: Path | str, *, threads: int | None = None, optimize: str = "all",
                 providers: list[str] | None = None, **_: Any) -> None:
        from edgeconv.core.isolate import child_threads
        from edgeconv.core.lazy import require

        ort = require("onnxruntime", "onnxruntime")
        so = ort.SessionOptions()
        so.log_severity_level = 3
        threads = child_threads(threads)  # ORT's pools are not fork-safe: one thread in a forked child
        if threads:
            so.intra_op_num_threads = threads
            so.inter_op_num_threads = 1
        so.graph_optimization_level = {
            "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
            "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
            "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "none": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        }[optimize]
        self.session = ort.InferenceSession(str(model), so, providers=providers or ["CPUExecutionProvider"])
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.input_names = [i.name for i in self.session.get_inputs()]

    def infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        outs = self.session.run(self.output_names, {n: np.ascontiguousarray(feeds[n]) for n in self.input_names})
        return dict(zip(self.output_names, outs, strict=True))

    def compute(self, precision: str) -> dict[str, Any] | None:
        """INT8: MLAS's integer GEMM (behind QLinearConv / MatMulInteger) dispatches on the CPU's features at
        start-up, VNNI (``vpdpbusd``) where the CPU has it, ``vpmaddubsw`` otherwise; on arm64 the dot-product
        kernels. ORT does not report the choice itself, so this is that dispatch rule applied to this CPU."""
        if precision != "int8":
            return None
        import platform

        from edgeconv.core.env import isa_features

        if platform.machine().lower() not in ("x86_64", "amd64"):  # arm64: MLAS's dot-product kernels, not named
            return None
        vnni = bool(isa_features().get("VNNI"))
        return {"int8_path": "VNNI" if vnni else "no VNNI",
                "detail": "MLAS U8S8 " + ("VNNI (vpdpbusd)" if vnni else "AVX2/AVX-512 (vpmaddubsw; no VNNI)"),
                "source": "MLAS's dispatch on this CPU's features"}

    def close(self) -> None:
        self.session = None  # type: ignore[assignment]


def flat_module(module: Any) -> Any:
    """``module`` returning a flat tuple of tensors (dict/list/nested outputs flattened in order, the order the ONNX
    exporter gave the reference outputs): what torch-route converters (litert-torch, ExecuTorch) need."""
    import torch
    from torch.utils import _pytree

    class FlatOutputs(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, *args: torch.Tensor) -> tuple[torch.Tensor, ...]:
            return tuple(t for t in _pytree.tree_leaves(self.inner(*args)) if t is not None)  # as the reference

        def named_modules(self, memo: set | None = None, prefix: str = "",
                          remove_duplicate: bool = True) -> Any:
            """The module tree from the registries themselves: ``torch.export`` calls this on the root, and a
            user's model may shadow ``named_modules``/``modules``/``children`` with attributes of its own."""
            memo = set() if memo is None else memo
            stack = [(prefix, self)]
            while stack:
                name, m = stack.pop()
                if remove_duplicate:
                    if id(m) in memo:
                        continue
                    memo.add(id(m))
                yield name, m
                children = vars(m).get("_modules", {})
                stack.extend((f"{name}.{k}" if name else k, c) for k, c in reversed(list(children.items()))
                             if c is not None)

    return FlatOutputs(module)


def reference_items(onnx_path: Any, feeds: list[dict[str, np.ndarray]]) -> list[tuple[dict[str, np.ndarray], Any]]:
    """``(feed, the reference ONNX's outputs on it)`` pairs: the items of an evaluator whose labels are the
    reference's own answers (agreement and drift objectives without labelled data)."""
    with OrtRunner(onnx_path) as r:
        return [(f, r.infer(f)) for f in feeds]


def volumetric_ops(onnx_path: Any) -> list[str]:
    """Nodes of the reference with 3-D kernels (``MaxPool3d``/``Conv3d``/``AvgPool3d``, e.g. LPRNet's MaxPool3d over
    channels of a 4-D feature map): mobile converters (Core ML, RKNN) fail on them with messages that do not say
    so. ``"NAME (OP kernel a×b×c)"`` per node, for a one-line error."""
    try:
        import onnx

        model = onnx.load(str(onnx_path), load_external_data=False)
    except Exception:  # noqa: BLE001 - only an explanation: no graph, no note
        return []
    out = []
    for n in model.graph.node:
        if n.op_type in ("MaxPool", "AveragePool", "Conv", "ConvTranspose", "LpPool"):
            ks = next((list(a.ints) for a in n.attribute if a.name == "kernel_shape"), [])
            if len(ks) == 3:
                out.append(f"{n.name} ({n.op_type} kernel {'x'.join(map(str, ks))})")
    return out


def explain_volumetric(err: Any, onnx_path: Any, backend: str) -> Any:
    """``err`` (an EdgeconvError) with the 3-D ops of the graph named, when there are any."""
    found = volumetric_ops(onnx_path)
    if found:
        err.message = f"{err.message}; the graph has 3-D pooling/convolution {backend} does not take: " + \
            ", ".join(found[:3]) + ("" if len(found) <= 3 else f" (+{len(found) - 3} more)")
        err.hint = ("rewrite the 3-D op as 2-D over a reshaped tensor (e.g. MaxPool3d over channels = a 2-D pool "
                    "after moving channels into a spatial axis), or use another backend (onnxruntime, openvino, "
                    "ncnn, mnn took it)")
    return err

