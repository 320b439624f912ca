"""ExecuTorch: PyTorch's own on-device runtime. The PyTorch module → torch.export → XNNPACK-lowered ``.pte`` (fp32;
int8 by PT2E with the XNNPACK quantizer on the shared calibration sample), run through ``executorch.runtime``.

No backend is imported at module level (the registry imports this to list targets).
"""

from __future__ import annotations

from typing import Any

from edgeconv.targets.base import ConversionResult, ConvertContext, Option, Runner, Target
from edgeconv.targets.pt2e_observers import DEFAULT_OBSERVER, OBSERVERS


class ExecuTorchTarget(Target):
    name = "executorch"
    extra = "executorch"
    modules = ("executorch",)
    min_versions = {"executorch": "1.5"}
    precisions = ("fp32", "int8")
    calibrated = ("int8",)
    routes = ("torch",)
    needs_torch_module = True
    tools = ("executorch", "torch", "torchao")
    isolate = True
    preload_modules = ("executorch.exir",)
    options = {
        "observer": Option(str, DEFAULT_OBSERVER, "INT8 activation observer: histogram (the XNNPACK "
                           "quantizer's, counted faster: targets/pt2e_observers.py) or minmax",
                           choices=OBSERVERS),
        "per_channel": Option(bool, True, "INT8 per-output-channel weight scales (XNNPACK's recommended setting)"),
    }
    description = "ExecuTorch with the XNNPACK delegate, exported from PyTorch (torch.export)"

    def convert(self, ctx: ConvertContext) -> ConversionResult:
        from edgeconv.targets.executorch.convert import convert

        return convert(ctx)

    def runner(self, artifact: Any, *, threads: int | None = None, **kw: Any) -> Runner:
        from edgeconv.targets.executorch.runner import ExecuTorchRunner

        return ExecuTorchRunner.from_artifact(artifact, threads=threads, **kw)
