"""The device worker: measures one artifact on the machine it runs on.  ``python worker.py JOB.json`` or ``--probe``.

It is copied to the device (with ``latency_core.py`` beside it) and needs only the standard library, numpy and the
backend's runtime: no edgeconv, no torch.  The runners below map the artifact's manifest exactly as the host runners
in ``edgeconv/targets/{onnxruntime,ncnn,tflite,mnn}/runner.py`` do (reference names, NCHW with the batch axis, ncnn
blob table, TFLite NHWC and (de)quantization, MNN's NCHW host copies), so outputs from a device and from the host are
comparable value for value; ``tests/devices`` checks they are identical when both run the same runtime.  It is one
file (over 400 lines) on purpose: it is exactly what a device receives, with nothing of edgeconv to import.

Job (JSON, paths relative to the job file's folder unless absolute): ``artifact`` (folder with manifest.json),
``feeds`` (npz: ``__names__`` + ``s<i>__<j>``), ``result`` (npz to write), ``latency`` (LatencyConfig fields),
``threads``, ``affinity`` (CPU list), ``skip_latency``, ``deadline_s``.  The result is ONE file: the outputs as
``s<i>__<j>`` plus ``__names__`` and ``__result__`` (the JSON record the host harness's worker returns), written
atomically so a host never reads half a result.  ``deadline_s`` arms SIGALRM with its default action: the kernel
ends the process even when native code holds the GIL, so a hung runtime leaves nothing running on the device.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import signal
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np

if __package__:
    from . import latency_core as lc
else:  # run as a script on the device: latency_core.py is copied beside this file
    import latency_core as lc  # type: ignore[no-redef]

RUNTIMES = ("numpy", "onnxruntime", "ncnn", "ai_edge_litert", "tflite_runtime", "MNN")
DISTRIBUTIONS = {"numpy": "numpy", "onnxruntime": "onnxruntime", "ncnn": "ncnn", "ai_edge_litert": "ai-edge-litert",
                 "tflite_runtime": "tflite-runtime", "MNN": "MNN"}
# aarch64 AT_HWCAP / AT_HWCAP2 bits (linux/arch/arm64/include/uapi/asm/hwcap.h): the features ARM kernels pick on.
_HWCAP = {"fp": 0, "asimd": 1, "aes": 3, "crc32": 7, "atomics": 8, "fphp": 9, "asimdhp": 10, "asimdrdm": 12,
          "asimddp": 20, "sve": 22, "asimdfhm": 23}
_HWCAP2 = {"sve2": 1, "i8mm": 13, "bf16": 14}
FEATURES = ("asimd", "fphp", "asimdhp", "asimddp", "asimdfhm", "i8mm", "bf16", "sve", "sve2",
            "avx2", "fma", "f16c", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8")


class WorkerError(Exception):
    """A failure the host shows as this row's one-line error."""


# --- environment -------------------------------------------------------------------------------------------------


def _hwcaps() -> set[str]:
    """Features from the auxiliary vector: what the (possibly emulated) CPU offers to this process.

    /proc/cpuinfo is the host's under qemu-user, but AT_HWCAP is the emulated CPU's, and it is what ncnn, XNNPACK
    and ONNX Runtime dispatch on."""
    if platform.machine() not in ("aarch64", "arm64"):
        return set()
    try:
        import ctypes

        libc = ctypes.CDLL(None)
        libc.getauxval.restype = ctypes.c_ulong
        libc.getauxval.argtypes = [ctypes.c_ulong]
        h1, h2 = int(libc.getauxval(16)), int(libc.getauxval(26))
    except (OSError, AttributeError):
        return set()
    return {n for n, b in _HWCAP.items() if h1 >> b & 1} | {n for n, b in _HWCAP2.items() if h2 >> b & 1}


def cpu_features() -> dict[str, Any]:
    flags: set[str] = set()
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, val = line.partition(":")
                key = key.strip()
                if key in ("flags", "Features"):
                    flags.update(val.split())
                elif key in ("model name", "CPU part") and not model:
                    model = val.strip()
    except OSError:
        pass
    hw = _hwcaps()
    source = "hwcap" if hw else "cpuinfo"
    have = hw or flags
    return {"model": model, "source": source, "features": sorted(f for f in FEATURES if f in have),
            "fp16_arithmetic": "asimdhp" in have, "dotprod": "asimddp" in have, "i8mm": "i8mm" in have}


def _version(module: str) -> str | None:
    try:
        from importlib.metadata import PackageNotFoundError, version

        try:
            return version(DISTRIBUTIONS.get(module, module))
        except PackageNotFoundError:
            return version(module.lower())
    except Exception:  # noqa: BLE001 - a version is informative only
        return None


def probe(modules: list[str] | None = None) -> dict[str, Any]:
    """What ``edgeconv devices check`` shows: Python, architecture, CPU features, which runtimes import."""
    runtimes: dict[str, Any] = {}
    for m in modules or list(RUNTIMES):
        try:
            __import__(m)
            runtimes[m] = {"ok": True, "version": _version(m)}
        except BaseException as e:  # noqa: BLE001 - a runtime that fails to import is a finding, not a crash
            runtimes[m] = {"ok": False, "error": f"{type(e).__name__}: {' '.join(str(e).split())[:200]}"}
    return {"python": platform.python_version(), "executable": sys.executable, "arch": platform.machine(),
            "system": f"{platform.system()} {platform.release()}", "hostname": platform.node(),
            "cpus": os.cpu_count(), "cpu": cpu_features(), "runtimes": runtimes}


def _rss_mb() -> float | None:
    try:
        with open(f"/proc/{os.getpid()}/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError):
        return None


def _peak_rss_mb() -> float:
    """VmHWM of this process (as the host worker measures it); ru_maxrss where /proc is missing."""
    try:
        with open(f"/proc/{os.getpid()}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024


# --- runners (the device-side twins of edgeconv/targets/*/runner.py) ------------------------------------------------


class OrtRunner:
    """targets/onnxruntime/runner.py: CPU EP, full graph optimisation, intra-op threads when given."""

    def __init__(self, art: Path, mf: dict[str, Any], threads: int | None) -> None:
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.log_severity_level = 3
        if threads:
            so.intra_op_num_threads = threads
            so.inter_op_num_threads = 1
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(str(art / mf["roles"]["model"]), so, providers=["CPUExecutionProvider"])
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.input_names = [i.name for i in self.session.get_inputs()]

    def infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        outs = self.session.run(self.output_names, {n: feeds[n] for n in self.input_names})
        return dict(zip(self.output_names, outs))

    def close(self) -> None:
        self.session = None


def _static(shape: list[Any]) -> tuple[int, ...]:
    """TensorSpec.static_shape: dynamic axes as 1."""
    return tuple(d if isinstance(d, int) and d > 0 else 1 for d in shape)


class NcnnRunner:
    """targets/ncnn/runner.py: every precision switch set explicitly, one sample at a time, blob table mapping."""

    def __init__(self, art: Path, mf: dict[str, Any], threads: int | None) -> None:
        import ncnn

        self.ncnn = ncnn
        conv = mf["conversion"]
        runtime = conv.get("runtime", {})
        blobs = conv["blobs"]
        self.inputs = {s["name"]: (blobs["inputs"][s["name"]], _static(s["shape"])) for s in mf["inputs"]}
        self.outputs = {s["name"]: (blobs["outputs"][s["name"]], tuple(conv["output_shapes"][s["name"]]))
                        for s in mf["outputs"]}
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
        if not runtime.get("winograd", True):
            opt.use_winograd_convolution = False
            opt.use_winograd23_convolution = False
            opt.use_winograd43_convolution = False
            opt.use_winograd63_convolution = False
        opt.use_vulkan_compute = False
        if threads:
            opt.num_threads = int(threads)
        self.light_mode = bool(runtime.get("light_mode", True))
        self.net = ncnn.Net()
        self.net.opt = opt
        roles = mf["roles"]
        if self.net.load_param(str(art / roles["model"])) != 0 or self.net.load_model(str(art / roles["weights"])) != 0:
            raise WorkerError(f"ncnn could not load {roles['model']} / {roles['weights']}")

    def _one(self, sample: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        ex = self.net.create_extractor()
        ex.set_light_mode(self.light_mode)
        # ncnn.Mat(array) wraps the buffer without keeping it alive or counting references (in light mode a layer
        # working in place on the input crashed on such a Mat): each input is a clone ncnn owns, the extractor its
        # only holder. The wrapped array is held until the clone is made.
        for name, (blob, _) in self.inputs.items():
            held = np.ascontiguousarray(sample[name], dtype=np.float32)
            ex.input(blob, self.ncnn.Mat(held).clone())
            del held
        out = {}
        for name, (blob, _) in self.outputs.items():
            ret, mat = ex.extract(blob)
            if ret != 0:
                raise WorkerError(f"ncnn could not compute output blob '{blob}' ({name}), code {ret}")
            out[name] = np.array(mat, dtype=np.float32, copy=True)
            del mat
        del ex  # before the net can be cleared
        return out

    def infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        first = feeds[next(iter(self.inputs))]
        batch = first.shape[0] if first.ndim >= 1 else 1
        per = [self._one({n: feeds[n][b] for n in self.inputs}) for b in range(batch)]
        result = {}
        for name, (blob, shape) in self.outputs.items():
            sample_shape = tuple(shape[1:]) if len(shape) >= 1 else ()
            parts = []
            for p in per:
                a = p[name]
                if any(d <= 0 for d in sample_shape) and a.ndim == len(sample_shape) and all(
                        d <= 0 or d == g for d, g in zip(sample_shape, a.shape)):
                    parts.append(a)  # an open dim (--dynamic spatial): the mat's own size
                    continue
                if a.size != int(np.prod(sample_shape)):
                    raise WorkerError(f"ncnn output '{blob}' ({name}) has shape {a.shape}, the reference "
                                      f"{tuple(shape)} needs {int(np.prod(sample_shape))} values per sample")
                parts.append(a.reshape(sample_shape))
            result[name] = np.stack(parts, 0)
        return result

    def close(self) -> None:
        if getattr(self, "net", None) is not None:
            self.net.clear()
            self.net = None


class TfliteRunner:
    """targets/tflite/runner.py: ai-edge-litert (else tflite-runtime), NHWC transposes, int I/O (de)quantized."""

    def __init__(self, art: Path, mf: dict[str, Any], threads: int | None) -> None:
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError:
            from tflite_runtime.interpreter import Interpreter  # type: ignore[import-not-found,no-redef]
        kw: dict[str, Any] = {"num_threads": threads} if threads else {}
        self.interpreter = Interpreter(model_path=str(art / mf["roles"]["model"]), **kw)
        self.interpreter.allocate_tensors()
        io = (mf.get("conversion") or {}).get("io")
        if not io:
            raise WorkerError("the tflite artifact records no conversion.io table (name/layout mapping)")
        sigs = self.interpreter.get_signature_list()
        sig = self.interpreter.get_signature_runner(io.get("signature") or next(iter(sigs)))
        sig_in, sig_out = sig.get_input_details(), sig.get_output_details()
        del sig  # indices only: a live SignatureRunner blocks invoke() and re-allocates on every call
        self.inputs, self.outputs = io["inputs"], io["outputs"]
        self._in = [int(sig_in[r["tflite"]]["index"]) for r in self.inputs]
        self._out = [int(sig_out[r["tflite"]]["index"]) for r in self.outputs]
        self._shapes = [tuple(int(d) for d in sig_in[r["tflite"]]["shape"]) for r in self.inputs]

    def infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        it, args = self.interpreter, []
        for r in self.inputs:
            x = np.asarray(feeds[r["reference"]])
            if r["layout"] == "NHWC":
                x = np.transpose(x, (0, 2, 3, 1))
            if np.issubdtype(np.dtype(r["dtype"]), np.integer) and r["scale"]:
                info = np.iinfo(r["dtype"])
                q = np.round(x.astype(np.float32) / r["scale"]) + r["zero_point"]
                x = np.clip(q, info.min, info.max).astype(r["dtype"])
            args.append(np.ascontiguousarray(x, dtype=r["dtype"]))
        if [a.shape for a in args] != self._shapes:
            for i, a in zip(self._in, args, strict=True):
                it.resize_tensor_input(i, list(a.shape))
            it.allocate_tensors()
            self._shapes = [a.shape for a in args]
        for i, a in zip(self._in, args, strict=True):
            it.set_tensor(i, a)  # a copy into the interpreter's buffer
        it.invoke()
        out: dict[str, np.ndarray] = {}
        for r, i in zip(self.outputs, self._out, strict=True):
            y = it.get_tensor(i)  # a copy
            if np.issubdtype(y.dtype, np.integer) and r["scale"]:
                y = ((y.astype(np.float32) - r["zero_point"]) * r["scale"]).astype(np.float32)
            if r["layout"] == "NHWC":
                y = np.ascontiguousarray(np.transpose(y, (0, 3, 1, 2)))
            out[r["reference"]] = y
        return out

    def close(self) -> None:
        self.interpreter = None


class MnnRunner:
    """targets/mnn/runner.py: session API on the CPU backend, explicit threads and precision mode, NCHW host copies."""

    def __init__(self, art: Path, mf: dict[str, Any], threads: int | None) -> None:
        import MNN

        self.MNN = MNN
        conv = mf["conversion"]
        runtime = {k: v for k, v in (conv.get("runtime") or {}).items() if v is not None}
        opts = (mf.get("profile") or {}).get("options") or {}
        cfg: dict[str, Any] = {"backend": "CPU", "numThread": int(threads) if threads else (os.cpu_count() or 1),
                               "precision": runtime.get("precision_mode") or opts.get("precision_mode") or "normal"}
        memory = runtime.get("memory_mode") or opts.get("memory_mode")
        if memory:
            cfg["memory"] = memory
        self.interpreter = MNN.Interpreter(str(art / mf["roles"]["model"]))
        self.session = self.interpreter.createSession(cfg)
        self.io = conv["io"]
        self.shapes: dict[str, tuple[int, ...]] = {}

    def infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        MNN, itp = self.MNN, self.interpreter
        changed = False
        for ref, name in self.io["inputs"].items():  # reshape when the batch (or a dynamic axis) changes
            shape = tuple(int(d) for d in feeds[ref].shape)
            if self.shapes.get(ref) != shape:
                t = itp.getSessionInput(self.session, name)
                if tuple(t.getShape()) != shape:
                    itp.resizeTensor(t, shape)
                    changed = True
                self.shapes[ref] = shape
        if changed:
            itp.resizeSession(self.session)
        hosts = []  # the host tensors wrap these buffers: kept alive until runSession returns
        for ref, name in self.io["inputs"].items():
            x = np.ascontiguousarray(feeds[ref], dtype=np.float32).copy()
            host = MNN.Tensor(x.shape, MNN.Halide_Type_Float, x, MNN.Tensor_DimensionType_Caffe)
            itp.getSessionInput(self.session, name).copyFrom(host)
            hosts.append((x, host))
        itp.runSession(self.session)
        out = {}
        for ref, name in self.io["outputs"].items():
            t = itp.getSessionOutput(self.session, name)
            shape = tuple(t.getShape())
            host = MNN.Tensor(shape, MNN.Halide_Type_Float, np.zeros(shape, np.float32), MNN.Tensor_DimensionType_Caffe)
            t.copyToHostTensor(host)
            out[ref] = np.array(host.getNumpyData(), dtype=np.float32, copy=True).reshape(shape)
        del hosts
        return out

    def close(self) -> None:
        if getattr(self, "session", None) is not None:
            release = getattr(self.interpreter, "releaseSession", None)
            if release is not None:
                release(self.session)
            self.session = None
            self.interpreter = None


RUNNERS = {"onnxruntime": OrtRunner, "ncnn": NcnnRunner, "tflite": TfliteRunner, "mnn": MnnRunner}
RUNTIME_OF = {"onnxruntime": "onnxruntime", "ncnn": "ncnn", "tflite": "ai_edge_litert", "mnn": "MNN"}
#: backends whose runner takes any one of several runtimes (TfliteRunner: ai-edge-litert, else tflite-runtime)
RUNTIME_CHOICES = {"tflite": ("ai_edge_litert", "tflite_runtime")}


def open_runner(art: Path, threads: int | None = None) -> tuple[Any, dict[str, Any]]:
    mf = json.loads((art / "manifest.json").read_text())
    target = mf.get("target")
    cls = RUNNERS.get(target)
    if cls is None:
        raise WorkerError(f"the device worker has no runner for {target} artifacts (it runs {', '.join(RUNNERS)})")
    try:
        return cls(art, mf, threads), mf
    except ImportError as e:
        raise WorkerError(f"the {RUNTIME_OF.get(target, target)} runtime is not installed on this device ({e})") from e


# --- feeds and results -------------------------------------------------------------------------------------------


def load_tensors(path: Path) -> list[dict[str, np.ndarray]]:
    """``edgeconv.bench.worker.save_feeds``'s format: ``__names__`` plus ``s<i>__<j>``."""
    with np.load(path, allow_pickle=False) as z:
        names = json.loads(str(z["__names__"]))
        n = sum(1 for k in z.files if k.endswith("__0"))
        return [{name: z[f"s{i}__{j}"] for j, name in enumerate(names)} for i in range(n)]


def write_result(path: Path, record: dict[str, Any], outputs: list[dict[str, np.ndarray]]) -> None:
    names = list(outputs[0]) if outputs else []
    arrays = {f"s{i}__{j}": o[n] for i, o in enumerate(outputs) for j, n in enumerate(names)}
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, __names__=np.array(json.dumps(names)), __result__=np.array(json.dumps(record, default=float)),
             **arrays)
    os.replace(tmp, path)


def run_job(job: dict[str, Any], base: Path) -> tuple[dict[str, Any], list[dict[str, np.ndarray]]]:
    """Cold start, warm-up + latency, peak RSS, then the evaluation outputs: the host worker's record."""
    cfg = lc.config(job.get("latency"))
    threads = job.get("threads") or None
    if job.get("affinity") and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, [int(c) for c in job["affinity"]])
    feeds = load_tensors(base / job["feeds"])
    if not feeds:
        raise WorkerError("no inputs were sent")
    rss_before = _rss_mb()
    t0 = time.perf_counter()
    runner, _ = open_runner(base / job["artifact"], threads)
    t_load = time.perf_counter()
    first = runner.infer(feeds[0])
    t_first = time.perf_counter()
    res: dict[str, Any] = {
        "ok": True, "runner": f"device:{type(runner).__name__}", "proxy": False, "threads": threads, "pid": os.getpid(),
        "cold_start_ms": {"load": (t_load - t0) * 1e3, "first_inference": (t_first - t_load) * 1e3,
                          "total": (t_first - t0) * 1e3},
        "rss_before_mb": rss_before,
    }
    try:
        if not job.get("skip_latency"):
            feed = feeds[0]
            res["latency_ms"] = lc.run_latency(lambda: runner.infer(feed), cfg)
        res["peak_rss_mb"] = _peak_rss_mb()
        res["rss_after_mb"] = _rss_mb()
        outs = [first]
        infer_ms = []
        for f in feeds[1:]:
            ts = time.perf_counter_ns()
            outs.append(runner.infer(f))
            infer_ms.append((time.perf_counter_ns() - ts) / 1e6)
        if infer_ms:
            s = lc.summarize(infer_ms)
            res["eval_inference_ms"] = {k: s[k] for k in ("p50", "mean", "n")}
    finally:
        runner.close()
    if affinity := getattr(os, "sched_getaffinity", None):
        res["affinity"] = sorted(affinity(0))
    return res, outs


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--probe"]:
        print(json.dumps(probe(argv[1:] or None)))
        return 0
    if len(argv) != 1:
        print("usage: python worker.py JOB.json | --probe [MODULE ...]", file=sys.stderr)
        return 2
    job_path = Path(argv[0])
    job = json.loads(job_path.read_text())
    if job.get("deadline_s"):
        signal.signal(signal.SIGALRM, signal.SIG_DFL)
        signal.alarm(max(1, int(job["deadline_s"])))
    base = job_path.parent
    try:
        res, outs = run_job(job, base)
        code = 0
    except BaseException as e:  # noqa: BLE001 - every failure must reach the host as one line
        msg = " ".join(str(e).split())[:500]
        res = {"ok": False, "error": msg if isinstance(e, WorkerError) else f"{type(e).__name__}: {msg}",
               "kind": type(e).__name__, "traceback": traceback.format_exc()}
        outs, code = [], 1
    res["env"] = probe([m for m in ("numpy", job.get("runtime")) if m])
    write_result(base / job["result"], res, outs)
    return code


if __name__ == "__main__":
    sys.exit(main())
