"""Loading users' models and checkpoints.

Checkpoints are loaded with ``torch.load(weights_only=True)``: a pickle that needs arbitrary code is refused unless
the user passes ``--trust-checkpoint`` (loading a checkpoint from the internet must not run its code silently).
Mismatched weights are an error listing missing/unexpected keys and shape mismatches — ``strict=False`` loading
that silently leaves layers random is the commonest way a "converted" model turns out useless.

Everything the user's code does (importing the model file, calling the factory, trusted unpickling) runs behind
``guard.user_code``: whatever it raises, ``SystemExit`` included, is a ModelLoadError naming the user's file.
The factory's folder stays importable for the whole run (imports inside ``build()``, a trusted full-model pickle
that refers to the user's classes), at the front of ``sys.path`` while the user's code is loaded and behind the
installed packages afterwards, so a user's ``onnx.py`` cannot shadow the real onnx later in the run.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.util
import inspect
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeconv.core.console import log
from edgeconv.core.errors import ConfigError, ModelLoadError
from edgeconv.core.hashing import sha256_file, sha256_json
from edgeconv.core.lazy import require
from edgeconv.intake.guard import describe, user_code
from edgeconv.intake.modules import load_tensors, named_tensors, set_eval, walk_modules
from edgeconv.intake.pickled import is_torchscript_archive, load_pickled_model, load_trusted, load_weights_only
from edgeconv.intake.pt2 import TRUST_HINT, load_exported_program

TORCHSCRIPT_SUFFIXES = (".ts", ".torchscript", ".jit", ".pt", ".pth")

__all__ = ["SourceModel", "apply_state_dict", "load_source", "load_state_dict", "parse_model_args", "set_eval",
           "walk_modules"]


@dataclass
class SourceModel:
    """What the pipeline starts from: a torch module, or an ONNX file when the user gave one."""

    kind: str  # "factory" | "module" | "torchscript" | "pickled-module" | "exported-program" | "onnx"
    spec: str
    sha256: str  # hash of everything that determines the model (code file, weights, args)
    module: Any = None  # torch.nn.Module (eval mode) when kind != "onnx"
    onnx_path: Path | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def manifest(self) -> dict[str, Any]:
        return {"kind": self.kind, "spec": self.spec, "sha256": self.sha256, **self.details}


_WORDS = {"true": True, "false": False, "none": None, "null": None}


def parse_model_args(items: list[str] | tuple[str, ...] | None) -> dict[str, Any]:
    """``key=value`` pairs; values are parsed as Python literals when they look like one (3, 0.5, True, [1,2]).

    ``true``/``false``/``none``/``null`` in any case are the booleans and None too: that is how the README, TOML and
    every shell user writes them (``--option int8_fallback=false``), and as the string ``'false'`` a bool option
    was refused ("must be bool, not str") and a factory flag would have been truthy.
    """
    import ast

    out: dict[str, Any] = {}
    for item in items or ():
        if not isinstance(item, str):
            raise ConfigError(f"--model-arg {item!r} is not KEY=VALUE text", hint="e.g. --model-arg num_classes=5")
        key, sep, val = item.partition("=")
        if not sep or not key.isidentifier():
            raise ConfigError(f"--model-arg '{item}' is not KEY=VALUE", hint="e.g. --model-arg num_classes=5")
        if val.strip().lower() in _WORDS:
            out[key] = _WORDS[val.strip().lower()]
            continue
        try:
            out[key] = ast.literal_eval(val) if len(val) < 10_000 else val
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            out[key] = val
    return out


@contextlib.contextmanager
def _user_path(folder: Path) -> Iterator[None]:
    """``folder`` first on ``sys.path`` inside the block (Python's own rule for a script's folder); afterwards it
    stays reachable, but behind every installed package (see the module docstring)."""
    entry = str(folder)
    sys.path.insert(0, entry)
    try:
        yield
    finally:
        with contextlib.suppress(ValueError):
            sys.path.remove(entry)
        if entry not in sys.path:
            sys.path.append(entry)


def _import_factory(spec: str) -> tuple[Any, str, Path | None]:
    """Resolve ``path/file.py:func`` or ``package.module:func``; returns (callable, code hash, the file's folder)."""
    target, sep, attr = spec.rpartition(":")
    if not sep or not target or not attr:
        raise ConfigError(f"--model '{spec}' is not FILE.py:FACTORY, MODULE:FACTORY or a model file",
                          hint="e.g. --model mymodels.py:build")
    folder: Path | None = None
    if target.endswith(".py"):
        path = Path(target)
        if not path.is_file():
            raise ModelLoadError(f"model file {target} does not exist", hint="check the path before ':'")
        code_hash = sha256_file(path)
        name = f"edgeconv_user_{code_hash[:16]}"
        mod_spec = importlib.util.spec_from_file_location(name, path)
        if mod_spec is None or mod_spec.loader is None:
            raise ModelLoadError(f"cannot import {target}")
        module = importlib.util.module_from_spec(mod_spec)
        sys.modules[name] = module
        folder = path.resolve().parent
        with _user_path(folder), user_code(f"importing {target}",
                                           hint="fix the error in your model file (--verbose shows where)"):
            try:
                mod_spec.loader.exec_module(module)
            except BaseException:
                sys.modules.pop(name, None)
                raise
    else:
        with user_code(f"importing module '{target}'",
                       hint="check the module is installed or on PYTHONPATH (--verbose shows where it failed)"):
            module = importlib.import_module(target)
        src = inspect.getsourcefile(module)
        code_hash = sha256_file(src) if src else sha256_json(target)
    fn = getattr(module, attr, None)
    if fn is None or not callable(fn):
        raise ModelLoadError(f"'{attr}' is not a callable in {target}",
                             hint="the name after ':' must be a function or class that returns an nn.Module")
    return fn, code_hash, folder


def _safetensors(path: Path) -> dict[str, Any]:
    try:
        from safetensors.torch import load_file
    except ImportError as e:
        raise ModelLoadError("safetensors is not installed", hint="pip install 'edgeconv[torch]'") from e
    try:
        return load_file(str(path))
    except MemoryError as e:
        raise ModelLoadError(f"weights {path} do not fit in memory", hint="is this the right file?") from e
    except Exception as e:  # SafetensorError (header too large, truncated data, bad JSON), OSError
        raise ModelLoadError(f"weights {path} are not a valid safetensors file: {describe(e)}",
                             hint="the file may be truncated or corrupt; re-save it with safetensors.torch."
                                  "save_file") from e


def load_state_dict(path: str | Path, *, trust: bool = False) -> dict[str, Any]:
    """Read a checkpoint into a flat state_dict (``state_dict``/``model`` wrappers and ``module.`` stripped)."""
    torch = require("torch", "torch")
    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(f"weights file {path} {'is not a file' if path.exists() else 'does not exist'}",
                             hint="--weights takes a .pt/.pth/.safetensors file")
    if path.suffix == ".safetensors":
        obj: Any = _safetensors(path)
    elif trust:
        obj = load_trusted(path)
    else:
        obj = load_weights_only(path, needs_code=(f"{path} needs arbitrary unpickling to load (it stores Python "
                                                  "objects, not only tensors)", TRUST_HINT),
                                unreadable=f"cannot read weights {path}")
    if isinstance(obj, dict):
        for key in ("state_dict", "model_state_dict", "model", "ema"):
            if key in obj and obj[key] is not None and not isinstance(obj[key], (int, float, str)):
                obj = obj[key]
                break
    if isinstance(obj, torch.nn.Module):
        obj = named_tensors(obj)
    elif hasattr(obj, "state_dict") and callable(obj.state_dict):
        with user_code(f"reading the state_dict of {path}"):
            obj = obj.state_dict()
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ModelLoadError(f"{path} does not hold a state_dict (a dict of tensors)",
                             hint="save the weights with torch.save(model.state_dict(), path)")
    out = {}
    for k, v in obj.items():
        k = str(k)
        while k.startswith("module."):
            k = k[len("module."):]
        out[k] = v
    return out


def apply_state_dict(module: Any, state: dict[str, Any], source: str) -> None:
    """Load ``state`` into ``module`` after checking keys and shapes; raise one clear error listing every mismatch."""
    own = named_tensors(module)
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
              for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    # BatchNorm's num_batches_tracked is bookkeeping, not a weight: its absence is harmless.
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    if missing or unexpected or shapes:
        def few(xs: list[str]) -> str:
            return ", ".join(xs[:4]) + (f" (+{len(xs) - 4} more)" if len(xs) > 4 else "")
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing key(s): {few(missing)}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected key(s): {few(unexpected)}")
        if shapes:
            parts.append(f"{len(shapes)} shape mismatch(es): {few(shapes)}")
        raise ModelLoadError(f"weights {source} do not match the model: " + "; ".join(parts),
                             hint="check --model/--model-arg (e.g. num_classes) against the checkpoint")
    with user_code(f"loading the weights {source} into the model"):
        load_tensors(module, state)


def module_sha256(module: Any) -> str:
    """Identity of an in-memory module: its class, the class's source file, its repr and every tensor's bytes."""
    torch = require("torch", "torch")
    cls = type(module)
    try:
        src = inspect.getsourcefile(cls)
        code = sha256_file(src) if src else None
    except (TypeError, OSError):
        code = None
    with user_code(f"describing {cls.__qualname__}"):
        text = repr(module)
    tensors = []
    for name, t in sorted(named_tensors(module).items()):
        flat = t.detach().cpu().contiguous().reshape(-1)
        raw = flat.view(torch.uint8).numpy().tobytes() if flat.numel() else b""
        tensors.append([name, str(t.dtype), list(t.shape), hashlib.sha256(raw).hexdigest()])
    return sha256_json({"class": f"{cls.__module__}.{cls.__qualname__}", "code": code, "repr": text,
                        "tensors": tensors})


def _eval_mode(module: Any, what: str) -> None:
    if set_eval(module):
        log.info("%s is in training mode: converted in inference mode (BatchNorm running statistics, no dropout), "
                 "as model.eval() would", what)


def _from_module(module: Any) -> SourceModel:
    cls = type(module)
    spec = f"{cls.__module__}.{cls.__qualname__} (module object)"
    _eval_mode(module, spec)
    return SourceModel("module", spec, module_sha256(module), module=module)


def load_source(model: Any, *, weights: str | None = None, model_args: dict[str, Any] | None = None,
                trust_checkpoint: bool = False) -> SourceModel:
    """Resolve ``--model`` (+ ``--weights``) into a SourceModel, with the module in eval mode.

    ``model`` is a spec string (see the README) or, from Python, an ``nn.Module`` object (``weights`` are then
    loaded into it when given).
    """
    model_args = model_args or {}
    torch_mod = sys.modules.get("torch")
    if torch_mod is not None and isinstance(model, torch_mod.nn.Module):
        if model_args:
            raise ConfigError("model_args apply to a factory, not to a module object")
        if weights:
            apply_state_dict(model, load_state_dict(weights, trust=trust_checkpoint), weights)
        return _from_module(model)
    if isinstance(model, Path):
        model = str(model)
    if not isinstance(model, str) or not model.strip():
        raise ConfigError(f"--model must be a spec string or an nn.Module, not {type(model).__name__}",
                          hint="e.g. 'mymodels.py:build', 'net.onnx', 'model.pt2', or pass the module object")
    for spec, what in ((model, "--model"), (weights, "--weights")):
        if isinstance(spec, str) and re.match(r"^[A-Za-z][\w+.-]*://", spec):
            raise ConfigError(f"{what} {spec} is a URL; edgeconv reads local files only and downloads nothing",
                              hint="download the file first and pass its path")
    path = Path(model)
    if path.suffix == ".onnx":
        if not path.is_file():
            raise ModelLoadError(f"ONNX file {model} does not exist")
        if weights:
            raise ConfigError("--weights cannot be combined with an .onnx model (the weights are in the graph)")
        return SourceModel("onnx", str(path), sha256_file(path), onnx_path=path.resolve())
    torch = require("torch", "torch")
    if path.suffix == ".pt2" and path.is_file():
        if weights:
            raise ConfigError("--weights cannot be combined with a .pt2 model (the weights are in the archive)")
        ep = load_exported_program(path, trust=trust_checkpoint)
        with user_code(f"building the module of {model}"):
            module = ep.module()
        return SourceModel("exported-program", str(path), sha256_file(path), module=module)
    if path.suffix in TORCHSCRIPT_SUFFIXES and path.is_file() and ":" not in model:
        if weights:
            raise ConfigError(f"--weights cannot be combined with the model file {model} (the weights are in it)",
                              hint="--weights goes with --model FILE.py:FACTORY")
        if not is_torchscript_archive(path):  # torch.save(model) or a training checkpoint holding the model
            mod, details = load_pickled_model(path, trust=trust_checkpoint)
            set_eval(mod)
            return SourceModel("pickled-module", str(path), sha256_file(path), module=mod, details=details)
        try:
            mod = torch.jit.load(str(path), map_location="cpu")
        except Exception as e:
            raise ModelLoadError(f"{model} is a damaged TorchScript file: {describe(e)}",
                                 hint="re-save it with torch.jit.save, or give --model FILE.py:FACTORY --weights "
                                      "for a state_dict") from e
        set_eval(mod)
        return SourceModel("torchscript", str(path), sha256_file(path), module=mod)
    if ":" not in model and not path.exists():
        raise ModelLoadError(f"model '{model}' does not exist", hint="give FILE.py:FACTORY, MODULE:FACTORY, "
                             "a TorchScript/.pt2 file or an .onnx file")
    factory, code_hash, folder = _import_factory(model)
    try:
        inspect.signature(factory).bind(**model_args)
    except TypeError as e:
        raise ModelLoadError(f"{model} does not accept {', '.join(f'{k}={v!r}' for k, v in model_args.items())}"
                             f": {e}", hint="check --model-arg names against the factory's parameters") from e
    except ValueError:  # no signature (a builtin): let the call decide
        pass
    with contextlib.ExitStack() as stack:
        if folder is not None:
            stack.enter_context(_user_path(folder))
        call = f"calling {model}({', '.join(f'{k}={v!r}' for k, v in model_args.items())})"
        with user_code(call, hint="the factory itself raised; --verbose shows where"):
            module = factory(**model_args)
        if not isinstance(module, torch.nn.Module):
            raise ModelLoadError(f"factory {model} returned {type(module).__name__}, not a torch.nn.Module",
                                 hint="the factory must return the model (an nn.Module instance)")
        details: dict[str, Any] = {"model_args": model_args}
        wh = None
        if weights:
            state = load_state_dict(weights, trust=trust_checkpoint)
            apply_state_dict(module, state, weights)
            wh = sha256_file(weights)
            details["weights"] = str(weights)
            details["weights_sha256"] = wh
    _eval_mode(module, model)
    factory_name = model.rpartition(":")[2]
    return SourceModel("factory", model, sha256_json({"code": code_hash, "factory": factory_name, "weights": wh,
                                                      "args": model_args}),
                       module=module, details=details)
