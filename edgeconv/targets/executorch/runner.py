"""ExecuTorch runner: ``executorch.runtime`` (the Python binding of the C++ runtime, XNNPACK delegate included)
behind the harness's reference-named NCHW interface.

The ``.pte`` takes and returns torch tensors in the exported module's positional order, which the converter made
the reference ONNX's order; inputs are copied into contiguous tensors the runner owns, outputs are copied out.
Threads: XNNPACK's thread pool is process-wide (``_unsafe_reset_threadpool``), set before the method is loaded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgeconv.core.errors import ConversionError, VerificationError
from edgeconv.core.lazy import require
from edgeconv.targets.base import Runner

#: executorch/runtime/core/error.h: the codes a load can fail with, and what to do about each.
_ERRORS = {
    0x10: ("NotSupported", "a feature of the program this runtime does not support"),
    0x12: ("InvalidArgument", "the program's inputs or metadata do not match"),
    0x14: ("OperatorMissing", "an operator the XNNPACK delegate did not take has no kernel in this ExecuTorch runtime "
                              "(the pip runtime registers the portable/optimized kernels only)"),
    0x20: ("NotFound", "the program has no such method"),
    0x21: ("MemoryAllocationFailed", "the planned memory could not be allocated"),
    0x23: ("InvalidProgram", "the .pte is damaged or from another ExecuTorch version"),
    0x30: ("DelegateInvalidCompatibility", "the XNNPACK blob does not match this runtime"),
}


def explain_runtime_error(e: RuntimeError) -> ConversionError:
    """``Failed to load method forward, error: 0x:14`` as one line naming the error and what to try."""
    import re

    m = re.search(r"error:\s*0x:?([0-9a-fA-F]+)", str(e))
    code = int(m.group(1), 16) if m else None
    name, why = _ERRORS.get(code, (f"0x{code:x}" if code is not None else "unknown", str(e).splitlines()[0]))
    return ConversionError(f"the ExecuTorch runtime cannot load the program: {name}: {why}",
                           hint="another backend (tflite, onnxruntime), or a model variant without the operator "
                           "outside the XNNPACK delegate, may work")


def import_runtime() -> Any:
    """``executorch.runtime``, without the compiler it does not use.

    The runtime binding (``extension.pybindings.portable_lib``) imports ``executorch.exir._warnings`` for one
    warning class, and with it the package ``executorch.exir``: the whole export stack, torchao included — 7.5 s of
    a 10 s import here, paid by every benchmark worker of an ExecuTorch row. Where ``executorch.exir`` is not
    loaded yet, that one small module is loaded from its file under its own name for the binding's import, and
    both names are dropped again afterwards, so a later ``import executorch.exir`` (a conversion in this process)
    imports the real package."""
    import importlib.util
    import sys

    if "executorch.runtime" in sys.modules or "executorch.exir" in sys.modules:
        return require("executorch.runtime", "executorch")
    placed: list[str] = []
    try:
        spec = importlib.util.find_spec("executorch")
        root = Path(next(iter(spec.submodule_search_locations or []))) if spec else None
        path = root / "exir" / "_warnings.py" if root else None
        if path is not None and path.is_file():
            import types

            warn_spec = importlib.util.spec_from_file_location("executorch.exir._warnings", path)
            if warn_spec is not None and warn_spec.loader is not None:
                mod = importlib.util.module_from_spec(warn_spec)
                warn_spec.loader.exec_module(mod)
                pkg = types.ModuleType("executorch.exir")
                pkg.__path__ = [str(path.parent)]
                pkg._warnings = mod  # type: ignore[attr-defined]
                sys.modules["executorch.exir"], sys.modules["executorch.exir._warnings"] = pkg, mod
                placed = ["executorch.exir", "executorch.exir._warnings"]
                import executorch

                executorch.exir = pkg  # type: ignore[attr-defined]
    except Exception:  # noqa: BLE001 - a layout this does not know: the plain import below does it all
        placed = []
    try:
        return require("executorch.runtime", "executorch")
    finally:
        for name in placed:
            sys.modules.pop(name, None)
        if placed:
            import executorch

            if getattr(executorch, "exir", None) is not None and not hasattr(executorch.exir, "__file__"):
                del executorch.exir  # type: ignore[attr-defined]


def set_threads(threads: int | None) -> None:
    """Resize ExecuTorch's shared thread pool (XNNPACK runs on it); None keeps its default (all cores)."""
    if not threads:
        return
    from executorch.extension.pybindings import portable_lib

    if portable_lib._threadpool_get_thread_count() != int(threads):
        portable_lib._unsafe_reset_threadpool(int(threads))


class ExecuTorchRunner(Runner):
    def __init__(self, model: Path | str | bytes, *, inputs: list[str], outputs: list[str],
                 threads: int | None = None, check_count: bool = False, **_: Any) -> None:
        self.torch = require("torch", "torch")
        runtime = import_runtime()
        set_threads(threads)
        try:
            self.program = runtime.Runtime.get().load_program(model if isinstance(model, bytes) else Path(model))
            self.method = self.program.load_method("forward")
        except RuntimeError as e:
            raise explain_runtime_error(e) from e
        if self.method is None:
            raise VerificationError("the .pte program has no 'forward' method")
        self.inputs, self.outputs = list(inputs), list(outputs)
        self.check_count = check_count

    @classmethod
    def from_artifact(cls, artifact: Any, threads: int | None = None, **kw: Any) -> ExecuTorchRunner:
        io = artifact.manifest["conversion"]["io"]
        return cls(artifact.file("model"), inputs=io["inputs"], outputs=io["outputs"], threads=threads, **kw)

    def infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        args = [self.torch.from_numpy(np.ascontiguousarray(feeds[n], dtype=np.float32).copy()) for n in self.inputs]
        outs = self.method.execute(args)
        if len(outs) != len(self.outputs):
            raise VerificationError(f"the .pte returned {len(outs)} outputs, the reference has {len(self.outputs)}")
        return {n: o.detach().numpy().astype(np.float32, copy=True) for n, o in zip(self.outputs, outs, strict=True)}

    def close(self) -> None:
        self.method = None
        self.program = None
