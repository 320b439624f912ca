"""Plug-in resolution lives in ``edgeconv.core.plugins`` (targets use it too); re-exported for bench callers."""

from edgeconv.core.plugins import load_callable

__all__ = ["load_callable"]
