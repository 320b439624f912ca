"""Model intake: turn what the user has (factory + weights, TorchScript, ExportedProgram, ONNX) into a source."""

from edgeconv.intake.loader import SourceModel, load_source

__all__ = ["SourceModel", "load_source"]
