"""ONNX Runtime runner (CPU EP): the reference runtime, defined in ``targets.base`` because the pipeline and other
targets (TensorRT's proxy) run reference graphs with it and targets never import each other."""

from edgeconv.targets.base import OrtRunner

__all__ = ["OrtRunner"]
