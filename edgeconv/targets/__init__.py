"""Backends. Each is one sub-package registered through the ``edgeconv.targets`` entry-point group."""

from edgeconv.targets.base import ConversionResult, ConvertContext, Runner, Target
from edgeconv.targets.registry import all_targets, get_target

__all__ = ["ConversionResult", "ConvertContext", "Runner", "Target", "all_targets", "get_target"]
