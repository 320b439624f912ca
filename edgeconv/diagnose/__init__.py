"""Layer-wise drift localization: run the reference and an artifact (or two artifacts) with their intermediates
exposed, match tensors by reference name (or by value where a converter renames them), and find the first layers
where the drift jumps, named by ONNX node and PyTorch module. ``edgeconv diagnose`` is the command."""

from edgeconv.diagnose.core import Diagnosis, diagnose
from edgeconv.diagnose.modules import ModuleName, module_map

__all__ = ["Diagnosis", "ModuleName", "diagnose", "module_map"]
