"""RKNN (Rockchip NPUs: RK3588, RK3566/RK3568, RK3576, ...): ONNX → ``.rknn`` with rknn-toolkit2, fp16 and INT8.

The toolkit cannot live beside this project's pins (numpy <= 1.26, an old torch), so it runs in a backend
environment of its own (``environment = "rknn"``, spec in ``env.py``), created on first use under the cache and
reached through the worker protocol of ``edgeconv.envs``.  Nothing here imports the toolkit: conversion and the
simulator run in that environment's interpreter (``handler.py``).  Verification and drift use the toolkit's x86
simulator (a proxy: its latency is not a device number); a board with rknn-toolkit-lite2 gives real numbers.
"""

from __future__ import annotations

from typing import Any

from edgeconv.targets.base import ConversionResult, ConvertContext, Option, Runner, Target

PLATFORMS = ("rk3588", "rk3576", "rk3568", "rk3566", "rk3562", "rv1103", "rv1106", "rv1103b", "rv1106b", "rk2118")


class RknnTarget(Target):
    name = "rknn"
    extra = "rknn"  # empty: the toolkit lives in its own environment, not in edgeconv's
    modules = ("onnx",)  # what the host side needs; the toolkit itself is in the environment
    precisions = ("fp16", "int8")
    calibrated = ("int8",)
    routes = ("onnx",)
    environment = "rknn"
    tools = ("onnx",)
    isolate = False  # the toolkit already runs in another process (the environment's worker), with a time limit
    options = {
        "platform": Option(str, "rk3588", "Rockchip SoC the .rknn is compiled for", choices=PLATFORMS),
        "quantized_algorithm": Option(str, "normal", "toolkit INT8 calibration: normal (min/max), mmse, "
                                      "kl_divergence", choices=("normal", "mmse", "kl_divergence")),
        "quantized_method": Option(str, "channel", "per-channel or per-layer weight scales",
                                   choices=("channel", "layer")),
        "quantized_dtype": Option(str, "w8a8", "toolkit quantized dtype (w8a8; w4a16/w8a16 on some SoCs)"),
        "optimization_level": Option(int, 3, "toolkit graph optimization level 0-3", choices=(0, 1, 2, 3)),
        "embed_preprocess": Option(bool, True, "put the contract's mean/std into rknn.config (raw uint8 input on "
                                   "the board); false: the model takes preprocessed float tensors"),
        "simulator_runs": Option(int, 10, "simulator inferences timed after conversion (0: none)"),
    }
    description = "Rockchip NPU via rknn-toolkit2 2.5.0 in its own environment (verified on the toolkit simulator)"

    @classmethod
    def environment_spec(cls) -> Any:
        """The pinned requirements of this target's backend environment (an ``edgeconv.envs.EnvSpec``)."""
        from edgeconv.targets.rknn.env import ENV

        return ENV

    def _env(self) -> Any:
        from edgeconv.envs.manager import ensure

        return ensure(self.environment_spec())

    def available(self) -> bool:
        """Convertible here when the host side imports and the environment exists or can be made (Python/arch)."""
        return super().available() and self._env_problem() is None

    def missing(self) -> list[str]:
        problem = self._env_problem()
        return [*super().missing(), *([problem] if problem else [])]

    def _env_problem(self) -> str | None:
        from edgeconv.envs.manager import base_python, python_info

        spec = self.environment_spec()
        try:
            ver, machine = python_info(base_python())
        except Exception as e:  # noqa: BLE001 - reported as why the target is unusable
            return f"backend environment python: {e}"
        if spec.python_versions and ver not in spec.python_versions:
            return f"rknn environment needs Python {'/'.join(spec.python_versions)} (EDGECONV_ENV_PYTHON)"
        if spec.platforms and machine not in spec.platforms:
            return f"rknn-toolkit2 has no wheels for {machine}"
        return None

    def runs_here(self) -> tuple[bool, str]:
        if not self.available():
            return False, f"missing {', '.join(self.missing())}"
        return True, "RKNN toolkit simulator (x86 host): outputs verified, latency is not a device number"

    def convert(self, ctx: ConvertContext) -> ConversionResult:
        from edgeconv.core.errors import ConversionError
        from edgeconv.targets.base import explain_volumetric
        from edgeconv.targets.rknn.convert import convert

        try:
            return convert(ctx, self._env())
        except ConversionError as e:
            raise explain_volumetric(e, ctx.reference.onnx_path, "RKNN") from e

    def runner(self, artifact: Any, *, threads: int | None = None, **kw: Any) -> Runner:
        from edgeconv.targets.rknn.runner import RknnSimulatorRunner

        return RknnSimulatorRunner(artifact, self._env())

    def versions(self) -> dict[str, str | None]:
        """Host tools plus the environment's pins (part of the artifact key: a new pin, a new key).  The pins, not
        the installed versions, so the key is the same before and after the environment is first made."""
        from edgeconv.targets.rknn.env import TOOLKIT

        spec = self.environment_spec()
        return {**super().versions(), "rknn-toolkit2": TOOLKIT.split("==")[1], "env:rknn": spec.key()}
