"""ncnn runner: the pip ``ncnn`` bindings behind the harness's NCHW-with-batch, reference-named interface.

ncnn Mats have no batch axis (CHW) and pnnx renames blobs (``in0``, ``out0`` ...), so the runner feeds one sample
at a time, maps names through the artifact's recorded blob table and reshapes each result to the reference output
shape (a size mismatch is an error, never a silent reshape of different data).  Runtime options (fp16 storage /
arithmetic, int8 inference, light mode) come from the artifact, because ncnn's defaults (fp16 storage, bf16 on
some CPUs) would otherwise change numerics behind the precision the artifact claims.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np

from edgeconv.core.errors import ConversionError, VerificationError
from edgeconv.core.isolate import in_forked_child
from edgeconv.core.lazy import require
from edgeconv.targets.base import Runner


def make_option(ncnn: Any, runtime: dict[str, Any], threads: int | None) -> Any:
    """An ncnn.Option with every precision switch set explicitly (never the library's defaults)."""
    opt = ncnn.Option()
    fp16 = bool(runtime.get("fp16_storage", False))
    opt.use_fp16_storage = fp16
    opt.use_fp16_packed = fp16
    opt.use_fp16_arithmetic = bool(runtime.get("fp16_arithmetic", False))
    opt.use_bf16_storage = False
    if hasattr(opt, "use_bf16_packed"):
        opt.use_bf16_packed = False
    opt.use_int8_inference = bool(runtime.get("int8", False))
    opt.lightmode = bool(runtime.get("light_mode", True))
    if not runtime.get("winograd", True):  # int8 weights quantized to 8 bits everywhere: no Winograd kernels
        opt.use_winograd_convolution = False
        opt.use_winograd23_convolution = False
        opt.use_winograd43_convolution = False
        opt.use_winograd63_convolution = False
    opt.use_vulkan_compute = False
    if in_forked_child() and "torch" in sys.modules:
        threads = 1  # see core.isolate.in_forked_child(); verification numerics do not depend on it
    if threads:
        opt.num_threads = int(threads)
    return opt


#: ncnn layers whose output is always a new buffer computed from their input: an input read only by these can be
#: a Mat wrapping the caller's array. Others may work in place (ReLU, BinaryOp with a scalar, Scale ...) or pass
#: their input on as a view (Split, Reshape, a no-op Crop/Padding/Interp/Permute) to a layer that does: those
#: inputs get a copy the Mat owns.
NEW_BUFFER = frozenset({"Convolution", "ConvolutionDepthWise", "Deconvolution", "DeconvolutionDepthWise",
                        "Convolution1D", "InnerProduct", "Gemm", "Reorg", "PixelShuffle"})


def wrappable_inputs(param: Path, blobs: list[str]) -> frozenset[str]:
    """The input blobs whose every consumer in ``param`` is in NEW_BUFFER (empty when the file cannot be read:
    then every input is copied, the safe side)."""
    from edgeconv.targets.ncnn.ncnnfile import parse_param

    try:
        layers, _ = parse_param(param.read_text())
    except Exception:  # noqa: BLE001 - unreadable here means "copy": ncnn itself reports a broken file
        return frozenset()
    ok = set(blobs)
    for la in layers:
        for b in la.bottoms:
            if b in ok and la.type not in NEW_BUFFER:
                ok.discard(b)
    return frozenset(ok)


def missing_layers(ncnn: Any, param: Path) -> list[str]:
    """Layer types of ``param`` this ncnn build cannot create (pnnx writes layers, e.g. ArgMax, that the pip
    wheel is built without: ``load_param`` then fails with only "layer ArgMax not exists or registered" on stderr)."""
    from edgeconv.targets.ncnn.ncnnfile import parse_param

    try:
        layers, _ = parse_param(param.read_text())
    except Exception:  # noqa: BLE001 - an unparsable file is reported by the caller as such
        return []
    return sorted({la.type for la in layers if ncnn.create_layer(la.type) is None})


class NcnnRunner(Runner):
    def __init__(self, param: Path | str, bin_: Path | str, *, inputs: dict[str, tuple[str, tuple[int, ...]]],
                 outputs: dict[str, tuple[str, tuple[int, ...]]], runtime: dict[str, Any] | None = None,
                 threads: int | None = None, **_: Any) -> None:
        """``inputs``/``outputs``: reference name → (ncnn blob name, reference shape with batch)."""
        self.ncnn = require("ncnn", "ncnn")
        self.net = self.ncnn.Net()
        self.net.opt = make_option(self.ncnn, runtime or {}, threads)
        if self.net.load_param(str(param)) != 0:
            missing = missing_layers(self.ncnn, Path(param))
            if missing:
                raise ConversionError(
                    f"this ncnn build has no {', '.join(missing)} layer: the converted net cannot run here",
                    hint="compute it outside the model (e.g. argmax in post-processing) or choose another target")
            raise VerificationError(f"ncnn could not load {Path(param).name} (ncnn rejected the .param file)")
        if self.net.load_model(str(bin_)) != 0:
            raise VerificationError(f"ncnn could not load the weights {Path(bin_).name} for {Path(param).name}")
        self.inputs, self.outputs = inputs, outputs
        self._wrap = wrappable_inputs(Path(param), [blob for blob, _ in inputs.values()])
        # per-sample sizes of static outputs; an output with open dims (--dynamic spatial) takes the mat's own
        self._sizes = {name: int(np.prod(shape[1:], dtype=np.int64)) if _static(shape[1:]) else None
                       for name, (_, shape) in outputs.items()}
        self.light_mode = bool((runtime or {}).get("light_mode", True))

    @classmethod
    def from_artifact(cls, artifact: Any, threads: int | None = None, **kw: Any) -> NcnnRunner:
        conv = artifact.manifest["conversion"]
        blobs = conv["blobs"]
        ins = {s.name: (blobs["inputs"][s.name], tuple(s.static_shape)) for s in artifact.inputs}
        outs = {s.name: (blobs["outputs"][s.name], tuple(conv["output_shapes"][s.name])) for s in artifact.outputs}
        return cls(artifact.file("model"), artifact.file("weights"), inputs=ins, outputs=outs,
                   runtime={**conv.get("runtime", {}), **kw.pop("runtime", {})}, threads=threads, **kw)

    def _one(self, sample: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        ex = self.net.create_extractor()
        ex.set_light_mode(self.light_mode)
        # ncnn.Mat(array) wraps the array's buffer without holding a reference to it: a temporary from
        # np.ascontiguousarray (a non-contiguous or Fortran-order input) was freed before extract() read it (max abs
        # 1e15 on a correct model). So every buffer a Mat wraps is held in ``owned`` until extraction ends: the
        # caller's own array when it already is C-contiguous float32 (no copy: extract() returns before the caller
        # can touch it again), else a C-contiguous float32 copy. A wrapped Mat has no reference count, and in light
        # mode a layer that works in place on its input dereferences it (SIGSEGV) or would write into the caller's
        # array: inputs not read only by shape-changing layers get a Mat that owns a copy (see wrappable_inputs).
        owned = {name: np.ascontiguousarray(sample[name], dtype=np.float32) for name in self.inputs}
        for name, (blob, _) in self.inputs.items():
            mat = self.ncnn.Mat(owned[name])
            ex.input(blob, mat if blob in self._wrap else mat.clone())
            del mat  # a clone's only reference is then the extractor's: in place on it, never cloned again
        out = {}
        for name, (blob, _) in self.outputs.items():
            ret, mat = ex.extract(blob)
            if ret != 0:
                raise VerificationError(f"ncnn could not compute output blob '{blob}' ({name}), code {ret}")
            out[name] = np.array(mat, dtype=np.float32, copy=True)
            del mat
        del ex, owned  # before the net can be cleared (ncnn aborts on a pool allocator destroyed while in use)
        return out

    def infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        first = feeds[next(iter(self.inputs))]
        batch = first.shape[0] if first.ndim >= 1 else 1
        per = [self._one({n: feeds[n][b] for n in self.inputs}) for b in range(batch)]
        result = {}
        for name, (blob, ref_shape) in self.outputs.items():
            size = self._sizes[name]
            shape = list(ref_shape)
            for p in per:
                if size is None:  # open dims: the mat's own, where its rank and static dims agree
                    got = p[name].shape
                    if len(got) != len(shape) - 1 or any(_static([w]) and w != g for w, g in zip(shape[1:], got)):
                        raise VerificationError(f"ncnn output '{blob}' ({name}) has shape {got}, the reference "
                                                f"{tuple(ref_shape)} (open dims as -1)")
                    shape = [shape[0], *got]
                elif p[name].size != size:
                    raise VerificationError(f"ncnn output '{blob}' ({name}) has shape {p[name].shape}, the reference "
                                            f"{tuple(shape)} needs {size} values per sample")
            # Each part is already a copy this call owns: one sample needs no second copy by np.stack. (Reshaping
            # it straight to the batched shape, not to the sample's and then adding the axis, measured 1-2 % of a
            # 9 ms detector in benchmarks/runner_overhead.py.)
            result[name] = per[0][name].reshape((1, *shape[1:])) if batch == 1 else np.stack(
                [p[name].reshape(shape[1:]) for p in per], 0)
        return result

    def close(self) -> None:
        if getattr(self, "net", None) is not None:
            self.net.clear()
            self.net = None


def _static(dims: Any) -> bool:
    """Whether every dim is a known size (a manifest writes an open one as -1 or a name)."""
    return all(isinstance(d, int) and d > 0 for d in dims)
