"""An SVG of per-layer drift: SNR (dB) of every compared tensor in graph order, jumps marked and named by module.

Hand-written SVG rather than matplotlib: the plot is one polyline and a few labels, it must render in any browser or
report without a plotting stack, and it stays byte-stable for the same numbers.
"""

from __future__ import annotations

import math
from html import escape
from pathlib import Path

from edgeconv.diagnose.drift import LayerDrift

W, H, PAD_L, PAD_R, PAD_T, PAD_B = 960, 360, 56, 16, 28, 40
PLOT_MAX_DB = 80.0


def svg(rows: list[LayerDrift], title: str, *, max_labels: int = 6) -> str:
    """The SVG document for ``rows`` (as returned by ``layer_drift``)."""
    if not rows:
        return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="80"><text x="10" y="40">'
                f"{escape(title)}: no tensors compared</text></svg>\n")
    # exact tensors (graph inputs, float layers) sit at the 120 dB cap: clip the axis at 80 so the INT8 range shows
    snr = [min(PLOT_MAX_DB, r.snr_db) if math.isfinite(r.snr_db) else -20.0 for r in rows]
    lo, hi = min(0.0, math.floor(min(snr) / 10) * 10), max(10.0, math.ceil(max(snr) / 10) * 10)
    pw, ph = W - PAD_L - PAD_R, H - PAD_T - PAD_B

    def x(i: int) -> float:
        return PAD_L + (pw * i / max(1, len(rows) - 1))

    def y(v: float) -> float:
        return PAD_T + ph * (1 - (v - lo) / (hi - lo))

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" '
           'font-family="sans-serif" font-size="11">',
           f'<rect width="{W}" height="{H}" fill="white"/>',
           f'<text x="{PAD_L}" y="16" font-size="13">{escape(title)}</text>']
    step = 10 if hi - lo <= 80 else 20
    v = lo
    while v <= hi + 1e-9:
        out.append(f'<line x1="{PAD_L}" x2="{W - PAD_R}" y1="{y(v):.1f}" y2="{y(v):.1f}" stroke="#ddd"/>')
        out.append(f'<text x="{PAD_L - 6}" y="{y(v) + 4:.1f}" text-anchor="end">{v:g}</text>')
        v += step
    out.append(f'<text x="14" y="{PAD_T + ph / 2:.0f}" transform="rotate(-90 14 {PAD_T + ph / 2:.0f})" '
               'text-anchor="middle">SNR vs side A (dB)</text>')
    out.append(f'<text x="{PAD_L + pw / 2:.0f}" y="{H - 8}" text-anchor="middle">tensor (graph order)</text>')
    pts = " ".join(f"{x(i):.1f},{y(s):.1f}" for i, s in enumerate(snr))
    out.append(f'<polyline points="{pts}" fill="none" stroke="#1f77b4" stroke-width="1.5"/>')
    jumps = sorted((r for r in rows if r.jump), key=lambda r: -r.added_nsr)
    labelled = {r.index for r in jumps[:max_labels]}
    for r in rows:
        if not r.jump:
            continue
        cx, cy = x(r.index), y(snr[r.index])
        out.append(f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="4" fill="#d62728"><title>'
                   f"{escape(r.node)} ({escape(r.op)}) module {escape(r.module or '?')}: SNR {r.snr_db:.1f} dB"
                   "</title></circle>")
        if r.index in labelled:
            anchor = "end" if cx > W * 0.7 else "start"
            dx = -6 if anchor == "end" else 6
            out.append(f'<text x="{cx + dx:.1f}" y="{cy - 6:.1f}" fill="#d62728" text-anchor="{anchor}">'
                       f"{escape(r.module or r.node)}</text>")
    out.append("</svg>")
    return "\n".join(out) + "\n"


def write_svg(rows: list[LayerDrift], path: str | Path, title: str) -> Path:
    p = Path(path)
    p.write_text(svg(rows, title))
    return p
