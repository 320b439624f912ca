"""Conv + BatchNorm folded at the module level, for the converters that trace the PyTorch model (litert-torch).

Why: litert-torch decomposes and lowers every ``batch_norm`` node on its own (a YOLO11n has 81): converting the
folded model costs 11 s CPU instead of 17 s, and the .tflite is the same graph (its converter folds them too, late).
Ultralytics folds with its own ``model.fuse()``, which knows its Conv class; this works on any model:

1. find which ``nn.Conv2d`` feeds which ``nn.BatchNorm2d`` (each called once): first by forward hooks on one call
   (the norm's input is the conv's output tensor; ~0.02 s), and only when that view fails step 4 by ``torch.export``,
   which also proves the conv's output is read by nothing else (2.4 s on YOLO11n, ~15 % of its TFLite conversion);
2. build a *view* of the module tree: only the modules on the path to a folded pair are shallow copies (their own
   ``_modules`` dict), everything else — parameters, buffers, other modules — is the user's, untouched and shared
   (the model is never deep-copied: some hold objects that cannot be copied);
3. the conv becomes ``torch.nn.utils.fusion.fuse_conv_bn_eval``'s conv, the norm an ``nn.Identity``;
4. the view must reproduce the model's outputs on the sample (``allclose`` at 1e-4 relative), else the model is
   used as it is. Any failure on the way means "not folded", never an error: the artifact is still verified.
"""

from __future__ import annotations

import copy
from typing import Any

from edgeconv.core.console import log


def _module_path(node: Any) -> str | None:
    """The dotted path of the innermost module an exported node was called in (None outside any module)."""
    stack = node.meta.get("nn_module_stack") or {}
    return list(stack.values())[-1][0] if stack else None


def _pairs(module: Any, sample: tuple[Any, ...]) -> list[tuple[str, str]]:
    """(conv path, batch-norm path) pairs of the exported graph that can be folded."""
    import torch

    with torch.no_grad():
        ep = torch.export.export(module, sample)
    aten = torch.ops.aten
    uses: dict[str, int] = {}
    found = []
    for n in ep.graph.nodes:
        if n.op != "call_function" or n.target not in (aten.conv2d.default, aten.batch_norm.default):
            continue
        path = _module_path(n)
        if path is None:
            continue
        uses[path] = uses.get(path, 0) + 1
        conv = n.args[0]
        if (n.target == aten.batch_norm.default and getattr(conv, "target", None) == aten.conv2d.default
                and len(conv.users) == 1 and _module_path(conv) is not None):
            found.append((_module_path(conv), path))
    return [(c, b) for c, b in found if uses.get(c) == 1 and uses.get(b) == 1]


def _pairs_by_hooks(module: Any, sample: tuple[Any, ...], modules: dict[str, Any]) -> list[tuple[str, str]]:
    """(conv path, batch-norm path) pairs seen on one forward call: the norm's input is the very tensor the conv
    returned, and each ran once. Whether anything else read that tensor is not known here: the caller's output
    check decides."""
    import torch

    path_of = {id(m): p for p, m in modules.items()}
    calls: dict[str, int] = {}
    produced: dict[int, str] = {}
    kept: list[Any] = []  # the conv outputs stay alive, so no other tensor reuses their id during the call
    found: list[tuple[str, str]] = []

    def on_conv(m: Any, _inp: Any, out: Any) -> None:
        p = path_of[id(m)]
        calls[p] = calls.get(p, 0) + 1
        kept.append(out)
        produced[id(out)] = p

    def on_bn(m: Any, inp: Any) -> None:
        p = path_of[id(m)]
        calls[p] = calls.get(p, 0) + 1
        conv = produced.get(id(inp[0])) if inp else None
        if conv is not None:
            found.append((conv, p))

    handles = []
    try:
        for m in {id(m): m for m in modules.values()}.values():
            if type(m) is torch.nn.Conv2d:
                handles.append(m.register_forward_hook(on_conv))
            elif type(m) is torch.nn.BatchNorm2d:
                handles.append(m.register_forward_pre_hook(on_bn))
        with torch.no_grad():
            module(*sample)
    finally:
        for h in handles:
            h.remove()
    return [(c, b) for c, b in found if calls.get(c) == 1 and calls.get(b) == 1]


def _view(root: Any, replace: dict[str, Any]) -> Any:
    """``root`` with the submodules at ``replace``'s dotted paths swapped, copying only the modules above them."""
    copies: dict[str, Any] = {}

    def own(path: str) -> Any:
        if path in copies:
            return copies[path]
        if path == "":
            m = copy.copy(root)
        else:
            parent_path, _, leaf = path.rpartition(".")
            parent = own(parent_path)
            m = parent._modules[leaf] = copy.copy(parent._modules[leaf])
        m._modules = dict(m._modules)  # its own child table; parameters and buffers stay the user's
        copies[path] = m
        return m

    for path, new in replace.items():
        parent, _, leaf = path.rpartition(".")
        own(parent)._modules[leaf] = new
    return copies.get("", root)


def _fold(module: Any, sample: tuple[Any, ...], modules: dict[str, Any],
          pairs: list[tuple[str, str]]) -> tuple[Any, int] | None:
    """The folded view and its fold count, ``(module, 0)`` when nothing folds, or None when the view changes the
    outputs on ``sample`` (then these pairs were wrong)."""
    import torch
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    replace: dict[str, Any] = {}
    for conv_path, bn_path in pairs:
        conv, bn = modules.get(conv_path), modules.get(bn_path)
        if type(conv) is not torch.nn.Conv2d or type(bn) is not torch.nn.BatchNorm2d:  # None too
            continue
        if bn.training or conv.training or not bn.track_running_stats:
            continue
        replace[conv_path] = fuse_conv_bn_eval(conv, bn)
        replace[bn_path] = torch.nn.Identity()
    if not replace:
        return module, 0
    view = _view(module, replace)
    with torch.no_grad():
        want, got = module(*sample), view(*sample)
    want = want if isinstance(want, (tuple, list)) else (want,)
    got = got if isinstance(got, (tuple, list)) else (got,)
    if len(want) != len(got) or not all(
            a.shape == b.shape and torch.allclose(a, b, rtol=1e-4, atol=1e-5 * max(1.0, float(a.abs().max())))
            for a, b in zip(want, got, strict=True)):
        log.debug("batch-norm folding of %d pairs changed the outputs", len(replace) // 2)
        return None
    return view, len(replace) // 2


def fold_batch_norms(module: Any, sample: tuple[Any, ...]) -> tuple[Any, int]:
    """``(model to convert, number of BatchNorms folded)``: a folded view of ``module`` when that is possible and
    exact, else ``(module, 0)``."""

    from edgeconv.intake.modules import walk_modules

    try:
        # Every name a module is reachable by, through the registries (a model may shadow named_modules()).
        modules = dict(walk_modules(module, dedupe=False))
        canonical = dict(walk_modules(module))  # one name per module, for the hooks
        for find in (lambda: _pairs_by_hooks(module, sample, canonical), lambda: _pairs(module, sample)):
            folded = _fold(module, sample, modules, find())
            if folded is not None:
                return folded
        return module, 0
    except Exception as e:  # noqa: BLE001 - folding is an optimisation: any failure converts the model as it is
        log.debug("batch-norm folding skipped: %s: %s", type(e).__name__, e)
        return module, 0
