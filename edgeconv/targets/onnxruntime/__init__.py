"""ONNX Runtime: the reference runtime (fp32), fp16 (half weights; half arithmetic where the provider has half
kernels, float32 arithmetic on an x86 CPU, which has none; float32 I/O) and the reference
INT8 path (QDQ from quantize_static on the shared statistics)."""

from __future__ import annotations

from typing import Any

from edgeconv.targets.base import ConversionResult, ConvertContext, Option, Runner, Target


class OnnxRuntimeTarget(Target):
    name = "onnxruntime"
    extra = "onnxruntime"
    modules = ("onnxruntime", "onnx")
    precisions = ("fp32", "fp16", "int8")
    isolate = False  # the reference runtime itself: verification already runs it in-process
    description = "ONNX Runtime CPU execution provider (reference)"
    options = {
        "providers": Option(list, ["CPUExecutionProvider"], "execution providers, in order"),
        "graph_optimization": Option(str, "all", "ORT graph optimization level at load",
                                     choices=("all", "extended", "basic", "none")),
        "fp16_compute": Option(str, "auto", "fp16 arithmetic: half, float (half-stored weights, float32 kernels) "
                               "or auto (half for GPU providers and ARM, float on x86 CPUs)",
                               choices=("auto", "half", "float")),
        "activation_type": Option(str, "uint8", "INT8 activation type", choices=("uint8", "int8")),
        "weight_type": Option(str, "int8", "INT8 weight type", choices=("uint8", "int8")),
        "reduce_range": Option(bool, True, "7-bit weights (for x86 CPUs without VNNI: avoids vpmaddubsw saturation)"),
        "per_channel": Option(bool, True, "per-channel weight scales"),
        "symmetric_activations": Option(bool, False, "symmetric activation quantization"),
        "keep_outputs_fp32": Option(bool, True, "keep the nodes producing graph outputs (detect heads) in float"),
        "op_types": Option(list, None, "op types to quantize (default: every op ORT can quantize)"),
        "percentile": Option(float, None, "percentile calibration: the percentile kept"),
        "num_bins": Option(int, None, "entropy/percentile calibration: histogram bins"),
        "num_quantized_bins": Option(int, None, "entropy calibration: quantized bins"),
    }

    def convert(self, ctx: ConvertContext) -> ConversionResult:
        from edgeconv.targets.onnxruntime.convert import convert

        return convert(ctx)

    def runner(self, artifact: Any, *, threads: int | None = None, **kw: Any) -> Runner:
        from edgeconv.targets.base import OrtRunner

        opts = (artifact.manifest.get("profile") or {}).get("options") or {}
        kw.setdefault("optimize", opts.get("graph_optimization", "all"))
        kw.setdefault("providers", opts.get("providers"))
        return OrtRunner(artifact.file("model"), threads=threads, **kw)
