"""Target registry fed by the ``edgeconv.targets`` entry-point group (built-ins register the same way).

If edgeconv runs from a source tree that was never pip-installed (no entry points), the built-ins are still found
through the fallback table below, so a checkout works; a plug-in package only needs its own entry point.
"""

from __future__ import annotations

import importlib
import importlib.metadata
from functools import lru_cache

from edgeconv.core.errors import ConfigError
from edgeconv.targets.base import Target

GROUP = "edgeconv.targets"
BUILTIN = {
    "onnxruntime": "edgeconv.targets.onnxruntime:OnnxRuntimeTarget",
    "openvino": "edgeconv.targets.openvino:OpenVinoTarget",
    "ncnn": "edgeconv.targets.ncnn:NcnnTarget",
    "tflite": "edgeconv.targets.tflite:TfliteTarget",
    "tensorrt": "edgeconv.targets.tensorrt:TensorRtTarget",
}


def _load(ref: str) -> type[Target]:
    mod, _, attr = ref.partition(":")
    return getattr(importlib.import_module(mod), attr)


@lru_cache(maxsize=1)
def _entry_points() -> dict[str, str]:
    found = dict(BUILTIN)
    for ep in importlib.metadata.entry_points(group=GROUP):
        found[ep.name] = ep.value
    return found


def all_targets() -> dict[str, Target]:
    """Every registered target that can be imported (the target modules themselves import no backend)."""
    out: dict[str, Target] = {}
    for name, ref in _entry_points().items():
        try:
            out[name] = _load(ref)()
        except (ImportError, AttributeError):
            continue
    return out


def get_target(name: str) -> Target:
    refs = _entry_points()
    if name not in refs:
        raise ConfigError(f"no backend named '{name}'", hint=f"registered backends: {', '.join(sorted(refs))}")
    try:
        return _load(refs[name])()
    except (ImportError, AttributeError) as e:
        raise ConfigError(f"backend '{name}' is registered as {refs[name]} but cannot be loaded: {e}") from e
