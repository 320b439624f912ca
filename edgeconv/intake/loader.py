"""Loading users' models and checkpoints.

Checkpoints are loaded with ``torch.load(weights_only=True)``: a pickle that needs arbitrary code is refused unless
the user passes ``--trust-checkpoint`` (loading a checkpoint from the internet must not run its code silently).
Mismatched weights are an error listing missing/unexpected keys and shape mismatches — ``strict=False`` loading
that silently leaves layers random is the commonest way a "converted" model turns out useless.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeconv.core.errors import ConfigError, ModelLoadError
from edgeconv.core.hashing import sha256_file, sha256_json
from edgeconv.core.lazy import require

TORCHSCRIPT_SUFFIXES = (".ts", ".torchscript", ".jit", ".pt", ".pth")


@dataclass
class SourceModel:
    """What the pipeline starts from: a torch module, or an ONNX file when the user gave one."""

    kind: str  # "factory" | "torchscript" | "exported-program" | "onnx"
    spec: str
    sha256: str  # hash of everything that determines the model (code file, weights, args)
    module: Any = None  # torch.nn.Module (eval mode) when kind != "onnx"
    onnx_path: Path | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def manifest(self) -> dict[str, Any]:
        return {"kind": self.kind, "spec": self.spec, "sha256": self.sha256, **self.details}


def set_eval(module: Any) -> None:
    """Inference mode without calling ``module.eval()``: real models have attributes that shadow nn.Module methods
    (``self.train = cfg.train``, ``self.eval = ...``), which make ``.eval()`` crash. Setting ``training`` on every
    submodule is exactly what ``eval()`` does (BatchNorm then uses its running statistics, Dropout is off)."""
    for m in module.modules():
        if hasattr(m, "training"):
            object.__setattr__(m, "training", False)


def parse_model_args(items: list[str] | tuple[str, ...] | None) -> dict[str, Any]:
    """``key=value`` pairs; values are parsed as Python literals when they look like one (3, 0.5, True, [1,2])."""
    import ast

    out: dict[str, Any] = {}
    for item in items or ():
        key, sep, val = item.partition("=")
        if not sep or not key.isidentifier():
            raise ConfigError(f"--model-arg '{item}' is not KEY=VALUE", hint="e.g. --model-arg num_classes=5")
        try:
            out[key] = ast.literal_eval(val)
        except (ValueError, SyntaxError):
            out[key] = val
    return out


def _import_factory(spec: str) -> tuple[Any, str]:
    """Resolve ``path/file.py:func`` or ``package.module:func``; returns (callable, hash of its code)."""
    target, sep, attr = spec.rpartition(":")
    if not sep or not target or not attr:
        raise ConfigError(f"--model '{spec}' is not FILE.py:FACTORY, MODULE:FACTORY or a model file",
                          hint="e.g. --model mymodels.py:build")
    if target.endswith(".py"):
        path = Path(target)
        if not path.is_file():
            raise ModelLoadError(f"model file {target} does not exist")
        name = f"edgeconv_user_{sha256_file(path)[:16]}"
        mod_spec = importlib.util.spec_from_file_location(name, path)
        if mod_spec is None or mod_spec.loader is None:
            raise ModelLoadError(f"cannot import {target}")
        module = importlib.util.module_from_spec(mod_spec)
        sys.modules[name] = module
        sys.path.insert(0, str(path.resolve().parent))
        try:
            mod_spec.loader.exec_module(module)
        except Exception as e:
            raise ModelLoadError(f"importing {target} failed: {type(e).__name__}: {e}") from e
        finally:
            sys.path.pop(0)
        code_hash = sha256_file(path)
    else:
        try:
            module = importlib.import_module(target)
        except ImportError as e:
            raise ModelLoadError(f"cannot import module '{target}': {e}") from e
        src = inspect.getsourcefile(module)
        code_hash = sha256_file(src) if src else sha256_json(target)
    fn = getattr(module, attr, None)
    if fn is None or not callable(fn):
        raise ModelLoadError(f"'{attr}' is not a callable in {target}")
    return fn, code_hash


def load_state_dict(path: str | Path, *, trust: bool = False) -> dict[str, Any]:
    """Read a checkpoint into a flat state_dict (``state_dict``/``model`` wrappers and ``module.`` stripped)."""
    torch = require("torch", "torch")
    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(f"weights file {path} does not exist")
    if path.suffix == ".safetensors":
        try:
            from safetensors.torch import load_file
        except ImportError as e:
            raise ModelLoadError("safetensors is not installed", hint="pip install safetensors") from e
        obj: Any = load_file(str(path))
    else:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=not trust)
        except Exception as e:  # UnpicklingError and friends differ across torch versions
            msg = str(e).splitlines()[0] if str(e) else type(e).__name__
            if not trust and ("weights_only" in str(e) or "Unpickl" in type(e).__name__ or "GLOBAL" in str(e)):
                raise ModelLoadError(
                    f"{path} needs arbitrary unpickling to load (it stores Python objects, not only tensors)",
                    hint="only if you trust its origin, pass --trust-checkpoint") from e
            raise ModelLoadError(f"cannot read weights {path}: {msg}") from e
    if isinstance(obj, dict):
        for key in ("state_dict", "model_state_dict", "model", "ema"):
            if key in obj and obj[key] is not None and not isinstance(obj[key], (int, float, str)):
                obj = obj[key]
                break
    if hasattr(obj, "state_dict") and callable(obj.state_dict):
        obj = obj.state_dict()
    if not isinstance(obj, dict) or not all(hasattr(v, "shape") for v in obj.values()):
        raise ModelLoadError(f"{path} does not hold a state_dict (a dict of tensors)")
    out = {}
    for k, v in obj.items():
        while k.startswith("module."):
            k = k[len("module."):]
        out[k] = v
    return out


def apply_state_dict(module: Any, state: dict[str, Any], source: str) -> None:
    """Load ``state`` into ``module`` after checking keys and shapes; raise one clear error listing every mismatch."""
    own = module.state_dict()
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
    module.load_state_dict(state, strict=False)


def load_source(model: str, *, weights: str | None = None, model_args: dict[str, Any] | None = None,
                trust_checkpoint: bool = False) -> SourceModel:
    """Resolve ``--model`` (+ ``--weights``) into a SourceModel, with the module in eval mode."""
    model_args = model_args or {}
    path = Path(model)
    if path.suffix == ".onnx":
        if not path.is_file():
            raise ModelLoadError(f"ONNX file {model} does not exist")
        if weights:
            raise ConfigError("--weights cannot be combined with an .onnx model (the weights are in the graph)")
        return SourceModel("onnx", str(path), sha256_file(path), onnx_path=path.resolve())
    torch = require("torch", "torch")
    if path.suffix == ".pt2" and path.is_file():
        try:
            ep = torch.export.load(str(path))
        except Exception as e:
            raise ModelLoadError(f"cannot load ExportedProgram {model}: {type(e).__name__}: {e}") from e
        return SourceModel("exported-program", str(path), sha256_file(path), module=ep.module())
    if path.suffix in TORCHSCRIPT_SUFFIXES and path.is_file() and ":" not in model:
        try:
            mod = torch.jit.load(str(path), map_location="cpu")
        except Exception as e:
            raise ModelLoadError(f"{model} is not a TorchScript file ({type(e).__name__}); a state_dict needs "
                                 "--model FILE.py:FACTORY --weights " + str(path)) from e
        set_eval(mod)
        return SourceModel("torchscript", str(path), sha256_file(path), module=mod)
    if ":" not in model and not path.exists():
        raise ModelLoadError(f"model '{model}' does not exist", hint="give FILE.py:FACTORY, MODULE:FACTORY, "
                             "a TorchScript/.pt2 file or an .onnx file")
    factory, code_hash = _import_factory(model)
    try:
        module = factory(**model_args)
    except TypeError as e:
        raise ModelLoadError(f"calling {model}({', '.join(f'{k}={v!r}' for k, v in model_args.items())}) failed: {e}",
                             hint="check --model-arg names against the factory's parameters") from e
    except Exception as e:
        raise ModelLoadError(f"factory {model} raised {type(e).__name__}: {e}") from e
    if not isinstance(module, torch.nn.Module):
        raise ModelLoadError(f"factory {model} returned {type(module).__name__}, not a torch.nn.Module")
    details: dict[str, Any] = {"model_args": model_args}
    wh = None
    if weights:
        state = load_state_dict(weights, trust=trust_checkpoint)
        apply_state_dict(module, state, weights)
        wh = sha256_file(weights)
        details["weights"] = str(weights)
        details["weights_sha256"] = wh
    set_eval(module)
    return SourceModel("factory", model, sha256_json({"code": code_hash, "weights": wh, "args": model_args}),
                       module=module, details=details)
