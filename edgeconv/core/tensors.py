"""Tensor descriptions shared by manifests, runners and the CLI's ``--input`` parser."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from edgeconv.core.errors import ConfigError

_DTYPES = {"float32", "float16", "int8", "uint8", "int32", "int64", "bool"}
_ITEMSIZE = {"float32": 4, "float16": 2, "int8": 1, "uint8": 1, "int32": 4, "int64": 8, "bool": 1}
# One input tensor larger than this is a typo (an extra digit), not a model: refusing it costs nothing, while
# allocating it ends in the kernel's OOM killer or a MemoryError deep inside an exporter.
MAX_INPUT_BYTES = 4 << 30
MAX_RANK = 8


@dataclass(frozen=True)
class TensorSpec:
    """A named tensor: static shape (ints; -1 or a name for dynamic axes), dtype, layout tag."""

    name: str
    shape: tuple[Any, ...]
    dtype: str = "float32"
    layout: str | None = None
    dynamic: dict[int, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["shape"] = list(self.shape)
        d["dynamic"] = {str(k): v for k, v in self.dynamic.items()}
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TensorSpec:
        return cls(name=d["name"], shape=tuple(d["shape"]), dtype=d.get("dtype", "float32"),
                   layout=d.get("layout"), dynamic={int(k): v for k, v in (d.get("dynamic") or {}).items()})

    @property
    def static_shape(self) -> tuple[int, ...]:
        """Shape with dynamic axes replaced by 1 (used to build sample inputs)."""
        return tuple(s if isinstance(s, int) and s > 0 else 1 for s in self.shape)


_INPUT_RE = re.compile(r"^(?:(?P<name>[A-Za-z_][\w.\-/]*):)?(?P<shape>\d+(?:x\d+)*)(?::(?P<dtype>\w+))?$")


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def check_shape(name: str, shape: tuple[Any, ...], dtype: str, what: str) -> None:
    """Refuse shapes no model input has: zero-size axes, more than MAX_RANK axes, more than MAX_INPUT_BYTES."""
    if len(shape) > MAX_RANK:
        raise ConfigError(f"{what}: {len(shape)} axes; at most {MAX_RANK} are supported")
    static = [d for d in shape if isinstance(d, int) and d > 0]
    if any(isinstance(d, int) and d == 0 for d in shape):
        raise ConfigError(f"{what}: input '{name}' has a zero-size axis {tuple(shape)}",
                          hint="every axis of a model input needs at least one element")
    n = 1
    for d in static:
        n *= d
    size = n * _ITEMSIZE.get(dtype, 4)
    if size > MAX_INPUT_BYTES:
        raise ConfigError(f"{what}: input '{name}' {tuple(shape)} {dtype} would take {_human(size)} "
                          f"(the largest accepted is {_human(MAX_INPUT_BYTES)})",
                          hint="check the shape for a typo, e.g. --input images:1x3x224x224")


def parse_input_spec(text: str) -> TensorSpec:
    """Parse ``[name:]1x3x320x320[:dtype]`` as given to ``--input``.

    Without a name the spec's name is empty: the model decides it (:func:`name_inputs`), so ``--input 1x3x640x640``
    works as an image size does in other exporters."""
    if not isinstance(text, str):
        raise ConfigError(f"--input {text!r} must be a string [NAME:]1x3xHxW[:dtype]")
    m = _INPUT_RE.match(text.strip())
    if not m:
        raise ConfigError(f"--input '{text}' is not of the form [NAME:]1x3xHxW[:dtype]",
                          hint="e.g. --input 1x3x320x320 or --input images:1x3x320x320")
    dtype = m.group("dtype") or "float32"
    if dtype not in _DTYPES:
        raise ConfigError(f"--input '{text}': unknown dtype '{dtype}'", hint=f"one of {sorted(_DTYPES)}")
    dims = m.group("shape").split("x")
    if len(dims) > MAX_RANK or any(len(d) > 12 for d in dims):
        raise ConfigError(f"--input '{text}': shape is not a plausible tensor shape",
                          hint="e.g. --input images:1x3x224x224")
    shape = tuple(int(s) for s in dims)
    if any(s <= 0 for s in shape):
        raise ConfigError(f"--input '{text}': every dimension must be positive")
    name = m.group("name") or ""
    check_shape(name or "input", shape, dtype, f"--input '{text}'")
    return TensorSpec(name, shape, dtype, "NCHW" if len(shape) == 4 else None)


def name_inputs(specs: list[TensorSpec], names: list[str]) -> list[TensorSpec]:
    """Give unnamed specs (``--input 1x3x320x320``) the model's own input names, in order; ``images`` (one input)
    or ``input<i>`` where the model does not say. Named specs are kept as given."""
    out = []
    for i, s in enumerate(specs):
        if s.name:
            out.append(s)
            continue
        name = names[i] if i < len(names) else ("images" if len(specs) == 1 else f"input{i}")
        out.append(TensorSpec(name, s.shape, s.dtype, s.layout))
    taken = [s.name for s in out]
    dup = sorted({n for n in taken if taken.count(n) > 1})
    if dup:
        raise ConfigError(f"--input names {dup} are given twice", hint="name each input once: NAME:SHAPE")
    return out


def random_feeds(specs: list[TensorSpec], seed: int = 0, low: float = 0.0, high: float = 1.0) -> dict[str, np.ndarray]:
    """Deterministic random inputs for the given specs (uniform in [low, high) for floats)."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for s in specs:
        shape = s.static_shape
        if s.dtype.startswith("float"):
            feeds[s.name] = rng.uniform(low, high, size=shape).astype(s.dtype)
        elif s.dtype == "bool":
            feeds[s.name] = rng.integers(0, 2, size=shape).astype(bool)
        else:
            feeds[s.name] = rng.integers(0, 10, size=shape).astype(s.dtype)
    return feeds
