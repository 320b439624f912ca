"""Core ML (iPhone, iPad, Mac): PyTorch → ``.mlpackage`` with coremltools 9; fp32, fp16, INT8 weights.

coremltools converts on Linux, but the Core ML runtime exists only on Apple platforms, so here the artifact is
*converted and structurally checked, never executed*: ``runs_here()`` says so, and the conversion result carries
``runnable_here=False`` with a ``verify_note`` stating "converted, not executed here (needs macOS/iOS)".  On a
Mac (``sys.platform == "darwin"``) the runner executes it in-process; a Mac reached by SSH runs it through the
worker protocol (``remote.SshTransport``, profile option ``mac_host``).  No coremltools import at module level.
"""

from __future__ import annotations

import sys
from typing import Any

from edgeconv.targets.base import ConversionResult, ConvertContext, Option, Runner, Target


class CoreMlTarget(Target):
    name = "coreml"
    extra = "coreml"
    modules = ("coremltools", "torch")
    min_versions = {"coremltools": "8.0"}
    precisions = ("fp32", "fp16", "int8")
    calibrated = ()  # INT8 is data-free weight quantization
    routes = ("torch",)
    needs_torch_module = True
    tools = ("coremltools", "torch")
    isolate = True
    options = {
        "deployment_target": Option(str, "iOS16", "minimum iOS the model loads on (decides the ops available)",
                                    choices=("iOS15", "iOS16", "iOS17", "iOS18")),
        "embed_preprocess": Option(bool, True, "image input with the contract's scale/bias when expressible"),
        "int8_granularity": Option(str, "per_channel", "INT8 weight scales", choices=("per_channel", "per_tensor")),
        "weight_threshold": Option(int, 2048, "weights with fewer elements stay fp16 in INT8"),
        "compute_units": Option(str, "ALL", "where Core ML runs it (on a Mac)",
                                choices=("ALL", "CPU_ONLY", "CPU_AND_GPU", "CPU_AND_NE")),
        "mac_host": Option(str, None, "ssh host of a Mac that executes and verifies the artifact"),
    }
    description = "Apple Core ML (.mlpackage) via coremltools: converted and checked here, executed on macOS/iOS"

    def runs_here(self) -> tuple[bool, str]:
        if not self.available():
            return False, f"missing {', '.join(self.missing())}"
        if sys.platform != "darwin":
            return False, "needs macOS/iOS (the Core ML runtime exists only on Apple platforms)"
        return True, ""

    def convert(self, ctx: ConvertContext) -> ConversionResult:
        from edgeconv.targets.coreml.convert import convert

        result = convert(ctx)
        if self.runs_here()[0]:
            result.runnable_here = True
        return result

    def runner(self, artifact: Any, *, threads: int | None = None, mac_host: str | None = None,
               **kw: Any) -> Runner:
        """In-process worker on a Mac, or the worker on ``mac_host`` over SSH; elsewhere a clear error."""
        from edgeconv.core.errors import MissingDependencyError
        from edgeconv.targets.coreml.runner import CoreMlRunner

        options = {**((artifact.manifest.get("profile") or {}).get("options") or {}),
                   **(artifact.manifest.get("options") or {})}
        host = mac_host or options.get("mac_host")
        units = str(options.get("compute_units") or "ALL")
        if host:
            from edgeconv.targets.coreml.remote import SshTransport

            return CoreMlRunner(artifact, SshTransport(host), compute_units=units)
        if sys.platform == "darwin":
            from edgeconv.envs.transport import LocalTransport

            return CoreMlRunner(artifact, LocalTransport(python=sys.executable), compute_units=units)
        raise MissingDependencyError("Core ML models execute only on macOS/iOS; this artifact was converted and "
                                     "checked, not executed here",
                                     hint="set options.mac_host = 'user@mac' (a Mac with python3 + coremltools "
                                          "reachable by ssh) to execute and verify it there")
