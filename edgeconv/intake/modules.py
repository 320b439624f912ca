"""Walking a user's module tree without calling the nn.Module methods real models shadow.

Third-party models assign attributes named like nn.Module's own methods (``self.modules = [...]``,
``self.train = cfg.train``, ``self.children = ...``, ``self.parameters = ...``); calling ``.eval()``,
``.modules()`` or ``.state_dict()`` on them, or on any module containing them, then crashes with
"'list' object is not callable". Everything here reads the registries nn.Module keeps in the instance
``__dict__`` (``_modules``, ``_parameters``, ``_buffers``) instead, which is what those methods read too.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from edgeconv.core.lazy import require


def _registry(m: Any, name: str) -> dict[str, Any]:
    d = vars(m).get(name) if hasattr(m, "__dict__") else None
    return d if isinstance(d, dict) else {}


def is_script_module(m: Any) -> bool:
    torch = require("torch", "torch")
    return isinstance(m, torch.jit.ScriptModule)


def walk_modules(root: Any, *, dedupe: bool = True) -> Iterator[tuple[str, Any]]:
    """``(qualified_name, module)`` for ``root`` and every submodule, pre-order like ``named_modules()``.

    ``dedupe=False`` yields a shared submodule under every name it is reachable by (as ``state_dict()`` does);
    a module that contains itself is never followed twice on one path.
    """
    seen: set[int] = set()
    stack: list[tuple[str, Any, tuple[int, ...]]] = [("", root, ())]
    while stack:
        prefix, m, path = stack.pop()
        if dedupe:
            if id(m) in seen:
                continue
            seen.add(id(m))
        yield prefix, m
        if is_script_module(m):
            children = list(m.named_children())
        else:
            children = [(k, v) for k, v in _registry(m, "_modules").items() if v is not None]
        for name, child in reversed(children):
            if id(child) in path or child is m:
                continue
            stack.append((f"{prefix}.{name}" if prefix else name, child, (*path, id(m))))


def set_eval(module: Any) -> bool:
    """Inference mode without calling ``module.eval()``: setting ``training`` on every submodule is exactly what
    ``eval()`` does (BatchNorm then uses its running statistics, Dropout is off). TorchScript modules keep
    ``training`` in C++ and cannot shadow methods, so they get their own ``eval()``. Returns whether any module
    was in training mode (a factory that forgot ``.eval()``: worth telling, its own forward differed)."""
    if is_script_module(module):
        was = bool(module.training)
        module.eval()
        return was
    was = False
    for _, m in walk_modules(module):
        if is_script_module(m):
            was |= bool(m.training)
            m.eval()
        elif "training" in vars(m):
            was |= bool(vars(m)["training"])
            object.__setattr__(m, "training", False)
    return was


def named_tensors(module: Any) -> dict[str, Any]:
    """The tensors ``state_dict()`` would hold (parameters and persistent buffers, by qualified name)."""
    if is_script_module(module):
        return dict(module.state_dict())
    out: dict[str, Any] = {}
    for prefix, m in walk_modules(module, dedupe=False):
        dot = f"{prefix}." if prefix else ""
        for n, p in _registry(m, "_parameters").items():
            if p is not None:
                out[dot + n] = p
        skip = vars(m).get("_non_persistent_buffers_set") or set()
        for n, b in _registry(m, "_buffers").items():
            if b is not None and n not in skip:
                out[dot + n] = b
    return out


def load_tensors(module: Any, state: dict[str, Any]) -> None:
    """``load_state_dict(strict=False)`` through nn.Module's own implementation (it recurses over ``_modules``
    and calls only ``_load_from_state_dict``), so shadowed public methods do not matter."""
    torch = require("torch", "torch")
    torch.nn.Module.load_state_dict(module, state, strict=False)
