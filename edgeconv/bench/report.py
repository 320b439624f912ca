"""Report writers: ``report.json`` (the contract), ``report.md`` (CI job summary), ``report.html`` (self-contained,
inline SVG) and ``junit.xml`` (one testcase per target × precision × check).

Everything is rendered from the report dict alone, so a report can be re-rendered later (or by another tool) from
its JSON; the HTML carries no external JS or CSS, so it can be attached to a CI run and opened offline.
"""

from __future__ import annotations

import datetime as _dt
import html
import json
import math
import os
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

SCHEMA = "edgeconv.report/1"
FILES = ("report.json", "report.md", "report.html", "junit.xml")


def make_report(results: list[dict[str, Any]], *, model: dict[str, Any], env: dict[str, Any] | None = None,
                **extra: Any) -> dict[str, Any]:
    """Assemble the report dict: schema, model, environment manifest, results (+ any extra top-level fields)."""
    if env is None:
        from edgeconv.core.env import environment

        env = environment()
    return {"schema": SCHEMA, "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
            "model": model, "env": env, **extra, "results": results}


def _json_safe(o: Any) -> Any:
    if isinstance(o, float) and not math.isfinite(o):
        return None
    if isinstance(o, dict):
        return {k: _json_safe(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_json_safe(v) for v in o]
    if hasattr(o, "item") and callable(o.item):  # numpy scalars
        return _json_safe(o.item())
    return o


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def write_all(report: dict[str, Any], out: str | Path) -> dict[str, Path]:
    """Write the four files into ``out``; returns their paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {name: out / name for name in FILES}
    _atomic_write(paths["report.json"], json.dumps(_json_safe(report), indent=2, default=str))
    _atomic_write(paths["report.md"], render_markdown(report))
    _atomic_write(paths["report.html"], render_html(report))
    _atomic_write(paths["junit.xml"], render_junit(report))
    return paths


def load_report(path: str | Path) -> dict[str, Any]:
    """Read a report.json (or the folder holding one), checking the schema family."""
    from edgeconv.core.errors import ConfigError

    p = Path(path)
    if p.is_dir():
        p = p / "report.json"
    from edgeconv.core.files import read_structured

    rep = read_structured(p, "report", fmt="json")
    if not str(rep.get("schema", "")).startswith("edgeconv.report/"):
        raise ConfigError(f"{p} is not an edgeconv report (schema {rep.get('schema')!r})")
    return rep


# --- formatting helpers -------------------------------------------------------------------------------------------


def _ms(v: Any) -> str:
    if v is None:
        return "–"
    return f"{v:.3g}" if v < 10 else f"{v:.1f}"


def _size(b: Any) -> str:
    if not b:
        return "–"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if b < 1024 or unit == "GiB":
            return f"{b:.0f} {unit}" if unit == "B" else f"{b:.1f} {unit}"
        b /= 1024
    return "–"


def _drift_text(d: dict[str, Any] | None) -> str:
    if not d or not d.get("shape_ok", True):
        return "shape mismatch" if d else "–"
    cos, mx = d.get("cosine"), d.get("max_abs")
    return f"cos {cos:.6f}, max {mx:.2g}" if cos is not None and mx is not None else "–"


def _task_text(t: dict[str, Any] | None) -> str:
    if not t:
        return "–"
    return f"{t['value']:.2f} ({t['delta']:+.2f}) {t['metric']}"


def row_key(r: dict[str, Any]) -> str:
    return f"{r.get('profile')}/{r.get('precision')}"


def _status_icon(r: dict[str, Any]) -> str:
    if r.get("status") != "ok":
        return {"failed": "❌ failed", "skipped": "⏭️ skipped"}.get(r.get("status"), str(r.get("status")))
    checks = [v for v in (r.get("checks") or {}).values() if v is not None]
    cmp_ = r.get("comparison") or {}
    if cmp_.get("regression") or not all(checks):
        return "⚠️ ok (checks failed)"
    return "✅ ok"


def render_markdown(report: dict[str, Any]) -> str:
    """A table that fits a CI job summary: target × precision with status, p50, p99, size, drift, task delta."""
    env = report.get("env", {})
    model = report.get("model", {})
    lines = [f"## edgeconv benchmark: {model.get('name', '?')}", "",
             f"{env.get('cpu', '?')} · {env.get('cores', '?')} cores · {env.get('os', '')} · "
             f"reference: {report.get('reference', 'reference.onnx')}", ""]
    cmp_ = report.get("comparison")
    hdr = "| target | precision | status | p50 ms (95% CI) | p99 ms | size | drift | task (Δ) |"
    if cmp_:
        hdr += " vs baseline |"
    lines += [hdr, "|" + "---|" * (hdr.count("|") - 1)]
    for r in report.get("results", []):
        lat = r.get("latency_ms")
        if lat:
            ci = lat.get("p50_ci") or [None, None]
            p50 = f"{_ms(lat['p50'])} ({_ms(ci[0])}–{_ms(ci[1])})"
            p99 = _ms(lat.get("p99"))
        else:
            p50, p99 = ("proxy: n/a" if r.get("proxy") else "–"), "–"
        art = r.get("artifact") or {}
        cells = [r.get("profile", "?"), r.get("precision", "?"), _status_icon(r), p50, p99, _size(art.get("bytes")),
                 _drift_text(r.get("drift")), _task_text(r.get("task"))]
        if cmp_:
            c = r.get("comparison") or {}
            cells.append(c.get("verdict", "–") + (f" ({c['change']:+.1%})" if c.get("change") is not None else ""))
        lines.append("| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |")
    notes = [(row_key(r), r["error"]) for r in report.get("results", []) if r.get("error")]
    notes += [(row_key(r), r["latency_note"]) for r in report.get("results", []) if r.get("latency_note")]
    notes += [(row_key(r), w) for r in report.get("results", []) for w in r.get("warnings") or []]
    if notes:
        lines += ["", "**Notes**", ""] + [f"- `{k}`: {v}" for k, v in notes]
    if cmp_:
        lines += ["", f"**Baseline comparison** ({cmp_.get('baseline', '')}): "
                  f"{'FAILED: ' + '; '.join(cmp_['failures']) if cmp_.get('failures') else 'passed'}"]
    return "\n".join(lines) + "\n"


# --- HTML ---------------------------------------------------------------------------------------------------------


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats on both axes (lower latency, lower drift), by latency."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], points[i][1]))
    front, best = [], math.inf
    for i in order:
        if points[i][1] < best:
            front.append(i)
            best = points[i][1]
    return front


def _drift_value(r: dict[str, Any]) -> float | None:
    d = r.get("drift") or {}
    if d.get("rel_l2") is None:
        return None
    return float(d["rel_l2"])


_PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#7f7f7f")


def _scatter_svg(rows: list[dict[str, Any]], w: int = 640, h: int = 360) -> str:
    pts = [(r["latency_ms"]["p50"], _drift_value(r), r) for r in rows
           if r.get("latency_ms") and _drift_value(r) is not None]
    if not pts:
        return "<p>No rows with both latency and drift.</p>"
    ml, mr, mt, mb = 70, 20, 20, 45
    xs = [p[0] for p in pts]
    ys = [math.log10(max(p[1], 1e-9)) for p in pts]
    x0, x1 = 0.0, max(xs) * 1.1
    y0, y1 = min(ys) - 0.5, max(ys) + 0.5

    def sx(v: float) -> float:
        return ml + (v - x0) / (x1 - x0 or 1) * (w - ml - mr)

    def sy(v: float) -> float:
        return h - mb - (v - y0) / (y1 - y0 or 1) * (h - mt - mb)

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" role="img" '
           f'aria-label="latency vs drift">',
           f'<rect x="{ml}" y="{mt}" width="{w - ml - mr}" height="{h - mt - mb}" fill="#fafafa" stroke="#ccc"/>']
    for k in range(6):
        xv = x0 + (x1 - x0) * k / 5
        out.append(f'<text x="{sx(xv):.1f}" y="{h - mb + 16}" font-size="11" text-anchor="middle">{xv:.3g}</text>')
    for e in range(math.floor(y0), math.ceil(y1) + 1):
        if y0 <= e <= y1:
            out.append(f'<line x1="{ml}" x2="{w - mr}" y1="{sy(e):.1f}" y2="{sy(e):.1f}" stroke="#e5e5e5"/>')
            out.append(f'<text x="{ml - 6}" y="{sy(e) + 4:.1f}" font-size="11" text-anchor="end">1e{e}</text>')
    out.append(f'<text x="{(ml + w - mr) / 2}" y="{h - 8}" font-size="12" text-anchor="middle">p50 latency (ms)</text>')
    out.append(f'<text x="14" y="{(mt + h - mb) / 2}" font-size="12" text-anchor="middle" '
               f'transform="rotate(-90 14 {(mt + h - mb) / 2})">relative L2 drift (log)</text>')
    front = pareto_front([(x, y) for x, y in zip(xs, ys)])
    if len(front) > 1:
        path = " ".join(f"{sx(xs[i]):.1f},{sy(ys[i]):.1f}" for i in front)
        out.append(f'<polyline points="{path}" fill="none" stroke="#444" stroke-dasharray="4 3"/>')
    for i, (_, _, r) in enumerate(pts):
        color = _PALETTE[i % len(_PALETTE)]
        on = i in front
        label = html.escape(row_key(r))
        out.append(f'<circle cx="{sx(xs[i]):.1f}" cy="{sy(ys[i]):.1f}" r="{6 if on else 4}" fill="{color}" '
                   f'stroke="{"#000" if on else "none"}"><title>{label}: p50 {xs[i]:.3g} ms, rel_l2 '
                   f'{10 ** ys[i]:.2g}{" (Pareto)" if on else ""}</title></circle>')
        out.append(f'<text x="{sx(xs[i]) + 8:.1f}" y="{sy(ys[i]) - 6:.1f}" font-size="11">{label}</text>')
    out.append("</svg>")
    return "".join(out)


def _box_svg(rows: list[dict[str, Any]], w: int = 640) -> str:
    rows = [r for r in rows if r.get("latency_ms") and r["latency_ms"].get("quantiles")]
    if not rows:
        return "<p>No latency distributions.</p>"
    ml, mr, rowh, mt = 150, 20, 28, 10
    h = mt + rowh * len(rows) + 40
    hi = max(r["latency_ms"]["quantiles"][-1] for r in rows) * 1.05
    hi = max(min(hi, max(r["latency_ms"]["p99"] for r in rows) * 1.3), 1e-6)

    def sx(v: float) -> float:
        return ml + min(v, hi) / hi * (w - ml - mr)

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" role="img" '
           f'aria-label="latency distributions">']
    for i, r in enumerate(rows):
        q = r["latency_ms"]["quantiles"]  # 0,5,...,100 %
        y = mt + i * rowh + rowh / 2
        color = _PALETTE[i % len(_PALETTE)]
        p5, p25, p50, p75, p95 = q[1], q[5], q[10], q[15], q[19]
        p99 = r["latency_ms"]["p99"]
        out.append(f'<text x="{ml - 8}" y="{y + 4}" font-size="11" text-anchor="end">{html.escape(row_key(r))}</text>')
        out.append(f'<line x1="{sx(p5):.1f}" x2="{sx(p95):.1f}" y1="{y}" y2="{y}" stroke="{color}"/>')
        out.append(f'<rect x="{sx(p25):.1f}" y="{y - 8}" width="{max(sx(p75) - sx(p25), 1):.1f}" height="16" '
                   f'fill="{color}" fill-opacity="0.3" stroke="{color}"><title>p25 {p25:.3g} · p50 {p50:.3g} · '
                   f'p75 {p75:.3g} · p99 {p99:.3g} ms</title></rect>')
        out.append(f'<line x1="{sx(p50):.1f}" x2="{sx(p50):.1f}" y1="{y - 8}" y2="{y + 8}" stroke="#000" '
                   f'stroke-width="2"/>')
        out.append(f'<circle cx="{sx(p99):.1f}" cy="{y}" r="2.5" fill="{color}"><title>p99 {p99:.3g} ms</title>'
                   f'</circle>')
    for k in range(6):
        xv = hi * k / 5
        out.append(f'<text x="{sx(xv):.1f}" y="{h - 20}" font-size="11" text-anchor="middle">{xv:.3g}</text>')
    out.append(f'<text x="{(ml + w - mr) / 2}" y="{h - 4}" font-size="12" text-anchor="middle">latency (ms): '
               f'whiskers p5–p95, box p25–p75, bar p50, dot p99</text></svg>')
    return "".join(out)


def render_html(report: dict[str, Any]) -> str:
    """Self-contained HTML: the summary table, the latency-vs-drift scatter with its Pareto front, and the
    latency distributions (inline SVG, no scripts)."""
    rows = report.get("results", [])
    env = report.get("env", {})
    md_rows = []
    for r in rows:
        lat = r.get("latency_ms") or {}
        ci = lat.get("p50_ci") or [None, None]
        art = r.get("artifact") or {}
        cells = [r.get("profile"), r.get("precision"), _status_icon(r),
                 f"{_ms(lat.get('p50'))} [{_ms(ci[0])}, {_ms(ci[1])}]" if lat else "–", _ms(lat.get("p99")),
                 _ms((r.get("cold_start_ms") or {}).get("total")),
                 f"{r['peak_rss_mb']:.0f} MiB" if r.get("peak_rss_mb") else "–", _size(art.get("bytes")),
                 _drift_text(r.get("drift")), _task_text(r.get("task")),
                 r.get("error") or r.get("latency_note") or "; ".join(r.get("warnings") or [])]
        md_rows.append("<tr>" + "".join(f"<td>{html.escape(str(c if c is not None else '–'))}</td>" for c in cells)
                       + "</tr>")
    head = ("target", "precision", "status", "p50 ms [95% CI]", "p99 ms", "cold start ms", "peak RSS", "size",
            "drift", "task (Δ)", "note")
    versions = ", ".join(f"{k} {v}" for k, v in (env.get("versions") or {}).items())
    title = html.escape(str((report.get("model") or {}).get("name", "model")))
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>edgeconv report: {title}</title>
<style>body{{font-family:system-ui,sans-serif;margin:2em;max-width:1200px}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px;font-size:13px;text-align:left}}th{{background:#f0f0f0}}
.env{{color:#555;font-size:13px}}</style></head><body>
<h1>edgeconv benchmark: {title}</h1>
<p class="env">{html.escape(str(env.get('cpu', '?')))} · {env.get('cores', '?')} cores ·
{html.escape(str(env.get('os', '')))} · created {html.escape(str(report.get('created', '')))}<br>
{html.escape(versions)}</p>
<table><tr>{''.join(f'<th>{h}</th>' for h in head)}</tr>{''.join(md_rows)}</table>
<h2>Latency vs drift</h2><p>Dashed line: Pareto front (no other target is both faster and closer to the
reference).</p>{_scatter_svg(rows)}
<h2>Latency distributions</h2>{_box_svg(rows)}
</body></html>
"""


# --- JUnit --------------------------------------------------------------------------------------------------------


def _checks(r: dict[str, Any]) -> list[tuple[str, str, str | None]]:
    """(check, outcome, message) for one row; outcome ∈ pass | failure | error | skipped."""
    if r.get("status") != "ok":
        outcome = "skipped" if r.get("status") == "skipped" else "error"
        msg = r.get("error") or r.get("status")
        return [("run", outcome, msg), ("drift", "skipped", "not run"), ("task", "skipped", "not run"),
                ("latency", "skipped", "not run")]
    out: list[tuple[str, str, str | None]] = [("run", "pass", None)]
    d = r.get("drift") or {}
    fails = [f"{c['name']} {c['value']} vs limit {c['limit']}" for c in d.get("checks", []) if not c["pass"]]
    out.append(("drift", "failure" if fails else "pass", "; ".join(fails) or None))
    t = r.get("task")
    if t is None:
        out.append(("task", "skipped", "no task metric (no postprocess or data)"))
    elif t.get("pass") is False:
        out.append(("task", "failure", f"{t['metric']} {t['value']:.2f} vs reference {t['reference']:.2f} "
                                      f"(budget {t.get('tolerance')})"))
    else:
        out.append(("task", "pass", None))
    c = r.get("comparison") or {}
    if r.get("latency_ms") is None:
        out.append(("latency", "skipped", r.get("latency_note") or "no latency"))
    elif c.get("regression"):
        out.append(("latency", "failure", c.get("detail")))
    else:
        out.append(("latency", "pass", None))
    return out


def render_junit(report: dict[str, Any]) -> str:
    """One testcase per target × precision × check (run, drift, task, latency)."""
    suites = ET.Element("testsuites", name="edgeconv")
    model = (report.get("model") or {}).get("name", "model")
    suite = ET.SubElement(suites, "testsuite", name=f"edgeconv.bench.{model}")
    counts = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    for r in report.get("results", []):
        seconds = ((r.get("latency_ms") or {}).get("seconds")) or 0
        for check, outcome, msg in _checks(r):
            tc = ET.SubElement(suite, "testcase", classname=f"edgeconv.{r.get('profile')}.{r.get('precision')}",
                               name=check, time=f"{seconds if check == 'latency' else 0:.3f}")
            counts["tests"] += 1
            if outcome == "failure":
                ET.SubElement(tc, "failure", message=(msg or "")[:1000], type="check").text = msg
                counts["failures"] += 1
            elif outcome == "error":
                ET.SubElement(tc, "error", message=(msg or "")[:1000], type="failed").text = msg
                counts["errors"] += 1
            elif outcome == "skipped":
                ET.SubElement(tc, "skipped", message=(msg or "")[:1000])
                counts["skipped"] += 1
    for k, v in counts.items():
        suite.set(k, str(v))
        suites.set(k, str(v))
    ET.indent(suites)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(suites, encoding="unicode") + "\n"
