"""TensorRT's INT8 calibration cache (implicit quantization, TensorRT <= 10): writer and parser.

Format, as written by ``IInt8Calibrator::writeCalibrationCache`` and read back by ``readCalibrationCache`` (and by
``trtexec --int8 --calib=FILE``): plain ASCII, one header line ``TRT-<version>-<algorithm>``, then one line per
tensor ``<tensor name>: <8 hex digits>`` where the hex digits are the IEEE-754 float32 bit pattern of the tensor's
*scale*, big-endian (``struct.pack('!f', scale).hex()``), e.g. ``images: 3c010204`` is 1/127 (amax 1.0).  The scale
is symmetric: ``scale = max(|min|, |max|) / 127``.

Why we write it ourselves: TensorRT is not installable here, and the cache only needs activation ranges, which
``edgeconv.calibration.stats.activation_ranges`` already computes (shared with the Q/DQ model, so the implicit and
explicit INT8 engines are calibrated on exactly the same statistics).

The header's algorithm must match the calibrator that reads it: TensorRT ignores a cache whose algorithm differs
from the calibrator's ``getAlgorithm()``.  ``trtexec --calib`` uses an ``IInt8EntropyCalibrator2``, as does our own
engine builder, so the header says ``EntropyCalibration2`` whatever statistic produced the ranges (recorded in the
manifest instead).  The version field is TensorRT's ``NV_TENSORRT_VERSION`` (8.6.1 -> ``8601``, 10.3.0 ->
``100300``).
"""

from __future__ import annotations

import math
import re
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from edgeconv.core.errors import ConfigError

ALGORITHMS = ("EntropyCalibration2", "EntropyCalibration", "MinMaxCalibration", "LegacyCalibration")
DEFAULT_ALGORITHM = "EntropyCalibration2"
JETPACK6_TRT = "10.3.0"  # JetPack 6.x ships TensorRT 10.3; used when no TensorRT is installed to ask
_HEADER = re.compile(r"^TRT-(\d+)-(\w+)$")
_LINE = re.compile(r"^(.+): ([0-9a-fA-F]{1,8})$")
# The smallest scale written: a tensor that is constantly 0 still needs a positive scale (TensorRT rejects 0).
MIN_SCALE = 1e-8


def trt_version_number(version: str) -> int:
    """``NV_TENSORRT_VERSION`` for a version string: major*1000+minor*100+patch before 10, major*10000+... after."""
    parts = [int(p) for p in re.findall(r"\d+", version)[:3]] + [0, 0, 0]
    major, minor, patch = parts[:3]
    if major >= 10:
        return major * 10000 + minor * 100 + patch
    return major * 1000 + minor * 100 + patch


def scale_to_hex(scale: float) -> str:
    """8 hex digits of the big-endian float32 bit pattern, as TensorRT writes them."""
    return struct.pack("!f", scale).hex()


def hex_to_scale(text: str) -> float:
    """Inverse of :func:`scale_to_hex`; accepts the short forms some third-party writers produce (no leading 0s)."""
    return struct.unpack("!f", bytes.fromhex(text.rjust(8, "0")))[0]


def symmetric_scale(lo: float, hi: float, qmax: int = 127) -> float:
    """TensorRT's symmetric INT8 scale for a range: amax / 127 (zero point is always 0)."""
    amax = max(abs(float(lo)), abs(float(hi)))
    if not math.isfinite(amax):
        raise ConfigError(f"activation range ({lo}, {hi}) is not finite; the calibration data overflows the model")
    return max(amax / qmax, MIN_SCALE)


@dataclass
class CalibrationCache:
    """A parsed (or to-be-written) cache: header fields and ``{tensor name: scale}`` in file order."""

    scales: dict[str, float] = field(default_factory=dict)
    version: int = trt_version_number(JETPACK6_TRT)
    algorithm: str = DEFAULT_ALGORITHM

    @property
    def header(self) -> str:
        return f"TRT-{self.version}-{self.algorithm}"

    def amax(self, name: str) -> float:
        return self.scales[name] * 127.0

    def dumps(self) -> str:
        lines = [self.header]
        for name, scale in self.scales.items():
            if ": " in name or "\n" in name:
                raise ConfigError(f"tensor name {name!r} cannot be written to a TensorRT calibration cache")
            lines.append(f"{name}: {scale_to_hex(scale)}")
        return "\n".join(lines) + "\n"

    def write(self, path: Path) -> Path:
        path = Path(path)
        path.write_text(self.dumps(), encoding="ascii")
        return path

    @classmethod
    def from_ranges(cls, ranges: Mapping[str, tuple[float, float]], *, version: int | None = None,
                    algorithm: str = DEFAULT_ALGORITHM, names: list[str] | None = None) -> CalibrationCache:
        """Scales from (min, max) ranges; ``names`` restricts and orders the tensors (default: all, sorted)."""
        if algorithm not in ALGORITHMS:
            raise ConfigError(f"unknown TensorRT calibration algorithm '{algorithm}'", hint=f"one of {ALGORITHMS}")
        keys = names if names is not None else sorted(ranges)
        missing = [n for n in keys if n not in ranges]
        if missing:
            raise ConfigError(f"no activation range for tensor(s) {missing[:5]} (of {len(missing)})")
        return cls({n: symmetric_scale(*ranges[n]) for n in keys},
                   version if version is not None else trt_version_number(JETPACK6_TRT), algorithm)

    @classmethod
    def parse(cls, text: str) -> CalibrationCache:
        """Read a cache written by TensorRT or by :meth:`dumps`; raises ConfigError on anything malformed."""
        lines = [ln.rstrip("\r") for ln in text.splitlines() if ln.strip()]
        if not lines:
            raise ConfigError("empty TensorRT calibration cache")
        m = _HEADER.match(lines[0].strip())
        if not m:
            raise ConfigError(f"not a TensorRT calibration cache: header {lines[0][:60]!r}",
                              hint="the first line must look like TRT-100300-EntropyCalibration2")
        scales: dict[str, float] = {}
        for i, ln in enumerate(lines[1:], start=2):
            lm = _LINE.match(ln)
            if not lm:
                raise ConfigError(f"line {i} of the calibration cache is not 'tensor: hexscale': {ln[:80]!r}")
            scales[lm.group(1)] = hex_to_scale(lm.group(2))
        return cls(scales, int(m.group(1)), m.group(2))

    @classmethod
    def read(cls, path: Path) -> CalibrationCache:
        return cls.parse(Path(path).read_text(encoding="ascii"))
