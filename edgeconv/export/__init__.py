"""torch → ONNX export (several exporters, each verified) and ONNX simplification."""
