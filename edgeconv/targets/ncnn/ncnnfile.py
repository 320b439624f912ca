"""Read and write ncnn's text ``.param`` and the matching ``.bin`` weight stream.

Why our own reader: the ncnn wheel ships no ncnn2int8/ncnnoptimize, so INT8 weights must be re-packed here, and the
Python bindings do not expose layer weights.  A ``.bin`` has no index: every layer's ``load_model`` reads its blobs
in order, each either *tagged* (a 4-byte flag: 0 = raw fp32, 0x01306B47 = fp16, 0x000D4B38 = int8, padded to 4
bytes) or *raw* fp32 (bias, scales).  We therefore describe, per layer type, the sequence of blobs ncnn's
``load_model`` reads (src/layer/*.cpp), walk the file with it and insist that the walk ends exactly at the end of
the file: a layout we got wrong cannot pass silently.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgeconv.core.errors import ConversionError

MAGIC = "7767517"
TAG_FP32 = 0x00000000
TAG_FP16 = 0x01306B47
TAG_INT8 = 0x000D4B38
TAG_FP32_SCALED = 0x0002C056


@dataclass
class Layer:
    """One line of a ``.param`` file; ``params`` keeps the raw ``id=value`` strings (arrays stay ``-23300=...``)."""

    type: str
    name: str
    bottoms: list[str]
    tops: list[str]
    params: dict[int, str] = field(default_factory=dict)
    weights: list[Blob] = field(default_factory=list)

    def pint(self, key: int, default: int = 0) -> int:
        return int(float(self.params[key])) if key in self.params else default

    def line(self) -> str:
        ps = " ".join(f"{k}={v}" for k, v in self.params.items())
        io = " ".join(self.bottoms + self.tops)
        return f"{self.type:<24} {self.name:<24} {len(self.bottoms)} {len(self.tops)} {io}{' ' + ps if ps else ''}"


@dataclass
class Blob:
    """One weight blob: ``tagged`` blobs carry a storage flag (fp32/fp16/int8); ``data`` is float32 or int8."""

    data: np.ndarray
    tagged: bool

    def to_bytes(self) -> bytes:
        if not self.tagged:
            return np.ascontiguousarray(self.data, "<f4").tobytes()
        if self.data.dtype == np.int8:
            raw = self.data.tobytes()
            return struct.pack("<I", TAG_INT8) + raw + b"\0" * (-len(raw) % 4)
        if self.data.dtype == np.float16:
            raw = np.ascontiguousarray(self.data, "<f2").tobytes()
            return struct.pack("<I", TAG_FP16) + raw + b"\0" * (-len(raw) % 4)
        return struct.pack("<I", TAG_FP32) + np.ascontiguousarray(self.data, "<f4").tobytes()


@dataclass
class NcnnModel:
    layers: list[Layer]
    blob_count: int

    def layer(self, name: str) -> Layer:
        return next(la for la in self.layers if la.name == name)

    @property
    def input_blobs(self) -> list[str]:
        return [t for la in self.layers if la.type == "Input" for t in la.tops]

    @property
    def output_blobs(self) -> list[str]:
        """Blobs no layer consumes, in order of production (pnnx names them out0, out1, ...)."""
        consumed = {b for la in self.layers for b in la.bottoms}
        return [t for la in self.layers for t in la.tops if t not in consumed]

    def param_text(self) -> str:
        lines = [MAGIC, f"{len(self.layers)} {self.blob_count}"] + [la.line() for la in self.layers]
        return "\n".join(lines) + "\n"

    def write(self, param: Path, bin_: Path) -> None:
        param.write_text(self.param_text())
        with open(bin_, "wb") as f:
            for la in self.layers:
                for b in la.weights:
                    f.write(b.to_bytes())


def count_blobs(layers: list[Layer]) -> int:
    """Distinct blobs of a net: every blob is produced by exactly one layer (inputs by ``Input`` layers)."""
    return len({t for la in layers for t in la.tops})


def parse_param(text: str) -> tuple[list[Layer], int]:
    rows = [r.split() for r in text.splitlines() if r.strip()]
    if not rows or rows[0][0] != MAGIC:
        raise ConversionError("not an ncnn text .param (bad magic number)")
    blob_count = int(rows[1][1])
    layers = []
    for tok in rows[2:]:
        nb, nt = int(tok[2]), int(tok[3])
        bottoms, tops = tok[4:4 + nb], tok[4 + nb:4 + nb + nt]
        params: dict[int, str] = {}
        for kv in tok[4 + nb + nt:]:
            k, _, v = kv.partition("=")
            params[int(k)] = v
        layers.append(Layer(tok[0], tok[1], bottoms, tops, params))
    return layers, blob_count


class _Reader:
    def __init__(self, data: bytes, where: str) -> None:
        self.data, self.pos, self.where = data, 0, where

    def _take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise ConversionError(f"{self.where}: .bin ends early (layout mismatch)")
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def raw(self, n: int) -> Blob:
        return Blob(np.frombuffer(self._take(4 * n), "<f4").astype(np.float32), tagged=False)

    def tagged(self, n: int) -> Blob:
        (flag,) = struct.unpack("<I", self._take(4))
        if flag == TAG_FP16:
            d = np.frombuffer(self._take(2 * n), "<f2").copy()
            self._take(-2 * n % 4)
            return Blob(d, True)
        if flag == TAG_INT8:
            d = np.frombuffer(self._take(n), np.int8).copy()
            self._take(-n % 4)
            return Blob(d, True)
        if flag in (TAG_FP32, TAG_FP32_SCALED):
            return Blob(np.frombuffer(self._take(4 * n), "<f4").astype(np.float32), True)
        raise ConversionError(f"{self.where}: unsupported weight storage flag 0x{flag:08X} (quantized table?)")


def _layout(la: Layer) -> list[tuple[bool, int]]:
    """(tagged, count) for each blob ``load_model`` of this layer type reads, after ncnn's src/layer/*.cpp."""
    t, p = la.type, la.pint
    if t in ("Convolution", "Convolution1D", "Convolution3D", "Deconvolution", "Deconvolution1D", "Deconvolution3D"):
        if p(19):  # dynamic_weight
            return []
        out = [(True, p(6))] + ([(False, p(0))] if p(5) else [])
        s = p(8)
        if s and t == "Convolution":
            out += [(False, p(0)), (False, 1)] + ([(False, 1)] if s > 100 else [])
        return out
    if t in ("ConvolutionDepthWise", "ConvolutionDepthWise1D", "DeconvolutionDepthWise"):
        if p(19):
            return []
        out = [(True, p(6))] + ([(False, p(0))] if p(5) else [])
        s = p(8)
        if s and t == "ConvolutionDepthWise":
            n = p(7, 1) if s in (1, 101) else 1
            out += [(False, n), (False, 1)] + ([(False, 1)] if s > 100 else [])
        return out
    if t == "InnerProduct":
        out = [(True, p(2))] + ([(False, p(0))] if p(1) else [])
        if p(8):
            out += [(False, p(0)), (False, 1)]
        return out
    if t == "BatchNorm":
        return [(False, p(0))] * 4
    if t == "Scale":
        return ([(False, p(0))] if p(0) != -233 else []) + ([(False, p(0))] if p(1) else [])
    if t == "PReLU":
        return [(False, p(0, 1))]
    if t == "MemoryData":
        n = max(p(0), 1) * max(p(1), 1) * max(p(11), 1) * max(p(2), 1)
        return [(False, n)]
    if t in ("InstanceNorm",):
        return [(False, p(0)), (False, p(0))] if p(2, 1) else []
    if t in ("LayerNorm",):
        return [(False, p(0)), (False, p(0))] if p(2, 1) else []
    if t in ("GroupNorm",):
        return [(False, p(1)), (False, p(1))] if p(3, 1) else []
    if t == "MultiHeadAttention" and not p(18):  # float weights: q, k, v, out projections (ncnn's load_model)
        e = p(0)
        q, k, v = p(2) // max(e, 1), p(3, e), p(4, e)
        return [(True, e * q), (False, e), (True, e * k), (False, e), (True, e * v), (False, e), (True, q * e),
                (False, q)]
    if t == "Gemm" and not p(18):  # float constants A, B, C (ncnn's Gemm::load_model; pnnx's Linear on 3-D input)
        m, n, k, bc = p(7), p(8), p(9), p(10)
        out = ([(True, k * m)] if p(4) else []) + ([(True, n * k)] if p(5) else [])
        if p(6) and bc != -1:
            if bc not in (0, 1, 2, 3, 4):
                raise ConversionError(f"layer {la.name} (Gemm): unknown constant C broadcast type {bc}",
                                      hint="use fp32/fp16 for this model on ncnn")
            out.append((True, {0: 1, 1: m, 2: m, 3: n * m, 4: n}[bc]))
        return out
    if t in ("Embed", "MultiHeadAttention", "RNN", "LSTM", "GRU", "Gemm", "RMSNorm", "SDPA"):
        raise ConversionError(f"layer {la.name} ({t}): edgeconv cannot re-pack this layer type's weights",
                              hint="use fp32/fp16 for this model on ncnn")
    return []


def load(param: Path, bin_: Path) -> NcnnModel:
    """Parse a param/bin pair; raises if the weight walk does not consume the .bin exactly."""
    layers, blob_count = parse_param(Path(param).read_text())
    data = Path(bin_).read_bytes() if Path(bin_).exists() else b""
    r = _Reader(data, str(bin_))
    for la in layers:
        r.where = f"{bin_} layer {la.name} ({la.type})"
        la.weights = [r.tagged(n) if tagged else r.raw(n) for tagged, n in _layout(la)]
    if r.pos != len(data):
        raise ConversionError(f"{bin_}: {len(data) - r.pos} bytes left after reading every layer's weights",
                              hint="a layer type with weights edgeconv does not know; use fp32/fp16")
    return NcnnModel(layers, blob_count)
