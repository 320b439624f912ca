"""The two interfaces every backend implements: a Target (convert + make a runner) and a Runner (infer).

Runners take and return tensors named and laid out as the reference ONNX does (NCHW, batch axis kept), so the
harness compares every backend like for like; a backend with another convention (NHWC, no batch axis, quantized
I/O) converts inside its runner.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from edgeconv.core.lazy import available

if TYPE_CHECKING:
    from edgeconv.calibration.dataset import CalibrationSet
    from edgeconv.core.artifact import Artifact
    from edgeconv.export.reference import ReferenceModel
    from edgeconv.profiles import Profile


@dataclass
class ConvertContext:
    """Everything a backend's convert() may use. ``out_dir`` is a fresh temp folder that becomes the artifact."""

    reference: ReferenceModel
    profile: Profile
    precision: str
    out_dir: Path
    calibration: CalibrationSet | None = None
    keep_fp32: tuple[str, ...] = ()
    options: dict[str, Any] = field(default_factory=dict)
    task: dict[str, Any] = field(default_factory=dict)  # prep.info (bundled name, task, postprocess): task metrics
    preprocess: Any = None  # the preprocessing contract (calibration's, else the model's); None when unknown

    def option(self, name: str, default: Any = None) -> Any:
        """A conversion option: the call's own first, then the profile's [options], then ``default``."""
        if name in self.options and self.options[name] is not None:
            return self.options[name]
        return self.profile.options.get(name, default)


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


class Target(ABC):
    """A backend. Subclasses set the class variables and implement convert() and runner()."""

    name: ClassVar[str]
    extra: ClassVar[str]  # pip extra that installs it: pip install 'edgeconv[<extra>]'
    modules: ClassVar[tuple[str, ...]]  # Python modules that must be importable to convert
    precisions: ClassVar[tuple[str, ...]] = ("fp32",)
    needs_torch_module: ClassVar[bool] = False  # True: converts from the PyTorch module, not from ONNX
    description: ClassVar[str] = ""

    def available(self) -> bool:
        return all(available(m) for m in self.modules)

    def missing(self) -> list[str]:
        return [m for m in self.modules if not available(m)]

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
        from edgeconv.core.lazy import version

        return {m: version(m) for m in self.modules}
