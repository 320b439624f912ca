"""The preprocessing contract: one declarative spec used by calibration, evaluation and benchmarking alike.

decode → colour order → resize (stretch | letterbox | center-crop) → float → scale and mean/std (in a configurable
order: real models do divide by 255 after normalising) → layout → dtype.  The spec is stored in every manifest and
hashed into calibration cache keys, so an INT8 model can never silently be calibrated with other preprocessing
than the one it is evaluated with.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from edgeconv.core.errors import ConfigError
from edgeconv.core.hashing import sha256_json

RESIZE = ("stretch", "letterbox", "center-crop")


@dataclass(frozen=True)
class Preprocess:
    size: tuple[int, int] = (256, 256)  # (height, width) of the model input
    color: str = "RGB"
    resize: str = "stretch"
    pad_value: int = 114
    scale: float = 1.0 / 255.0
    mean: tuple[float, ...] = (0.0, 0.0, 0.0)
    std: tuple[float, ...] = (1.0, 1.0, 1.0)
    order: str = "scale-first"  # scale-first: (x*scale - mean)/std; normalize-first: ((x - mean)/std)*scale
    layout: str = "NCHW"
    dtype: str = "float32"
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.color not in ("RGB", "BGR", "GRAY"):
            raise ConfigError(f"preprocess color must be RGB, BGR or GRAY, not {self.color!r}")
        if self.resize not in RESIZE:
            raise ConfigError(f"preprocess resize must be one of {RESIZE}, not {self.resize!r}")
        if self.order not in ("scale-first", "normalize-first"):
            raise ConfigError(f"preprocess order must be scale-first or normalize-first, not {self.order!r}")
        if self.layout not in ("NCHW", "NHWC"):
            raise ConfigError(f"preprocess layout must be NCHW or NHWC, not {self.layout!r}")
        if len(self.size) != 2 or min(self.size) <= 0:
            raise ConfigError(f"preprocess size must be HxW, got {self.size!r}")
        if any(s == 0 for s in self.std):
            raise ConfigError("preprocess std must not contain 0")

    # -- (de)serialisation ------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["size"] = list(self.size)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        if not d["extra"]:
            d.pop("extra")
        return d

    @property
    def sha256(self) -> str:
        return sha256_json(self.to_dict())

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Preprocess:
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(d) - known
        if unknown:
            raise ConfigError(f"unknown preprocess key(s) {sorted(unknown)}", hint=f"known: {sorted(known)}")
        d = dict(d)
        for k in ("size", "mean", "std"):
            if k in d:
                d[k] = tuple(d[k])
        if isinstance(d.get("scale"), str):
            d["scale"] = _number(d["scale"])
        return cls(**d)

    @classmethod
    def parse(cls, text: str, base: Preprocess | None = None) -> Preprocess:
        """CLI form: ``size=320x320,color=BGR,resize=letterbox,scale=1/255,mean=0.485/0.456/0.406,...``;
        or a path to a JSON/TOML file holding the same keys."""
        p = Path(text)
        if p.suffix in (".json", ".toml") and p.is_file():
            import json

            import tomllib

            data = json.loads(p.read_text()) if p.suffix == ".json" else tomllib.loads(p.read_text())
            return cls.from_dict(data.get("preprocess", data))
        kv: dict[str, Any] = {}
        for item in filter(None, (x.strip() for x in text.split(","))):
            k, sep, v = item.partition("=")
            if not sep:
                raise ConfigError(f"--preprocess item '{item}' is not key=value",
                                  hint="e.g. --preprocess size=320x320,color=BGR,scale=1/255")
            k = k.strip().replace("-", "_")
            if k == "size":
                kv[k] = tuple(int(x) for x in v.lower().split("x"))
            elif k in ("mean", "std"):
                kv[k] = tuple(_number(x) for x in v.split("/"))
            elif k in ("scale",):
                kv[k] = _number(v)
            elif k == "pad_value":
                kv[k] = int(v)
            else:
                kv[k] = v
        return replace(base, **kv) if base else cls(**kv)

    # -- application ------------------------------------------------------------------------------------------
    def load(self, path: str | Path) -> np.ndarray:
        """Decode an image file into HxWxC uint8 in the contract's colour order."""
        from PIL import Image

        with Image.open(path) as im:
            im = im.convert("L" if self.color == "GRAY" else "RGB")
            arr = np.asarray(im)
        if self.color == "BGR":
            arr = arr[..., ::-1]
        return arr

    def apply(self, image: np.ndarray) -> np.ndarray:
        """HxWxC uint8 (already in the contract's colour order) → model input with a batch axis."""
        return self.apply_with_meta(image)[0]

    def apply_with_meta(self, image: np.ndarray) -> tuple[np.ndarray, dict[str, float]]:
        """Also returns how to map model-input coordinates back to the image: x_img = (x - pad_x) / scale_x."""
        from PIL import Image

        if image.ndim == 2:
            image = image[..., None]
        h0, w0 = image.shape[:2]
        th, tw = self.size
        meta = {"scale_x": tw / w0, "scale_y": th / h0, "pad_x": 0.0, "pad_y": 0.0, "width": w0, "height": h0}
        pil = Image.fromarray(image.squeeze(-1) if image.shape[-1] == 1 else image)
        if self.resize == "stretch":
            out = np.asarray(pil.resize((tw, th), Image.BILINEAR))
        elif self.resize == "letterbox":
            r = min(th / h0, tw / w0)
            nh, nw = round(h0 * r), round(w0 * r)
            canvas = np.full((th, tw, image.shape[-1]), self.pad_value, dtype=np.uint8)
            py, px = (th - nh) // 2, (tw - nw) // 2
            resized = np.asarray(pil.resize((nw, nh), Image.BILINEAR))
            canvas[py:py + nh, px:px + nw] = resized.reshape(nh, nw, -1)
            out = canvas
            meta.update(scale_x=r, scale_y=r, pad_x=float(px), pad_y=float(py))
        else:  # center-crop: resize the short side, then crop the middle
            r = max(th / h0, tw / w0)
            nh, nw = round(h0 * r), round(w0 * r)
            resized = np.asarray(pil.resize((nw, nh), Image.BILINEAR)).reshape(nh, nw, -1)
            py, px = (nh - th) // 2, (nw - tw) // 2
            out = resized[py:py + th, px:px + tw]
            meta.update(scale_x=r, scale_y=r, pad_x=float(-px), pad_y=float(-py))
        x = out.reshape(th, tw, -1).astype(np.float32)
        mean = np.asarray(self.mean, np.float32)
        std = np.asarray(self.std, np.float32)
        if self.order == "scale-first":
            x = (x * np.float32(self.scale) - mean) / std
        else:
            x = ((x - mean) / std) * np.float32(self.scale)
        if self.layout == "NCHW":
            x = x.transpose(2, 0, 1)
        return np.ascontiguousarray(x[None].astype(self.dtype)), meta

    def input_shape(self, channels: int = 3) -> tuple[int, ...]:
        h, w = self.size
        return (1, channels, h, w) if self.layout == "NCHW" else (1, h, w, channels)


def _number(text: str) -> float:
    text = text.strip()
    if "/" in text:
        a, b = text.split("/", 1)
        return float(a) / float(b)
    return float(text)
