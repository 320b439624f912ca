"""A whole model saved with ``torch.save(model, path)``, or inside a training checkpoint (Ultralytics' and YOLOv5's
``best.pt``: ``{"model": <half-precision DetectionModel>, "ema": ..., "train_args": {"imgsz": 640, ...}}``), as a
``--model`` of its own.

Why: it is the file most detector users have, and asking them to write a factory for a model the file already holds
sends them back to the tool they came from. Unpickling it runs code the file names (its classes' modules are
imported, any ``__reduce__`` runs), so without ``--trust-checkpoint`` nothing is unpickled beyond torch's
weights-only loader: a file that needs more is refused in one line naming the flag, a file that holds only tensors
is told to come with its factory. With the flag, the model is taken as its own exporter would take it:

- the module under ``ema`` (when set) or ``model`` — what Ultralytics' ``attempt_load_weights`` picks;
- cast to float32 (these checkpoints store half weights; every backend here starts from float32 and makes its own
  fp16 or int8 from it);
- detection heads with an ``export`` switch (Ultralytics' and YOLOv5's ``Detect`` family) put in export mode, which
  is what their own exporters do: one decoded tensor instead of ``(decoded, [raw maps])``;
- the input shape taken from the checkpoint's training image size when ``--input`` is not given.

Everything applied is recorded in the manifest's ``source`` block.
"""

from __future__ import annotations

import contextlib
import os
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from edgeconv.core.errors import ModelLoadError
from edgeconv.core.lazy import require
from edgeconv.intake.guard import first_line, user_code

#: detection heads (of the ``EXPORT_HEADS``) that are trained and predict on letterboxed RGB images scaled by 1/255
DETECT_HEADS = ("Detect", "Segment", "Pose", "OBB", "v10Detect")
#: head classes whose ``export`` flag switches them to a single decoded output (Ultralytics 8.x, YOLOv5)
EXPORT_HEADS = (*DETECT_HEADS, "WorldDetect", "YOLOEDetect", "YOLOESegment", "Classify", "RTDETRDecoder")
#: where a checkpoint dict keeps the module, in the order its own loaders look
MODULE_KEYS = ("ema", "model", "module", "net", "network")


def is_torchscript_archive(path: Path) -> bool:
    """A TorchScript archive is a zip with ``<name>/constants.pkl`` and ``<name>/code/``; ``torch.save``'s zip has
    neither (and legacy ``torch.save`` files are not zips at all)."""
    try:
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
    except (zipfile.BadZipFile, OSError, ValueError):
        return False
    return any(n.endswith("/constants.pkl") or "/code/" in n for n in names)


@contextlib.contextmanager
def _cwd_importable() -> Iterator[None]:
    """The working folder importable, behind every installed package, while a *trusted* checkpoint is unpickled:
    a YOLOv5 ``best.pt`` names ``models.yolo.Model``, importable from the repository root, where ``python
    export.py`` finds it (a console script does not put the working folder on ``sys.path``)."""
    entry = os.getcwd()
    added = entry not in sys.path
    if added:
        sys.path.append(entry)
    try:
        yield
    finally:
        if added:
            with contextlib.suppress(ValueError):
                sys.path.remove(entry)


def load_weights_only(path: Path, *, needs_code: tuple[str, str], unreadable: str) -> Any:
    """``torch.load(weights_only=True)``: tensors and plain containers, nothing of the file's code. A file that needs
    more is a ModelLoadError with ``needs_code`` (message, hint); one that does not read, with ``unreadable``."""
    torch = require("torch", "torch")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except MemoryError as e:
        raise ModelLoadError(f"{path} does not fit in memory", hint="is this the right file?") from e
    except Exception as e:  # UnpicklingError and friends differ across torch versions
        text = str(e)
        if "weights_only" in text or "Unpickl" in type(e).__name__ or "GLOBAL" in text:
            raise ModelLoadError(needs_code[0], hint=needs_code[1]) from e
        raise ModelLoadError(f"{unreadable}: {first_line(e)}",
                             hint="the file may be truncated or not a PyTorch checkpoint") from e


def _find_module(obj: Any, torch: Any) -> tuple[Any, str | None]:
    if isinstance(obj, torch.nn.Module):
        return obj, None
    if isinstance(obj, dict):
        for key in MODULE_KEYS:
            if isinstance(obj.get(key), torch.nn.Module):
                return obj[key], key
    return None, None


def _image_size(obj: Any) -> tuple[int, int] | None:
    """``train_args.imgsz`` (Ultralytics) or ``opt.img_size`` (YOLOv5) as (height, width)."""
    if not isinstance(obj, dict):
        return None
    for key, field in (("train_args", "imgsz"), ("opt", "img_size"), ("opt", "imgsz"), ("args", "imgsz")):
        args = obj.get(key)
        value = args.get(field) if isinstance(args, dict) else getattr(args, field, None)
        if isinstance(value, bool):
            continue
        if isinstance(value, int) and value > 0:
            return value, value
        if isinstance(value, (list, tuple)) and value and all(isinstance(v, int) and v > 0 for v in value):
            return (value[0], value[-1]) if len(value) <= 2 else None
    return None


def _export_mode(module: Any) -> list[str]:
    switched = []
    for m in module.modules():
        cls = type(m)
        if cls.__name__ in EXPORT_HEADS and isinstance(getattr(cls, "export", None), bool):
            m.export = True
            switched.append(cls.__name__)
    return sorted(set(switched))


def load_trusted(path: Path) -> Any:
    """``torch.load`` of a checkpoint the user trusts (``--trust-checkpoint``): the working folder importable, a
    module it names that is missing one error naming it, anything its own code raises a model-load error."""
    torch = require("torch", "torch")
    with user_code(f"unpickling the trusted checkpoint {path}",
                   hint="the checkpoint's own code failed: are the classes it names importable here "
                        "(e.g. pip install ultralytics for an Ultralytics .pt)?"), _cwd_importable():
        try:
            return torch.load(path, map_location="cpu", weights_only=False)
        except ModuleNotFoundError as e:
            raise ModelLoadError(
                f"{path} names the module '{e.name}', which is not importable here",
                hint=f"if '{str(e.name).split('.')[0]}' is a package, install it (an Ultralytics .pt needs pip "
                     "install ultralytics); if it is the model's own code, run from the root of the code that saved "
                     "it (YOLOv5: its repository) or put that folder on PYTHONPATH") from e


def load_pickled_model(path: Path, *, trust: bool) -> tuple[Any, dict[str, Any]]:
    """``(module, details)`` from a pickled model or checkpoint; ``details`` says what was applied and may carry
    ``input`` (an input spec) and ``preprocess`` defaults read from the checkpoint."""
    torch = require("torch", "torch")
    if not trust:
        load_weights_only(
            path, needs_code=(f"{path} is a pickled model or checkpoint (it stores Python objects, as Ultralytics' "
                              "and YOLOv5's .pt files do): loading it runs code the file names",
                              "only if you trust its origin, pass --trust-checkpoint (the classes it names must be "
                              f"importable here, e.g. pip install ultralytics); or --model FILE.py:FACTORY "
                              f"--weights {path}"),
            unreadable=f"{path} is neither a TorchScript file nor a readable PyTorch checkpoint")
        raise ModelLoadError(f"{path} holds weights only (tensors, no model)",
                             hint=f"give the code that builds the model: --model FILE.py:FACTORY --weights {path}")
    obj = load_trusted(path)
    module, key = _find_module(obj, torch)
    if module is None:
        what = f"a dict with keys {sorted(map(str, obj))[:8]}" if isinstance(obj, dict) else type(obj).__name__
        raise ModelLoadError(f"{path} holds no nn.Module ({what})",
                             hint=f"if it holds weights, give the model's code: --model FILE.py:FACTORY --weights "
                                  f"{path}")
    details: dict[str, Any] = {"pickled": True, "checkpoint_key": key}
    low = sorted({str(t.dtype).removeprefix("torch.") for t in [*module.parameters(), *module.buffers()]
                  if t.is_floating_point() and t.dtype != torch.float32})
    if low:
        with user_code(f"casting the model in {path} to float32"):
            module = module.float()
        details["cast_to_float32_from"] = low
    with user_code(f"switching the heads of {path} to export mode"):
        heads = _export_mode(module)
    if heads:
        details["export_mode"] = heads
    size = _image_size(obj)
    if size is not None:
        details["input"] = f"images:1x3x{size[0]}x{size[1]}"
        details["input_from"] = "the checkpoint's training image size"
    # by class, not only by the heads switched: a YOLOv5 fork's Detect (plate detectors with landmarks) names its
    # export switch otherwise, and is trained on letterboxed RGB /255 all the same
    if any(h in DETECT_HEADS for h in heads) or any(type(m).__name__ in DETECT_HEADS for m in module.modules()):
        details["preprocess"] = "color=RGB,resize=letterbox,scale=1/255"
    return module, details
