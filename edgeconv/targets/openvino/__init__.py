"""OpenVINO: IR (xml + bin) for Intel CPUs/GPUs/NPUs; FP32, FP16 (compressed weights), BF16 (the fp32 IR compiled
in bf16, on CPUs with AVX-512-BF16/AMX) and INT8 by NNCF. Every artifact ships its compile configuration.

This module imports no backend: ``openvino``/``nncf`` are imported inside ``convert``/``runner`` only, so the
registry can list this target (and say what to install) on machines without OpenVINO.
"""

from __future__ import annotations

import sys
from typing import Any

from edgeconv.targets.base import ConversionResult, ConvertContext, Option, Runner, Target


def block_telemetry() -> None:
    """Keep OpenVINO's converter and NNCF on their telemetry stubs (both fall back to one when
    ``openvino_telemetry`` cannot be imported). Those tools show no opt-in dialog and treat a missing consent file
    as consent, so every conversion would post usage events from a thread pool; offline, that thread waits on the
    network, and a worker forked meanwhile aborted in it ("Resource deadlock avoided"). A process that imported
    the package before edgeconv keeps it."""
    sys.modules.setdefault("openvino_telemetry", None)  # type: ignore[arg-type]  # None: import raises ImportError


block_telemetry()  # before anything imports openvino (its __init__ imports the converter, which imports telemetry)


class OpenVinoTarget(Target):
    name = "openvino"
    extra = "openvino"
    modules = ("openvino", "nncf")
    precisions = ("fp32", "fp16", "bf16", "int8")
    description = "OpenVINO IR (CPU/GPU/NPU/AUTO); bf16 where the CPU has it; INT8 by NNCF post-training quantization"
    routes = ("onnx", "torch")
    fork_unsafe_modules = ("openvino", "nncf")  # OpenMP / TBB pools
    options = {
        "performance_hint": Option(str, "LATENCY", "OpenVINO performance hint",
                                   choices=("LATENCY", "THROUGHPUT", "CUMULATIVE_THROUGHPUT")),
        "streams": Option((int, str), None, "NUM_STREAMS (an integer or AUTO)"),
        "inference_precision": Option(str, None, "INFERENCE_PRECISION_HINT override (f32, bf16, f16)"),
        "preset": Option(str, "performance", "NNCF preset; performance is NNCF's own default (-0.16 vs -0.28 "
                         "mAP50-95 for mixed on the bundled detector: benchmarks/results/int8_fallback*)",
                         choices=("mixed", "performance")),
        "subset_size": Option(int, 0, "NNCF calibration subset (0: the whole calibration sample)"),
        "fast_bias_correction": Option(bool, True, "NNCF fast bias correction"),
        "overflow_fix": Option(str, "auto", "NNCF overflow fix (weights in 7 bits where u8*s8 products saturate "
                               "int16 without VNNI); auto: enable when the CPU that serves the artifact lacks "
                               "VNNI/AMX, else NNCF's first-layer default", choices=("auto", "enable",
                                                                                    "first_layer", "disable")),
        "model_type": Option(str, None, "NNCF model type", choices=("transformer",)),
        "embed_preprocess": Option(bool, False, "embed the preprocessing contract (raw u8 NHWC input)"),
        "embed_color": Option(str, None, "colour order of the raw input when preprocessing is embedded",
                              choices=("RGB", "BGR")),
        "validation_fn": Option((str, object), None, "module:callable (or, from Python, a callable) validation "
                                "function for --max-drop"),
        "validation_data": Option((str, object), None, "module:callable (or items) for --max-drop's validation"),
        "validation_metric": Option(str, None, "name of validation_fn's metric, for the manifest"),
    }

    def skip_reason(self, precision: str, device: str = "CPU") -> str | None:
        """Why ``precision`` cannot be converted and verified on this machine (None when it can): bf16 needs a CPU
        with AVX-512-BF16 or AMX-BF16. Reads /proc/cpuinfo only, so a plan can skip the row before converting."""
        if precision != "bf16":
            return None
        from edgeconv.targets.openvino.deploy import bf16_unavailable

        return bf16_unavailable(None, device)

    def convert(self, ctx: ConvertContext) -> ConversionResult:
        from edgeconv.targets.openvino.convert import convert

        return convert(ctx)

    def runner(self, artifact: Any, *, threads: int | None = None, **kw: Any) -> Runner:
        from edgeconv.targets.openvino.runner import runner_for_artifact

        return runner_for_artifact(artifact, threads=threads, **kw)
