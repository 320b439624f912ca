"""ncnn INT8 built in edgeconv, because the ncnn wheel (and PyPI, Debian) has no ncnn2table / ncnn2int8.

Follows Tencent/ncnn ``tools/quantize/ncnn2table.cpp`` and ``net_quantize.cpp`` (read, not copied):

* weight scales per output channel (per group for ConvolutionDepthWise): ``127 / absmax``, and ``31 / absmax`` for
  3×3 stride-1 dilation-1 convolutions, whose int8 Winograd F43 kernel needs 6-bit weights;
* activation scale of each quantized layer's *bottom blob* from the fp32 ncnn net itself run on the shared
  calibration sample: ``minmax`` = ``127 / absmax``; ``kl`` = ncnn's KL search (2048-bin |x| histogram without
  zeros, 128 target bins, eps 1e-4, threshold ``(t + 0.5) * absmax / 2048``);
* the table in ncnn's text format (``<layer>_param_0 w0 w1 ...`` then ``<layer> s``), so ncnn's own ncnn2int8 could
  consume it too;
* weights written the way ncnn2int8 writes them: int8 with the 0x000D4B38 tag, bias unchanged, then raw fp32
  ``weight_data_int8_scales`` and ``bottom_blob_int8_scales``; ``int8_scale_term`` (param id 8) = 2 for
  Convolution/InnerProduct, 1 for ConvolutionDepthWise (per-group weight scales).  No requantize fusion: each
  quantized layer dequantizes to fp32, which keeps every non-conv layer exact.
Scales are multipliers: ``q = clamp(round(x * scale), -127, 127)`` with C ``round`` (half away from zero).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

from edgeconv.core.console import log
from edgeconv.core.errors import CalibrationError, ConfigError
from edgeconv.core.lazy import require
from edgeconv.targets.ncnn import ncnnfile
from edgeconv.targets.ncnn.ncnnfile import Blob, Layer, NcnnModel

QUANTIZABLE = ("Convolution", "ConvolutionDepthWise", "InnerProduct")
BINS, TARGET_BINS, KL_EPS = 2048, 128, 1e-4


def round_half_away(x: np.ndarray) -> np.ndarray:
    return np.sign(x) * np.floor(np.abs(x) + 0.5)


def to_int8(x: np.ndarray, scale: float | np.ndarray) -> np.ndarray:
    return np.clip(round_half_away(x * scale), -127, 127).astype(np.int8)


def weight_scales(la: Layer, winograd: bool = True) -> np.ndarray:
    """Per-output-channel (per-group for depthwise) weight scales, as ncnn2table computes them.

    ``winograd=False`` keeps 8-bit weights for 3×3 stride-1 convolutions too; the runner must then disable ncnn's
    Winograd convolution (its int8 F43 kernel only takes 6-bit weights).
    """
    w = la.weights[0].data.astype(np.float32)
    if la.type == "ConvolutionDepthWise":
        chunks = la.pint(7, 1)
    else:
        chunks = la.pint(0)
    absmax = np.abs(w.reshape(chunks, -1)).max(axis=1)
    num = 127.0
    if la.type == "Convolution":
        kw = la.pint(1)
        kh, dw, dh, sw, sh = la.pint(11, kw), la.pint(2, 1), la.pint(12, la.pint(2, 1)), la.pint(3, 1), \
            la.pint(13, la.pint(3, 1))
        if winograd and kw == 3 and kh == 3 and dw == 1 and dh == 1 and sw == 1 and sh == 1:
            num = 31.0
    return np.where(absmax > 0, num / np.maximum(absmax, 1e-30), 1.0).astype(np.float32)


def _integral(cum: np.ndarray, dens: np.ndarray, x: np.ndarray, width: np.ndarray | float) -> np.ndarray:
    """Integral from 0 to ``x`` of a piecewise-constant density (``dens[..., i]`` on ``[i*width, (i+1)*width)``)."""
    i = np.minimum(np.floor(x / width).astype(np.int64), dens.shape[-1] - 1)
    if dens.ndim == 1:
        return cum[i] * width + (x - i * width) * dens[i]
    return np.take_along_axis(cum, i, -1) * width + (x - i * width) * np.take_along_axis(dens, i, -1)


def kl_threshold_bin(hist: np.ndarray, chunk: int = 128) -> int:
    """ncnn2table's KL search over thresholds 128..2047 (vectorised over thresholds); returns the best one.

    Same arithmetic as ncnn: the clipped reference distribution gets the tail mass in its last bin, the 128-bin
    quantized one is built from the *unclipped* normalised histogram with fractional bin edges, expanded back
    uniformly, eps 1e-4 added to both, KL not renormalised."""
    total = hist.sum()
    if total == 0:
        return BINS - 1
    h = (hist / total).astype(np.float64)
    cum = np.concatenate([[0.0], np.cumsum(h)])
    tail = cum[-1] - cum  # tail[t] = sum(h[t:])
    k = np.arange(BINS, dtype=np.float64)
    best_t, best_kl = TARGET_BINS, np.inf
    for t0 in range(TARGET_BINS, BINS, chunk):
        t = np.arange(t0, min(t0 + chunk, BINS))
        npb = (t / TARGET_BINS)[:, None]
        edges = np.arange(TARGET_BINS + 1)[None, :] * npb
        q = (_integral(cum, h, edges[:, 1:], 1.0) - _integral(cum, h, edges[:, :-1], 1.0)) / npb
        qcum = np.concatenate([np.zeros((len(t), 1)), np.cumsum(q, axis=1)], axis=1)
        g = _integral(qcum, q, np.broadcast_to(np.arange(BINS + 1.0), (len(t), BINS + 1)), npb)
        expand = g[:, 1:] - g[:, :-1] + KL_EPS
        mask = k[None, :] < t[:, None]
        clip = np.where(mask, h[None, :] + KL_EPS, 1.0)
        clip[np.arange(len(t)), t - 1] += tail[t]
        expand = np.where(mask, expand, 1.0)
        kl = np.sum(np.where(mask, clip * np.log(clip / expand), 0.0), axis=1)
        i = int(np.argmin(kl))
        if kl[i] < best_kl:
            best_kl, best_t = float(kl[i]), int(t[i])
    return best_t


def activation_scales(model_param: Path, model_bin: Path, layers: list[Layer], feeds: Iterable[dict[str, np.ndarray]],
                      input_blobs: dict[str, str], method: str, known_absmax: dict[str, float] | None = None,
                      known_samples: int = 0) -> tuple[dict[str, float], dict[str, Any]]:
    """Scale of each layer's bottom blob from the fp32 ncnn net on the calibration feeds (two passes for KL).

    ``known_absmax`` (minmax only): blob -> absmax already measured on the same calibration sample (the reference's
    shared statistics, matched onto ncnn blobs by value); the ncnn net runs only when some bottom blob is not in it.
    """
    known = dict(known_absmax or {}) if method == "minmax" else {}
    bottoms = sorted({la.bottoms[0] for la in layers})
    if known and all(b in known for b in bottoms):
        absmax = {b: float(known[b]) for b in bottoms}
        thresholds, n, shared = dict(absmax), known_samples, len(bottoms)
    else:
        if known:
            missing = [b for b in bottoms if b not in known]
            log.info("ncnn int8: %d of %d bottom blobs not in the shared statistics (%s): calibrating on ncnn",
                     len(missing), len(bottoms), ", ".join(missing[:5]))
        absmax, thresholds, n = _measure_on_ncnn(model_param, model_bin, bottoms, feeds, input_blobs, method)
        shared = 0
    scales = {la.name: (127.0 / thresholds[la.bottoms[0]] if thresholds[la.bottoms[0]] > 0 else 0.0) for la in layers}
    stats = {"samples": n, "absmax": {la.name: absmax[la.bottoms[0]] for la in layers},
             "threshold": {la.name: thresholds[la.bottoms[0]] for la in layers},
             "blobs_from_shared_stats": shared, "blobs_from_ncnn": len(bottoms) - shared}
    return scales, stats


def _measure_on_ncnn(model_param: Path, model_bin: Path, bottoms: list[str], feeds: Iterable[dict[str, np.ndarray]],
                     input_blobs: dict[str, str], method: str) -> tuple[dict[str, float], dict[str, float], int]:
    """``(absmax, threshold, samples)`` of each blob in ``bottoms``, run through the fp32 ncnn net."""
    ncnn = require("ncnn", "ncnn")
    from edgeconv.targets.ncnn.runner import make_option

    net = ncnn.Net()
    net.opt = make_option(ncnn, {"light_mode": False}, None)
    net.load_param(str(model_param))
    net.load_model(str(model_bin))
    samples = list(feeds) if method == "kl" else feeds

    def each_blob(sample: dict[str, np.ndarray], use: Callable[[str, np.ndarray], None]) -> None:
        """``use(blob name, view of its data)`` for every bottom blob of one run; the view lives as long as the
        call (no copy: a calibration image's blobs are ~10 M floats on a detector)."""
        ex = net.create_extractor()
        for name, blob in input_blobs.items():
            ex.input(blob, ncnn.Mat(np.ascontiguousarray(sample[name][0], np.float32)))
        for b in bottoms:
            ret, m = ex.extract(b)
            if ret != 0:
                raise CalibrationError(f"ncnn could not compute blob {b} during calibration")
            use(b, np.asarray(m, dtype=np.float32).reshape(-1))

    absmax = dict.fromkeys(bottoms, 0.0)

    def track_absmax(b: str, a: np.ndarray) -> None:
        if a.size:
            absmax[b] = max(absmax[b], float(a.max()), -float(a.min()))

    n = 0
    for s in samples:
        n += 1
        each_blob(s, track_absmax)
    if n == 0:
        raise CalibrationError("the calibration sample is empty")
    thresholds = dict(absmax)
    if method == "kl":
        hists = {b: np.zeros(BINS, np.int64) for b in bottoms}

        def count(b: str, a: np.ndarray) -> None:
            if absmax[b] > 0:
                a = np.abs(a[a != 0])
                idx = np.minimum((a / absmax[b] * BINS).astype(np.int64), BINS - 1)
                hists[b] += np.bincount(idx, minlength=BINS)

        for s in samples:
            each_blob(s, count)
        for b in bottoms:
            if absmax[b] > 0:
                thresholds[b] = (kl_threshold_bin(hists[b]) + 0.5) * absmax[b] / BINS
    elif method != "minmax":
        raise ConfigError(f"ncnn int8 calibration method '{method}' is not supported", hint="use kl or minmax")
    net.clear()
    return absmax, thresholds, n


def quantize_layers(model: NcnnModel, act_scales: dict[str, float],
                    w_scales: dict[str, np.ndarray] | None = None) -> list[str]:
    """Rewrite the named layers to int8 in place (weights + scale terms); returns the quantized layer names."""
    done = []
    for la in model.layers:
        if la.name not in act_scales or la.type not in QUANTIZABLE or act_scales[la.name] <= 0:
            continue
        if la.pint(8) or la.weights[0].data.dtype != np.float32:
            raise ConfigError(f"layer {la.name} is already quantized or not fp32-stored; quantize an fp32 model")
        ws = (w_scales or {}).get(la.name)
        ws = weight_scales(la) if ws is None else np.asarray(ws, np.float32)
        w = la.weights[0].data.astype(np.float32)
        q = to_int8(w.reshape(len(ws), -1), ws[:, None]).ravel()
        rest = la.weights[1:]
        la.weights = [Blob(q, tagged=True), *rest, Blob(ws, tagged=False),
                      Blob(np.array([act_scales[la.name]], np.float32), tagged=False)]
        la.params[8] = "1" if la.type == "ConvolutionDepthWise" else "2"
        done.append(la.name)
    return done


def write_table(path: Path, model: NcnnModel, names: list[str], w_scales: dict[str, np.ndarray],
                act_scales: dict[str, float]) -> None:
    """ncnn's calibration table text format (weights first, then bottom-blob scales keyed by layer name)."""
    lines = [f"{n}_param_0 " + " ".join(f"{s:f}" for s in w_scales[n]) for n in names]
    lines += [f"{n} {act_scales[n]:f}" for n in names]
    path.write_text("\n".join(lines) + "\n")


def _kept(la: Layer, patterns: tuple[str, ...]) -> bool:
    return any((p.startswith("op:") and la.type == p[3:]) or fnmatch.fnmatchcase(la.name, p) for p in patterns)


def quantize(param: Path, bin_: Path, out_param: Path, out_bin: Path, calib: Any, input_blobs: dict[str, str], *,
             method: str = "minmax", keep_fp32: tuple[str, ...] = (), table: Path | None = None,
             keep_output_blobs: frozenset[str] = frozenset(), winograd: bool = True,
             known_absmax: dict[str, float] | None = None, known_samples: int = 0) -> dict[str, Any]:
    """fp32 ncnn model + calibration sample → int8 ncnn model (and its table); returns manifest metadata.

    ``keep_fp32``: *ncnn* layer names (fnmatch globs, or ``op:<ncnn layer type>``) left in fp32; the converter
    turns ``--keep-fp32`` (reference ONNX names) into these through ``layermap``.
    ``keep_output_blobs``: layers producing these blobs (the detect head's output convs) stay fp32 — their raw
    logits feed thresholds and box decoding directly, where int8 rounding costs the most mAP.
    ``known_absmax``/``known_samples``: see :func:`activation_scales`.
    """
    method = {"entropy": "kl"}.get(method, method)
    if method not in ("kl", "minmax"):
        raise ConfigError(f"ncnn int8 calibration method '{method}' is not supported",
                          hint="use minmax or kl (entropy)")
    model = ncnnfile.load(param, bin_)

    def kept_layer(la: Layer) -> bool:
        return _kept(la, keep_fp32) or bool(set(la.tops) & keep_output_blobs)

    targets = [la for la in model.layers if la.type in QUANTIZABLE and not la.pint(19) and not kept_layer(la)]
    kept = [la.name for la in model.layers if la.type in QUANTIZABLE and kept_layer(la)]
    if not targets:
        raise ConfigError("nothing to quantize: the ncnn model has no Convolution/InnerProduct layers left")
    act, stats = activation_scales(param, bin_, targets, calib.feeds(), input_blobs, method, known_absmax,
                                   known_samples)
    wsc = {la.name: weight_scales(la, winograd) for la in targets}
    names = quantize_layers(model, act, wsc)
    skipped = [la.name for la in targets if la.name not in names]
    if skipped:
        log.warning("ncnn int8: %d layer(s) saw only zeros during calibration and stay fp32", len(skipped))
    model.write(out_param, out_bin)
    if table is not None:
        write_table(table, model, names, wsc, act)
    return {"quantizer": "edgeconv (ncnn2table/ncnn2int8 algorithm)", "calib_method": method,
            "layers_int8": len(names), "kept_fp32": kept + skipped, "samples": stats["samples"],
            "activation_absmax": "the reference's shared minmax statistics, matched onto ncnn blobs by value"
            if stats["blobs_from_shared_stats"] else "the fp32 ncnn net on the calibration sample",
            "weight_scheme": "per-channel symmetric, " + ("6-bit for 3x3s1 (winograd)" if winograd else
                                                          "8-bit everywhere (winograd off at run time)"),
            "requantize_fused": False}
