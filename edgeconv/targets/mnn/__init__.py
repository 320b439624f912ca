"""MNN: Alibaba's mobile runtime. Reference ONNX → MNNConvert → ``.mnn`` (fp32, fp16 weights); INT8 by MNN's own
quantization tool, fed the shared calibration sample through the preprocessing contract.

No backend is imported at module level (the registry imports this to list targets).
"""

from __future__ import annotations

from typing import Any

from edgeconv.targets.base import ConversionResult, ConvertContext, Option, Runner, Target

# INT8 defaults, chosen by measurement on the bundled detector (benchmarks/native_mnn_int8.toml →
# benchmarks/results/mnn_int8_<date>.json): quantized.out's own default is KL.
DEFAULT_FEATURE = "EMA"
DEFAULT_WEIGHT = "MAX_ABS"
DEFAULT_BATCH = 32  # quantized.out's own default; batch 1 loses 4.23 points, 32 loses 1.75
DEFAULT_WINOGRAD = True


class MnnTarget(Target):
    name = "mnn"
    extra = "mnn"
    modules = ("MNN",)
    min_versions = {"MNN": "3.0"}
    precisions = ("fp32", "fp16", "int8")
    demo_skip = {"int8": "MNN's quantization tool takes tens of minutes on 2 cores and loses 1.75 mAP50-95 on the "
                         "bundled detector (benchmarks/results/mnn_int8_2026-12-01.json); run it with -p int8"}
    calibrated = ("int8",)
    int8_alternative = ("int8_mode", "weight", "8-bit weights, float arithmetic: smaller, not faster")
    routes = ("onnx",)
    tools = ("MNN",)
    isolate = True
    fork_unsafe_modules = ("MNN",)  # its thread pool: a child forked after MNN ran here hangs in its first run
    options = {
        "precision_mode": Option(str, "normal", "MNN runtime precision: high/normal = fp32 kernels; low = fp16 "
                                 "arithmetic where the CPU has it (ARMv8.2), low_bf16 = bf16; low-for-fp16 = low "
                                 "for fp16 artifacts and normal for the others (a device profile's choice: fp32 "
                                 "rows must not compute in fp16)",
                                 choices=("high", "normal", "low", "low_bf16", "low-for-fp16")),
        "memory_mode": Option(str, None, "MNN memory mode (normal/high/low)", choices=("normal", "high", "low")),
        "int8_mode": Option(str, "full", "full = full-integer INT8 from MNN's quantization tool (calibrated int8 "
                            "arithmetic); weight = 8-bit weights from MNNConvert (--weightQuantBits 8), float "
                            "activations and arithmetic: a ~4x smaller file at float accuracy, no faster; for a "
                            "model whose full INT8 is over its budget", choices=("full", "weight")),
        "feature_method": Option(str, None, f"quantized.out activation method (default {DEFAULT_FEATURE}, by "
                                 "measurement; EMA = moving-average min/max, KL = entropy, ADMM = one batch of all "
                                 "samples: slow, images only)",
                                 choices=("EMA", "KL", "ADMM")),
        "weight_method": Option(str, DEFAULT_WEIGHT, "quantized.out weight method", choices=("MAX_ABS", "ADMM")),
        "head_fp32": Option(bool, False, "keep the layers that compute the model outputs in float (KL/ADMM only)"),
        "calib_input": Option(str, "auto", "how calibration data reaches quantized.out: images (contract-resized "
                              "PNGs + mean/normal from the contract, checked), tensors (exact text tensors), auto",
                              choices=("auto", "images", "tensors")),
        "calib_batch": Option(int, DEFAULT_BATCH, "images per EMA step in quantized.out (its own default: 32)"),
        "winograd": Option(bool, DEFAULT_WINOGRAD, "EMA only: quantize for MNN's int8 Winograd kernels "
                           "(quantized.out's winogradOpt, on by default)"),
        "tool_timeout": Option(float, 300.0, "seconds MNNConvert may run before it is stopped"),
        "quant_timeout": Option(float, 1800.0, "seconds MNN's quantization tool may run before it is stopped"),
    }
    description = "MNN CPU runtime (phones, ARM boards), converted by MNNConvert; INT8 by MNN's quantization tool"

    def convert(self, ctx: ConvertContext) -> ConversionResult:
        from edgeconv.targets.mnn.convert import convert

        return convert(ctx)

    def runner(self, artifact: Any, *, threads: int | None = None, **kw: Any) -> Runner:
        from edgeconv.targets.mnn.runner import MnnRunner

        return MnnRunner.from_artifact(artifact, threads=threads, **kw)
