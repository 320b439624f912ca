"""The preprocessing contract: one declarative spec used by calibration, evaluation and benchmarking alike.

decode → colour order → resize (stretch | letterbox | center-crop, with PIL's antialiased bilinear filter or the
non-antialiased bilinear filter of ``cv2.resize(INTER_LINEAR)`` that OpenCV-based pipelines use) → float → scale
and mean/std (in a configurable order: real models do divide by 255 after normalising) → layout → dtype.  The
spec is stored in every manifest and hashed into calibration cache keys, so an INT8 model can never silently be
calibrated with other preprocessing than the one it is evaluated with.

Every value a user types (``--preprocess``, a profile's ``[preprocess]``, a JSON/TOML file) is checked here, with a
ConfigError naming the key: a contract that silently means something else is worse than none.  Decoding handles
the image modes real folders contain (16-bit grey and colour PNG/TIFF, palette, CMYK, grey, alpha, EXIF
orientation) or refuses the file by name.  ``synthetic_feeds`` makes image-like inputs through the contract, so
verification sees the value range and statistics the model really gets instead of uniform noise.

This module is over 400 lines because the contract, its parser and its two resize filters must stay one unit:
the filters are part of what the contract's hash promises.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from edgeconv.core.errors import CalibrationError, ConfigError
from edgeconv.core.hashing import sha256_json

RESIZE = ("stretch", "letterbox", "center-crop")
RESIZE_FILTERS = ("pil-bilinear", "cv2-bilinear")
COLORS = ("RGB", "BGR", "GRAY")
DTYPES = ("float32", "float16")
MAX_SIDE = 16384
_HINT = "e.g. --preprocess size=320x320,color=BGR,resize=letterbox,scale=1/255,mean=0.485/0.456/0.406"


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
    resize_filter: str = "pil-bilinear"  # or cv2-bilinear: cv2.resize(INTER_LINEAR), not antialiased

    def __post_init__(self) -> None:
        set_ = object.__setattr__  # frozen: normalise the types once, here
        set_(self, "size", _size(self.size))
        for key, choices in (("color", COLORS), ("resize", RESIZE), ("order", ("scale-first", "normalize-first")),
                             ("layout", ("NCHW", "NHWC")), ("dtype", DTYPES), ("resize_filter", RESIZE_FILTERS)):
            v = getattr(self, key)
            if v not in choices:
                raise ConfigError(f"preprocess {key} must be one of {', '.join(choices)}, not {v!r}", hint=_HINT)
        if isinstance(self.pad_value, bool) or not isinstance(self.pad_value, int) or not 0 <= self.pad_value <= 255:
            raise ConfigError(f"preprocess pad_value must be an integer 0-255, not {self.pad_value!r}", hint=_HINT)
        set_(self, "scale", _finite("scale", self.scale))
        if self.scale == 0:
            raise ConfigError("preprocess scale must not be 0 (every input would be constant)", hint=_HINT)
        set_(self, "mean", _vector("mean", self.mean))
        set_(self, "std", _vector("std", self.std))
        if any(s == 0 for s in self.std):
            raise ConfigError("preprocess std must not contain 0", hint=_HINT)
        for key in ("mean", "std"):
            v = getattr(self, key)
            # 3 equal values on a grey contract are the RGB defaults (0,0,0)/(1,1,1): harmless, kept valid
            grey_default = self.channels == 1 and len(v) == 3 and len(set(v)) == 1
            if len(v) not in (1, self.channels) and not grey_default:
                raise ConfigError(f"preprocess {key} has {len(v)} values but color={self.color} has "
                                  f"{self.channels} channel(s)", hint=f"give 1 or {self.channels} values, a/b/c")
        if not isinstance(self.extra, dict):
            raise ConfigError("preprocess extra must be a table")

    @property
    def channels(self) -> int:
        return 1 if self.color == "GRAY" else 3

    # -- (de)serialisation ------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["size"] = list(self.size)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        if not d["extra"]:
            d.pop("extra")
        if d["resize_filter"] == "pil-bilinear":  # the default is left out, so existing contracts keep their hash
            d.pop("resize_filter")
        return d

    @property
    def sha256(self) -> str:
        return sha256_json(self.to_dict())

    @classmethod
    def from_dict(cls, d: Any, *, source: str = "preprocess") -> Preprocess:
        """From a table (profile ``[preprocess]``, JSON/TOML file, run config); values may be typed or text."""
        if not isinstance(d, dict):
            raise ConfigError(f"{source} must be a table of preprocess keys, not {type(d).__name__}", hint=_HINT)
        known = {f.name for f in fields(cls)}
        norm = {str(k).replace("-", "_"): v for k, v in d.items()}
        unknown = set(norm) - known
        if unknown:
            raise ConfigError(f"{source}: unknown preprocess key(s) {sorted(unknown)}", hint=f"known: {sorted(known)}")
        try:
            return cls(**{k: _coerce(k, v) for k, v in norm.items()})
        except ConfigError as e:
            raise ConfigError(f"{source}: {e.message}", hint=e.hint) from e

    @classmethod
    def parse(cls, text: str, base: Preprocess | None = None) -> Preprocess:
        """CLI form: ``size=320x320,color=BGR,resize=letterbox,scale=1/255,mean=0.485/0.456/0.406,...``;
        or a path to a JSON/TOML file holding the same keys."""
        if not isinstance(text, str):
            raise ConfigError(f"--preprocess must be text, not {type(text).__name__}", hint=_HINT)
        p = Path(text)
        if p.suffix in (".json", ".toml") and "=" not in text:
            from edgeconv.core.files import read_structured

            if not p.is_file():
                raise ConfigError(f"--preprocess file {p} does not exist", hint=_HINT)
            data = read_structured(p, "preprocess file")
            return cls.from_dict(data.get("preprocess", data), source=str(p))
        kv: dict[str, Any] = {}
        known = {f.name for f in fields(cls)} - {"extra"}
        for item in filter(None, (x.strip() for x in text.split(","))):
            k, sep, v = item.partition("=")
            k = k.strip().replace("-", "_")
            if not sep or not k:
                raise ConfigError(f"--preprocess item '{item}' is not key=value", hint=_HINT)
            if k not in known:
                raise ConfigError(f"--preprocess: unknown key '{k}'", hint=f"known: {', '.join(sorted(known))}")
            try:
                kv[k] = _coerce(k, v.strip())
            except ConfigError as e:
                raise ConfigError(f"--preprocess {k}={v}: {e.message.removeprefix('preprocess ')}",
                                  hint=e.hint or _HINT) from e
        if base is not None:
            return cls.from_dict({**base.to_dict(), **kv})
        try:
            return cls(**kv)
        except ConfigError as e:
            raise ConfigError(f"--preprocess: {e.message.removeprefix('preprocess ')}", hint=e.hint) from e

    # -- decoding ---------------------------------------------------------------------------------------------
    def load(self, path: str | Path) -> np.ndarray:
        """Decode an image file into HxWxC uint8 in the contract's colour order (EXIF orientation applied).

        16-bit images are reduced to 8 bits by their high byte (what PIL does for 16-bit colour and OpenCV's
        ``imread`` for both); alpha is dropped (as ``cv2.imread`` and PIL's ``convert("RGB")`` do); a mode with no
        defined 8-bit meaning (32-bit float) is refused with a CalibrationError naming the file.
        """
        from PIL import Image, ImageOps

        try:
            with Image.open(path) as im:
                im.load()
                im = ImageOps.exif_transpose(im)
                arr = _to_uint8(im, gray=self.color == "GRAY", path=path)
        except CalibrationError:
            raise
        except Exception as e:  # unreadable/truncated/bomb: the caller skips it by name
            raise CalibrationError(f"cannot decode image {path}: {type(e).__name__}: {' '.join(str(e).split())}") \
                from e
        if self.color == "BGR":
            arr = arr[..., ::-1]
        return np.ascontiguousarray(arr)

    # -- application ------------------------------------------------------------------------------------------
    def apply(self, image: np.ndarray) -> np.ndarray:
        """HxWxC uint8 (already in the contract's colour order) → model input with a batch axis."""
        return self.apply_with_meta(image)[0]

    def _resize(self, image: np.ndarray, w: int, h: int) -> np.ndarray:
        if self.resize_filter == "cv2-bilinear":
            return cv2_resize_linear(image, w, h)
        from PIL import Image

        pil = Image.fromarray(image.squeeze(-1) if image.shape[-1] == 1 else image)
        return np.asarray(pil.resize((w, h), Image.BILINEAR)).reshape(h, w, -1)

    def apply_with_meta(self, image: np.ndarray) -> tuple[np.ndarray, dict[str, float]]:
        """Also returns how to map model-input coordinates back to the image: x_img = (x - pad_x) / scale_x."""
        if image.ndim == 2:
            image = image[..., None]
        image = np.ascontiguousarray(image, dtype=np.uint8)
        h0, w0 = image.shape[:2]
        th, tw = self.size
        meta = {"scale_x": tw / w0, "scale_y": th / h0, "pad_x": 0.0, "pad_y": 0.0, "width": w0, "height": h0}
        if self.resize == "stretch":
            out = self._resize(image, tw, th)
        elif self.resize == "letterbox":
            r = min(th / h0, tw / w0)
            nh, nw = max(1, round(h0 * r)), max(1, round(w0 * r))
            canvas = np.full((th, tw, image.shape[-1]), self.pad_value, dtype=np.uint8)
            py, px = (th - nh) // 2, (tw - nw) // 2
            canvas[py:py + nh, px:px + nw] = self._resize(image, nw, nh)
            out = canvas
            meta.update(scale_x=r, scale_y=r, pad_x=float(px), pad_y=float(py))
        else:  # center-crop: resize the short side, then crop the middle
            r = max(th / h0, tw / w0)
            nh, nw = max(th, round(h0 * r)), max(tw, round(w0 * r))
            resized = self._resize(image, nw, nh)
            py, px = (nh - th) // 2, (nw - tw) // 2
            out = resized[py:py + th, px:px + tw]
            meta.update(scale_x=r, scale_y=r, pad_x=float(-px), pad_y=float(-py))
        x = out.reshape(th, tw, -1).astype(np.float32)
        c = x.shape[-1]
        mean, std = _per_channel(self.mean, c), _per_channel(self.std, c)
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

    # -- inputs for verification ------------------------------------------------------------------------------
    def synthetic_images(self, n: int, seed: int = 0) -> list[np.ndarray]:
        """``n`` image-like HxWx3 uint8 pictures (smooth colour fields, shapes, edges and sensor-like noise) at
        sizes around the contract's, so the resize and padding paths are exercised too. Deterministic by seed."""
        from PIL import Image, ImageDraw

        rng = np.random.default_rng(seed)
        th, tw = self.size
        out = []
        for _ in range(n):
            h0 = max(8, int(th * rng.uniform(0.7, 1.6)))
            w0 = max(8, int(tw * rng.uniform(0.7, 1.6)))
            grid = rng.uniform(20, 235, size=(int(rng.integers(2, 6)), int(rng.integers(2, 6)), 3)).astype(np.uint8)
            im = Image.fromarray(grid).resize((w0, h0), Image.BICUBIC)
            draw = ImageDraw.Draw(im)
            for _ in range(int(rng.integers(3, 9))):
                x0, x1 = sorted(rng.integers(0, w0, 2).tolist())
                y0, y1 = sorted(rng.integers(0, h0, 2).tolist())
                colour = tuple(int(v) for v in rng.integers(0, 256, 3))
                (draw.ellipse if rng.random() < 0.5 else draw.rectangle)((x0, y0, x1 + 1, y1 + 1), fill=colour)
            arr = np.asarray(im).astype(np.float32) + rng.normal(0.0, 6.0, size=(h0, w0, 3)).astype(np.float32)
            out.append(np.clip(arr, 0, 255).astype(np.uint8))
        return out

    def synthetic_feeds(self, spec: Any, n: int = 4, seed: int = 0) -> list[dict[str, np.ndarray]]:
        """``n`` feeds ``{spec.name: tensor}`` made by passing ``synthetic_images`` through this contract: inputs in
        the value range and with the statistics the model sees in use (uniform [0, 1) noise is neither).

        ``spec`` is the model input's TensorSpec; its shape must be what the contract produces (batch axis
        filled with independent pictures). A ConfigError says why otherwise.
        """
        shape = tuple(spec.static_shape)
        want = self.input_shape(self.channels)
        if not str(spec.dtype).startswith("float"):
            raise ConfigError(f"input '{spec.name}' is {spec.dtype}; the preprocess contract makes float inputs")
        if len(shape) != 4 or shape[1:] != want[1:]:
            raise ConfigError(f"input '{spec.name}' {shape} is not what the preprocess contract makes {want}",
                              hint="set --preprocess size=HxW,layout=... (and color=GRAY for 1 channel)")
        pics = self.synthetic_images(n * shape[0], seed)
        if self.color == "GRAY":
            pics = [np.asarray(p.astype(np.float32) @ np.float32([0.299, 0.587, 0.114])).astype(np.uint8)[..., None]
                    for p in pics]
        elif self.color == "BGR":
            pics = [p[..., ::-1] for p in pics]
        feeds = []
        for i in range(n):
            batch = np.concatenate([self.apply(p) for p in pics[i * shape[0]:(i + 1) * shape[0]]], axis=0)
            feeds.append({spec.name: np.ascontiguousarray(batch.astype(spec.dtype))})
        return feeds


# -- value checks -------------------------------------------------------------------------------------------------


def _number(text: Any) -> float:
    """``0.5``, ``1/255``, ``2e-3`` (text or a number) → a finite float; ConfigError otherwise."""
    if isinstance(text, bool):
        raise ConfigError(f"{text!r} is not a number")
    if isinstance(text, (int, float)):
        return float(text)
    if not isinstance(text, str):
        raise ConfigError(f"{text!r} is not a number")
    t = text.strip()
    try:
        if "/" in t:
            a, b = t.split("/", 1)
            return float(a) / float(b)
        return float(t)
    except ZeroDivisionError as e:
        raise ConfigError(f"{text!r} divides by zero") from e
    except (ValueError, OverflowError) as e:
        raise ConfigError(f"{text!r} is not a number (e.g. 0.5 or 1/255)") from e


def _finite(key: str, v: Any) -> float:
    try:
        x = _number(v)
    except ConfigError as e:
        raise ConfigError(f"preprocess {key}: {e.message}", hint=_HINT) from e
    if not math.isfinite(x):
        raise ConfigError(f"preprocess {key} must be finite, not {v!r}", hint=_HINT)
    return x


def _vector(key: str, v: Any) -> tuple[float, ...]:
    if isinstance(v, str):
        v = v.split("/")
    elif isinstance(v, (int, float)) and not isinstance(v, bool):
        v = [v]
    if not isinstance(v, (list, tuple)) or not 1 <= len(v) <= 4:
        raise ConfigError(f"preprocess {key} must be 1 to 4 numbers (a/b/c), not {v!r}", hint=_HINT)
    return tuple(_finite(key, x) for x in v)


def _size(v: Any) -> tuple[int, int]:
    if isinstance(v, str):
        parts = v.lower().split("x")
        if len(parts) == 1:
            parts = parts * 2
        if len(parts) != 2 or not all(p.strip().isdigit() and len(p.strip()) < 7 for p in parts):
            raise ConfigError(f"preprocess size must be HxW (e.g. 320x320), not {v!r}", hint=_HINT)
        v = tuple(int(p) for p in parts)
    elif isinstance(v, int) and not isinstance(v, bool):
        v = (v, v)
    if (not isinstance(v, (list, tuple)) or len(v) != 2
            or any(isinstance(s, bool) or not isinstance(s, int) for s in v)):
        raise ConfigError(f"preprocess size must be HxW (two integers), not {v!r}", hint=_HINT)
    if not all(1 <= s <= MAX_SIDE for s in v):
        raise ConfigError(f"preprocess size {v[0]}x{v[1]}: each side must be 1-{MAX_SIDE}", hint=_HINT)
    return int(v[0]), int(v[1])


def _coerce(key: str, v: Any) -> Any:
    """One key's value from text or typed data into the field's type (ConfigError on nonsense)."""
    if key == "size":
        return _size(v)
    if key in ("mean", "std"):
        if isinstance(v, str):
            return tuple(_finite(key, x) for x in v.split("/"))
        return _vector(key, v)
    if key == "scale":
        return _finite(key, v)
    if key == "pad_value":
        if isinstance(v, str):
            if not v.strip().isdigit():
                raise ConfigError(f"preprocess pad_value must be an integer 0-255, not {v!r}", hint=_HINT)
            return int(v)
        return v
    if key == "extra":
        return v
    if not isinstance(v, str):
        raise ConfigError(f"preprocess {key} must be text, not {v!r}", hint=_HINT)
    return v.upper() if key == "color" else v


def _per_channel(v: tuple[float, ...], c: int) -> np.ndarray:
    """mean/std as a per-channel vector for ``c`` channels (one value, or all-equal values, broadcast)."""
    if len(v) == c:
        return np.asarray(v, np.float32)
    if len(set(v)) > 1:
        raise ConfigError(f"preprocess mean/std {list(v)} has {len(v)} values but the image has {c} channel(s)",
                          hint="give one value per channel of the image the contract reads")
    return np.full((c,), v[0], np.float32)


def _to_uint8(im: Any, *, gray: bool, path: str | Path) -> np.ndarray:
    """A decoded PIL image as HxWx3 (or HxW for ``gray``) uint8, whatever its mode."""
    mode = im.mode
    if mode.startswith("I;16") or mode == "I":
        a = np.asarray(im)
        if mode == "I" and (a.min() < 0 or a.max() > 65535):
            raise CalibrationError(f"image {path} is 32-bit integer ({int(a.min())}..{int(a.max())}); only 8- and "
                                   "16-bit images have a defined range", hint="save it as 8/16-bit, or as .npy")
        a = (a.astype(np.uint32) >> 8).astype(np.uint8)  # the high byte, as PIL does for 16-bit colour
        return a if gray else np.repeat(a[..., None], 3, axis=-1)
    if mode == "F":
        raise CalibrationError(f"image {path} is 32-bit floating point; its value range is not defined",
                               hint="save it as an 8/16-bit image, or as a .npy tensor already preprocessed")
    if mode in ("P", "PA"):
        im = im.convert("RGBA")
    try:
        return np.asarray(im.convert("L" if gray else "RGB"))
    except ValueError as e:  # e.g. LAB → RGB has no conversion
        raise CalibrationError(f"image {path} has colour mode {mode}, which cannot be read as "
                               f"{'grey' if gray else 'RGB'}", hint="save it as RGB or greyscale") from e


# -- cv2.resize(INTER_LINEAR), exactly, in numpy ---------------------------------------------------------------------
# OpenCV's uint8 bilinear resize is fixed point: coordinates map with half-pixel centres, x is clamped at the
# borders (y is not: its rows are clipped instead), weights are rounded to 11 bits, the horizontal pass keeps the
# products, and the vertical pass of its SIMD kernel computes ((S0>>4)*b0>>16) + ((S1>>4)*b1>>16) rounded by >>2.
# An exact 2x downscale is averaged over 2x2 blocks (cv2 switches to INTER_AREA there). Tested equal to cv2 5.0.


def _linear_taps(dst: int, src: int, clamp: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    f = ((np.arange(dst, dtype=np.float64) + 0.5) * (src / dst) - 0.5).astype(np.float32)
    s = np.floor(f).astype(np.int64)
    f = (f - s.astype(np.float32)).astype(np.float32)
    if clamp:
        edge = (s < 0) | (s >= src - 1)
        f[edge] = 0
        s = np.where(s < 0, 0, np.where(s >= src - 1, src - 1, s))
    a1 = np.rint(f * np.float32(2048)).astype(np.int64)
    a0 = np.rint((np.float32(1) - f) * np.float32(2048)).astype(np.int64)
    return np.clip(s, 0, src - 1), np.clip(s + 1, 0, src - 1), a0, a1


def cv2_resize_linear(image: np.ndarray, w: int, h: int) -> np.ndarray:
    """``cv2.resize(image, (w, h), interpolation=cv2.INTER_LINEAR)`` for HxW or HxWxC uint8, without OpenCV."""
    img = image[..., None] if image.ndim == 2 else image
    hs, ws = img.shape[:2]
    x = img.astype(np.int64)
    if (hs, ws) == (h, w):
        out = x
    elif hs == 2 * h and ws == 2 * w:
        out = (x[0::2, 0::2] + x[0::2, 1::2] + x[1::2, 0::2] + x[1::2, 1::2] + 2) >> 2
    else:
        xs0, xs1, xa0, xa1 = _linear_taps(w, ws, clamp=True)
        ys0, ys1, yb0, yb1 = _linear_taps(h, hs, clamp=False)
        rows = x[:, xs0] * xa0[None, :, None] + x[:, xs1] * xa1[None, :, None]
        s0, s1 = rows[ys0], rows[ys1]
        out = ((((s0 >> 4) * yb0[:, None, None]) >> 16) + (((s1 >> 4) * yb1[:, None, None]) >> 16) + 2) >> 2
    out = np.clip(out, 0, 255).astype(np.uint8)
    return out[..., 0] if image.ndim == 2 else out
