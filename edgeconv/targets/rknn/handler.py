"""rknn-toolkit2 side of the RKNN target: runs inside the ``rknn`` backend environment, never in edgeconv's.

Self-contained (the toolkit, numpy and onnx only; no edgeconv import), because it is executed by the environment's
interpreter through ``edgeconv/envs/worker.py``.  Two entry points:

- ``convert(args, job_dir)``: ONNX → ``.rknn`` for ``args["platform"]`` (fp16, or INT8 with the toolkit's own
  quantizer on the dataset the host wrote), then ``init_runtime()`` with no target (the x86 simulator) to time a few
  inferences.  Parses the toolkit's layer table for the ops it placed on the CPU instead of the NPU.
- ``open_simulator(args, job_dir)``: the toolkit cannot simulate a ``.rknn`` read from a file ("RKNN model that
  loaded by 'load_rknn' not support inference on the simulator"), so verification rebuilds the model from the
  recorded recipe (same ONNX, config, dataset) and simulates that; it reports how the rebuilt file compares with
  the artifact (same size; a few hundred bytes differ between any two builds: host pointers the toolkit embeds).
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

# A row of the toolkit's layer table: id, op, dtype, target, in/out shapes, cycles, RW, full name.
_LAYER = re.compile(r"^\S*\s*RKNN:\s*\[[^\]]*\]\s+(\d+)\s+(\S+)\s+(\S+)\s+(CPU|NPU|GPU)"
                    r"\s+\S+\s+\S+\s+\S+\s+\S+\s+(\S+)")


class ToolkitError(Exception):
    """An expected failure, reported to the host as a ConversionError with this message."""

    kind = "conversion"

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint


def _rknn(verbose_file: Path | None = None) -> Any:
    from rknn.api import RKNN

    return RKNN(verbose=True, verbose_file=str(verbose_file) if verbose_file else None)


def _graph_ops(onnx_path: str) -> tuple[list[tuple[str, str, str]], list[str]]:
    """(op_type, node name, domain) of every node, and the ops outside the standard ONNX domains."""
    import onnx

    model = onnx.load(onnx_path, load_external_data=False)
    nodes = [(n.op_type, n.name, n.domain) for n in model.graph.node]
    foreign = sorted({f"{t} (domain {d})" for t, _, d in nodes if d not in ("", "ai.onnx")})
    return nodes, foreign


def _explain(stage: str, err: BaseException | int, onnx_path: str, log_text: str) -> ToolkitError:
    """One line naming the op the toolkit rejected, when its message (or the log) names one of the graph's ops."""
    nodes, foreign = _graph_ops(onnx_path)
    text = f"{type(err).__name__}: {err}" if isinstance(err, BaseException) else ""
    errors = [ln.strip() for ln in (text + "\n" + log_text).splitlines()
              if re.search(r"(Error|error|^E |\bE\b.*:)", ln) and "Traceback" not in ln and 'File "' not in ln]
    last = next((e for e in reversed(errors) if re.search(r"\w+Error: ", e)), errors[-1] if errors else "")
    last = re.sub(r"\x1b\[[0-9;]*m", "", last)[:300]
    named = [t for t, _, _ in nodes if re.search(rf"\b{re.escape(t)}\b", last)]
    if foreign:
        return ToolkitError(f"rknn-toolkit2 {stage} failed on op {foreign[0]}: not a standard ONNX op ({last})",
                            hint="replace the custom op with standard ONNX ops before converting")
    if named:
        return ToolkitError(f"rknn-toolkit2 {stage} rejected op {named[0]}: {last}",
                            hint="rewrite or remove that op (static shapes help), or keep it out of the graph")
    code = f" (return code {err})" if isinstance(err, int) else ""
    return ToolkitError(f"rknn-toolkit2 {stage} failed{code}: {last or 'see the toolkit log (--verbose)'}")


def _configure(rknn: Any, recipe: dict[str, Any]) -> None:
    ret = rknn.config(**recipe["config"])
    if ret != 0:
        raise ToolkitError(f"rknn.config({recipe['config']}) failed (return code {ret})")


def _build(rknn: Any, recipe: dict[str, Any], onnx_path: str, dataset: str | None, log_path: Path) -> None:
    _configure(rknn, recipe)
    _, foreign = _graph_ops(onnx_path)
    if foreign:
        raise ToolkitError(f"rknn-toolkit2 cannot convert op {foreign[0]}: not a standard ONNX op",
                           hint="replace the custom op with standard ONNX ops before converting")
    for stage, call in (("load_onnx", lambda: rknn.load_onnx(model=onnx_path)),
                        ("build", lambda: rknn.build(do_quantization=recipe["quantize"], dataset=dataset))):
        try:
            ret = call()
        except Exception as e:
            raise _explain(stage, e, onnx_path, _read(log_path)) from e
        if ret != 0:
            raise _explain(stage, ret, onnx_path, _read(log_path))


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def layer_table(log_text: str) -> list[dict[str, Any]]:
    """The toolkit's "Network Layer Information Table": one row per op with where it runs (NPU or CPU)."""
    rows = []
    for line in log_text.splitlines():
        m = _LAYER.match(line.strip())
        if m:
            rows.append({"id": int(m.group(1)), "op": m.group(2), "dtype": m.group(3), "target": m.group(4),
                         "name": m.group(5)})
    return rows


def _load_dataset(npz: Path, out_dir: Path) -> str:
    """Unpack the host's calibration arrays into the toolkit's dataset format: a text file of .npy paths.

    The paths are absolute: the toolkit resolves a relative line against the listing's own folder, so a relative job
    folder (the worker's) became ``dataset/dataset/00000.npy`` and every INT8 build failed with FileNotFoundError.
    """
    import numpy as np

    out_dir = out_dir.resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    lines = []
    with np.load(str(npz), allow_pickle=False) as z:
        for i, key in enumerate(sorted(z.files, key=lambda k: int(k[1:]))):
            p = out_dir / f"{i:05d}.npy"
            np.save(str(p), z[key].astype(np.float32))
            lines.append(str(p))
    listing = out_dir / "dataset.txt"
    listing.write_text("\n".join(lines) + "\n")
    return str(listing)


def _simulate(rknn: Any, feeds: list[Any], runs: int) -> dict[str, Any]:
    """Time ``runs`` simulator inferences (after one warm-up): host CPU time of a simulator, not of an NPU."""
    ret = rknn.init_runtime()
    if ret != 0:
        raise ToolkitError(f"rknn.init_runtime() (simulator) failed (return code {ret})")
    ms = []
    for i in range(runs + 1):
        t0 = time.perf_counter()
        rknn.inference(inputs=[feeds[i % len(feeds)]], data_format="nchw")
        if i:
            ms.append((time.perf_counter() - t0) * 1e3)
    ms.sort()
    return {"runs": len(ms), "p50": ms[len(ms) // 2], "min": ms[0], "max": ms[-1]} if ms else {"runs": 0}


def convert(args: dict[str, Any], job_dir: Path) -> dict[str, Any]:
    import numpy as np

    recipe, onnx_path, out = args["recipe"], args["onnx"], Path(args["out"])
    log_path = job_dir / "toolkit.log"
    dataset = _load_dataset(Path(args["dataset"]), job_dir / "dataset") if args.get("dataset") else None
    rknn = _rknn(log_path)
    t0 = time.perf_counter()
    try:
        _build(rknn, recipe, onnx_path, dataset, log_path)
        build_s = time.perf_counter() - t0
        ret = rknn.export_rknn(str(out))
        if ret != 0 or not out.is_file():
            raise ToolkitError(f"rknn.export_rknn failed (return code {ret})")
        sim = {"runs": 0}
        runs = int(args.get("simulator_runs", 0))
        if runs:
            sample = args.get("sample")
            feeds = list(np.load(sample).values()) if sample else [np.zeros(args["input_shape"], np.float32)]
            sim = _simulate(rknn, [np.ascontiguousarray(f, dtype=np.float32) for f in feeds], runs)
    finally:
        rknn.release()
    log_text = _read(log_path) + _read(job_dir / "worker.log")
    layers = layer_table(log_text)
    on_cpu = [r for r in layers if r["target"] != "NPU" and r["op"] not in ("InputOperator", "OutputOperator")]
    warnings = sorted({re.sub(r"\x1b\[[0-9;]*m", "", ln).strip()[:200] for ln in log_text.splitlines()
                       if re.match(r"^(\x1b\[[0-9;]*m)?W(\x1b\[[0-9;]*m)?\s", ln) and "temperate env" not in ln})
    from importlib.metadata import version

    return {"build_seconds": round(build_s, 2), "bytes": out.stat().st_size, "toolkit": version("rknn-toolkit2"),
            "layers": len(layers), "npu_layers": sum(r["target"] == "NPU" for r in layers),
            "cpu_layers": on_cpu, "layer_table_found": bool(layers), "simulator_ms": sim,
            "warnings": warnings[:30]}


class SimulatorSession:
    """A model rebuilt from its recipe and loaded in the toolkit's simulator (``init_runtime()`` with no target)."""

    def __init__(self, args: dict[str, Any], job_dir: Path) -> None:
        import numpy as np

        self.np = np
        recipe = args["recipe"]
        self.inputs, self.outputs = args["inputs"], args["outputs"]
        log_path = job_dir / "toolkit.log"
        dataset = _load_dataset(Path(args["dataset"]), job_dir / "dataset") if args.get("dataset") else None
        self.rknn = _rknn(log_path)
        t0 = time.perf_counter()
        _build(self.rknn, recipe, args["onnx"], dataset, log_path)
        rebuilt = job_dir / "rebuilt.rknn"
        self.rknn.export_rknn(str(rebuilt))
        info = {"rebuild_seconds": round(time.perf_counter() - t0, 2)}
        artifact = Path(args["artifact"])
        if artifact.is_file() and rebuilt.is_file():
            a, b = artifact.read_bytes(), rebuilt.read_bytes()
            diff = sum(x != y for x, y in zip(a, b)) if len(a) == len(b) else None
            info.update(artifact_bytes=len(a), rebuilt_bytes=len(b), differing_bytes=diff)
        ret = self.rknn.init_runtime()
        if ret != 0:
            raise ToolkitError(f"rknn.init_runtime() (simulator) failed (return code {ret})")
        self.info = info

    def infer(self, feeds: dict[str, Any]) -> dict[str, Any]:
        np = self.np
        arrays = [np.ascontiguousarray(feeds[n], dtype=np.float32) for n in self.inputs]
        outs = self.rknn.inference(inputs=arrays, data_format="nchw")
        if outs is None:
            raise ToolkitError("rknn.inference returned nothing (see the toolkit log)")
        return {n: np.asarray(o, dtype=np.float32) for n, o in zip(self.outputs, outs)}

    def close(self) -> None:
        self.rknn.release()


def open_simulator(args: dict[str, Any], job_dir: Path) -> SimulatorSession:
    return SimulatorSession(args, job_dir)
