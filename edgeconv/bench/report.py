"""Report writers: ``report.json`` (the contract), ``report.md`` (CI job summary), ``report.html`` (self-contained,
inline SVG) and ``junit.xml`` (one testcase per target × precision × check).

Everything is rendered from the report dict alone, so a report can be re-rendered later (or by another tool) from
its JSON; the HTML page (``edgeconv/templates/report.html.j2``) loads nothing (no JS, CSS, fonts or images from
anywhere), so it can be attached to a CI run and opened offline. Status marks are words, not emoji, so they read
the same without an emoji font.

The contract is written down twice on purpose: as pydantic models here (``Report``: what ``load_report`` accepts,
so a file of the wrong shape is a config error naming the key) and as the JSON Schema generated from them in
``schemas/report.schema.json`` (what other tools validate against; a test keeps the two equal).

Over 400 lines because the contract and every writer of it stay in one module: a field added here is added to
the schema, the Markdown, the HTML's data and the JUnit file in one change.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

SCHEMA_FAMILY = "edgeconv.report"
SCHEMA_VERSION = 1
SCHEMA = f"{SCHEMA_FAMILY}/{SCHEMA_VERSION}"
FILES = ("report.json", "report.md", "report.html", "junit.xml")


class _Open(BaseModel):
    """Known fields are typed; more fields are welcome (the contract grows by adding, not renaming)."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)


class Check(_Open):
    name: str
    value: float | None = None
    limit: float | None = None
    pass_: bool | None = Field(None, alias="pass")


class Latency(_Open):
    p50: float
    p90: float | None = None
    p99: float | None = None
    mean: float | None = None
    min: float | None = None
    n: int | None = None
    p50_ci: list[float | None] | None = None
    quantiles: list[float] | None = None


class Drift(_Open):
    max_abs: float | None = None
    rel_l2: float | None = None
    cosine: float | None = None
    checks: list[Check] = []
    pass_: bool | None = Field(None, alias="pass")


class Task(_Open):
    metric: str
    reference: float | None = None
    value: float | None = None
    delta: float | None = None
    tolerance: float | None = None
    pass_: bool | None = Field(None, alias="pass")


class ArtifactRef(_Open):
    path: str | None = None
    bytes: int | None = None
    sha256: str | None = None


class Row(_Open):
    target: str | None
    profile: str | None = None
    precision: str
    status: Literal["ok", "failed", "skipped"]
    error: str | None = None
    artifact: ArtifactRef | None = None
    latency_ms: Latency | None = None
    drift: Drift | None = None
    task: Task | None = None


class ModelInfo(_Open):
    name: str
    sha256: str | None = None


class Report(_Open):
    """``report.json``: one row per target × precision (DESIGN.md, "Report contract")."""

    schema_: str = Field(alias="schema", pattern=r"^edgeconv\.report/[0-9]+$")
    created: str | None = None
    model: ModelInfo
    env: dict[str, Any] = {}
    results: list[Row]


def report_json_schema() -> dict[str, Any]:
    """The JSON Schema of report.json (``schemas/report.schema.json`` is this, written out)."""
    doc = Report.model_json_schema(by_alias=True)
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": "edgeconv.report/1", **doc}


def make_report(results: list[dict[str, Any]], *, model: dict[str, Any], env: dict[str, Any] | None = None,
                **extra: Any) -> dict[str, Any]:
    """Assemble the report dict: schema, model, environment manifest, results (+ any extra top-level fields)."""
    if env is None:
        from edgeconv.core.env import environment

        env = environment()
    for r in results:
        attach_lint(r)
    return {"schema": SCHEMA, "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
            "model": model, "env": env, **extra, "results": results}


def attach_lint(row: dict[str, Any]) -> None:
    """Copy the pre-quantization lint findings (``manifest.json``'s ``lint``) of the row's artifact into the row, so
    the report shows them from its own JSON; a row without an artifact, manifest or findings is left as it is."""
    path = (row.get("artifact") or {}).get("path")
    if "lint" in row or not path:
        return
    try:
        lint = json.loads((Path(path) / "manifest.json").read_text()).get("lint")
    except (OSError, ValueError):
        return
    if isinstance(lint, list) and lint:
        row["lint"] = [{k: f.get(k) for k in ("rule", "severity", "message")} for f in lint if isinstance(f, dict)]


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
    """Read a report.json (or the folder holding one): the schema family and version, then the shape."""
    from edgeconv.core.files import read_structured

    p = Path(path)
    if p.is_dir():
        p = p / "report.json"
    rep = read_structured(p, "report", fmt="json")
    check_report(rep, str(p))
    return rep


def check_report(rep: Any, where: str = "report") -> None:
    """ConfigError unless ``rep`` is a report this edgeconv reads: ``edgeconv.report/N`` with N <= 1, right shape."""
    from edgeconv.core.errors import ConfigError

    schema = rep.get("schema") if isinstance(rep, dict) else None
    family, _, version = str(schema).partition("/")
    if family != SCHEMA_FAMILY or not version.isdigit():
        raise ConfigError(f"{where} is not an edgeconv report (schema {schema!r})",
                          hint="pass a report.json written by `edgeconv run`, `bench` or `demo`")
    if int(version) > SCHEMA_VERSION:
        raise ConfigError(f"{where} has schema {schema}, newer than this edgeconv reads ({SCHEMA})",
                          hint="upgrade edgeconv to read it (pip install -U edgeconv)")
    try:
        Report.model_validate(rep)
    except ValidationError as e:
        err = e.errors()[0]
        key = ".".join(str(x) for x in err["loc"]) or "(top level)"
        raise ConfigError(f"{where}: {key}: {err['msg']} ({len(e.errors())} problem(s))",
                          hint="the file is not a report of this schema; regenerate it") from e


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


def _num(v: Any) -> float | None:
    """A finite number or None: a missing or non-finite value is never formatted as a number."""
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _task_text(t: dict[str, Any] | None) -> str:
    """``78.77 (-0.19 [-0.42, +0.03]) map50_95``: value, delta and its 95 % interval where the row has one."""
    if not t:
        return "–"
    value, delta = _num(t.get("value")), _num(t.get("delta"))
    if value is None:
        return f"no data ({t.get('metric', 'task')})"
    ci = t.get("delta_ci95")
    lo, hi = (_num(ci[0]), _num(ci[1])) if isinstance(ci, (list, tuple)) and len(ci) == 2 else (None, None)
    interval = f" [{lo:+.2f}, {hi:+.2f}]" if lo is not None and hi is not None else ""
    d = f" ({delta:+.2f}{interval})" if delta is not None else ""
    return f"{value:.2f}{d} {t.get('metric', '')}".rstrip()


def _eff_text(r: dict[str, Any]) -> str:
    """The roofline column: achieved GFLOP/s, the fraction of the measured peak at the row's compute precision,
    and whether this model is memory- or compute-bound there."""
    e = r.get("roofline") or {}
    g, frac = _num(e.get("gflops")), _num(e.get("fraction_of_peak"))
    if g is None:
        return "–"
    share = f"{frac:.0%} of {e.get('compute_precision', 'fp32')} peak, " if frac is not None else ""
    return f"{g:.3g} GFLOP/s ({share}{e.get('bound', '?')}-bound)"


def _has_roofline(results: list[dict[str, Any]]) -> bool:
    return any((r.get("roofline") or {}).get("gflops") is not None for r in results)


def _lint_notes(r: dict[str, Any]) -> list[str]:
    return [f"lint {f.get('severity') or 'warning'} [{f.get('rule') or '?'}]: {' '.join(str(f.get('message')).split())}"
            for f in r.get("lint") or [] if isinstance(f, dict)]


def roofline_summary(report: dict[str, Any]) -> str | None:
    """One line: the measured peaks and the best row's fraction of the fp32 GEMM peak (issue 20's 30 % goal),
    with the reason when it is under (memory-bound layers' share of the work)."""
    rows = [r for r in report.get("results", []) if _num((r.get("roofline") or {}).get("fraction_of_fp32_peak"))]
    if not rows:
        return None
    best = max(rows, key=lambda r: r["roofline"]["fraction_of_fp32_peak"])
    e = best["roofline"]
    peak = (e.get("peak") or {}).get("gflops") or {}
    parts = [f"{k} {peak[k]:.0f}" for k in ("fp32", "int8", "bf16") if _num(peak.get(k))]
    bw = _num((e.get("peak") or {}).get("bandwidth_gbs"))
    text = (f"Roofline (measured at {e.get('threads')} thread(s)): GEMM peak {', '.join(parts) or '–'} GFLOP/s"
            f"{f', copy bandwidth {bw:.1f} GB/s' if bw else ''}; best row {row_key(best)} at "
            f"{e['fraction_of_fp32_peak']:.0%} of the fp32 peak")
    if e["fraction_of_fp32_peak"] < 0.3:
        share = _num(e.get("memory_bound_macs_share"))
        text += (f" (under 30 %: {e.get('memory_bound_layers', 0)} memory-bound layers"
                 f"{f' hold {share:.0%} of the MACs' if share is not None else ''}; model intensity "
                 f"{e.get('intensity')} FLOP/B)")
    return text


def row_key(r: dict[str, Any]) -> str:
    return f"{r.get('profile')}/{r.get('precision')}"


def status_mark(r: dict[str, Any]) -> str:
    """``ok``, ``ok, checks failed: drift`` / ``regression``, ``FAILED`` or ``skipped``: words, no emoji."""
    if r.get("status") != "ok":
        return {"failed": "FAILED", "skipped": "skipped"}.get(str(r.get("status")), str(r.get("status")))
    bad = [k for k, v in (r.get("checks") or {}).items() if v is False]
    if (r.get("comparison") or {}).get("regression"):
        bad.append("regression")
    return f"ok, checks failed: {', '.join(bad)}" if bad else "ok"


def env_isa(env: dict[str, Any]) -> str:
    """``AVX2 AVX-512 VNNI BF16 (no AMX, FP16) · `` for a report's machine line (empty for reports without it)."""
    return f"{env['isa_line']} · " if env.get("isa_line") else ""


def compute_note(row: dict[str, Any], env: dict[str, Any]) -> str | None:
    """For an INT8 row, which integer path ran: what the runtime reported (``Runner.compute``), else that it does
    not say, with whether this CPU has VNNI at all; rows measured on a device say only what the device said."""
    if row.get("precision") != "int8" or row.get("status") != "ok" or row.get("proxy"):
        return None
    c = row.get("compute") or {}
    if c.get("int8_path"):
        return f"int8 path: {c['int8_path']} ({c.get('detail', '')}; from {c.get('source', 'the runtime')})"
    if row.get("device"):
        return None
    isa = env.get("isa") or {}
    if "VNNI" not in isa:
        return None
    has = "has VNNI" if isa.get("VNNI") else "has no VNNI"
    return f"int8 path: not reported by {row.get('runner') or 'the runtime'} (this CPU {has})"


def speed_note(row: dict[str, Any], results: list[dict[str, Any]]) -> str | None:
    """For a reduced-precision row measured slower than the same target's fp32 row on the same machine (95 %
    intervals apart): say so. ncnn's and TFLite's INT8 on an AVX2 CPU without VNNI run slower than their fp32
    (bundled detector: 6.54 vs 6.06 ms, 11.45 vs 10.88 ms), which a user reading "int8" would not expect."""
    if row.get("precision") == "fp32" or row.get("status") != "ok":
        return None
    lat = row.get("latency_ms") or {}
    base = next((r for r in results if r.get("profile") == row.get("profile") and r.get("precision") == "fp32"
                 and r.get("device") == row.get("device") and r.get("status") == "ok" and r.get("latency_ms")), None)
    if not lat.get("p50") or base is None:
        return None
    b = base["latency_ms"]
    lo = (lat.get("p50_ci") or [None, None])[0]
    hi = (b.get("p50_ci") or [None, None])[1]
    if lo is None or hi is None or lo <= hi:
        return None
    return (f"slower than {row.get('profile')} fp32 here (p50 {lat['p50']:.3g} vs {b['p50']:.3g} ms, intervals "
            f"apart): on this machine {row.get('precision')} buys size, not speed")


def render_markdown(report: dict[str, Any]) -> str:
    """A table that fits a CI job summary: target × precision with status, p50, p99, size, drift, task delta."""
    env = report.get("env", {})
    model = report.get("model", {})
    lines = [f"## edgeconv benchmark: {model.get('name', '?')}", "",
             f"{env.get('cpu', '?')} · {env.get('cores', '?')} cores · {env_isa(env)}{env.get('os', '')} · "
             f"reference: {report.get('reference', 'reference.onnx')}", ""]
    cmp_ = report.get("comparison")
    eff = _has_roofline(report.get("results", []))
    hdr = "| target | precision | status | p50 ms (95% CI) | p99 ms | size | drift | task (Δ [95% CI]) |"
    if eff:
        hdr += " efficiency |"
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
        cells = [r.get("profile", "?"), r.get("precision", "?"), status_mark(r), p50, p99, _size(art.get("bytes")),
                 _drift_text(r.get("drift")), _task_text(r.get("task"))]
        if eff:
            cells.append(_eff_text(r))
        if cmp_:
            c = r.get("comparison") or {}
            cells.append(c.get("verdict", "–") + (f" ({c['change']:+.1%})" if c.get("change") is not None else ""))
        lines.append("| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |")
    notes = [(row_key(r), r["error"]) for r in report.get("results", []) if r.get("error")]
    notes += [(row_key(r), r["latency_note"]) for r in report.get("results", []) if r.get("latency_note")]
    notes += [(row_key(r), w) for r in report.get("results", []) for w in r.get("warnings") or []]
    notes += [(row_key(r), n) for r in report.get("results", []) for n in _lint_notes(r)]
    notes += [(row_key(r), n) for r in report.get("results", []) if (n := compute_note(r, env))]
    notes += [(row_key(r), n) for r in report.get("results", []) if (n := speed_note(r, report["results"]))]
    summary = roofline_summary(report)
    if summary:
        lines += ["", summary]
    if notes:
        lines += ["", "**Notes**", ""] + [f"- `{k}`: {v}" for k, v in notes]
    if cmp_:
        lines += ["", f"**Baseline comparison** ({cmp_.get('baseline', '')}): "
                  f"{'FAILED: ' + '; '.join(cmp_['failures']) if cmp_.get('failures') else 'passed'}"]
    return "\n".join(lines) + "\n"


# --- HTML ---------------------------------------------------------------------------------------------------------


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats on both axes (lower is better on both), by the first axis."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], points[i][1]))
    front, best = [], math.inf
    for i in order:
        if points[i][1] < best:
            front.append(i)
            best = points[i][1]
    return front


_PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#7f7f7f")
_W, _H, _ML, _MR, _MT, _MB = 700, 360, 70, 90, 20, 45


class _Axis:
    """Maps data values to pixels, linear or log10, and gives readable ticks (1-2-5 per decade on a log axis)."""

    def __init__(self, values: list[float], p0: float, p1: float, *, log: bool, pad: float = 0.08) -> None:
        self.log, self.p0, self.p1 = log, p0, p1
        vs = [math.log10(max(v, 1e-12)) if log else v for v in values]
        lo, hi = min(vs), max(vs)
        span = hi - lo or (1.0 if log else abs(hi) or 1.0)
        self.lo, self.hi = lo - span * pad, hi + span * pad

    def __call__(self, v: float) -> float:
        t = math.log10(max(v, 1e-12)) if self.log else v
        return round(self.p0 + (t - self.lo) / (self.hi - self.lo) * (self.p1 - self.p0), 1)

    def ticks(self) -> list[dict[str, Any]]:
        if self.log:
            vals = [m * 10.0 ** e for e in range(math.floor(self.lo), math.ceil(self.hi) + 1) for m in (1, 2, 5)]
            vals = [v for v in vals if self.lo <= math.log10(v) <= self.hi]
            if len(vals) > 8:
                vals = [v for v in vals if str(v).lstrip("0.").startswith("1")]
        else:  # a 1-2-5 step giving about five ticks, on multiples of the step
            raw = (self.hi - self.lo) / 5
            mag = 10.0 ** math.floor(math.log10(raw))
            step = next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw)
            vals = [k * step for k in range(math.ceil(self.lo / step), math.floor(self.hi / step) + 1)]
        return [{"pos": self(v), "label": f"{v:.4g}"} for v in vals]


def _scatter(rows: list[tuple[int, dict[str, Any], float, float]], *, xlabel: str, ylabel: str, log_y: bool,
             higher_is_better: bool, what: str) -> dict[str, Any] | None:
    """A scatter of (row index, row, x, y) with its Pareto front; None when there is nothing to plot."""
    if not rows:
        return None
    x = _Axis([r[2] for r in rows], _ML, _W - _MR, log=True)
    y = _Axis([r[3] for r in rows], _H - _MB, _MT, log=log_y)
    front = pareto_front([(r[2], -r[3] if higher_is_better else r[3]) for r in rows])
    points, placed = [], []
    for k, (i, r, xv, yv) in enumerate(rows):
        on = k in front
        cx, cy = x(xv), y(yv)
        label = _place_label(placed, cx, cy, row_key(r))
        points.append({"cx": cx, "cy": cy, "r": 6 if on else 4, "color": _PALETTE[i % len(_PALETTE)],
                       "pareto": on, "label": row_key(r), "row": i, "lx": label[0] if label else None,
                       "ly": label[1] if label else None,
                       "title": f"{row_key(r)}: p50 {xv:.3g} ms, {what} {yv:.4g}{' (Pareto)' if on else ''}"})
    path = " ".join(f"{points[k]['cx']},{points[k]['cy']}" for k in front) if len(front) > 1 else ""
    return {"w": _W, "h": _H, "ml": _ML, "mr": _MR, "mt": _MT, "mb": _MB, "xticks": x.ticks(), "yticks": y.ticks(),
            "xlabel": xlabel, "ylabel": ylabel, "points": points, "front": path, "what": what}


def _place_label(placed: list[tuple[float, float, float, float]], cx: float, cy: float,
                 text: str) -> tuple[float, float] | None:
    """A spot for a point's label that overlaps no label placed before (above-right, below-right, left), or None:
    the point then keeps only its tooltip, which says the same."""
    w, h = 6.2 * len(text), 12.0
    for lx, ly in ((cx + 8, cy - 6), (cx + 8, cy + 14), (cx - 8 - w, cy - 6), (cx - 8 - w, cy + 14)):
        box = (lx, ly - h + 2, lx + w, ly + 2)
        if all(box[2] < b[0] or box[0] > b[2] or box[3] < b[1] or box[1] > b[3] for b in placed):
            placed.append(box)
            return round(lx, 1), round(ly, 1)
    return None


def _task_points(results: list[dict[str, Any]]) -> list[tuple[int, dict[str, Any], float, float]]:
    return [(i, r, r["latency_ms"]["p50"], r["task"]["value"]) for i, r in enumerate(results)
            if (r.get("latency_ms") or {}).get("p50") and (r.get("task") or {}).get("value") is not None]


def _drift_points(results: list[dict[str, Any]]) -> list[tuple[int, dict[str, Any], float, float]]:
    return [(i, r, r["latency_ms"]["p50"], max(float(r["drift"]["rel_l2"]), 1e-9)) for i, r in enumerate(results)
            if (r.get("latency_ms") or {}).get("p50") and (r.get("drift") or {}).get("rel_l2") is not None]


def _boxes(results: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Latency distributions on a log axis, so one slow row does not squash the others into a line."""
    rows = [(i, r) for i, r in enumerate(results) if (r.get("latency_ms") or {}).get("quantiles")]
    if not rows:
        return None
    ml, rowh = 150, 28
    h = _MT + rowh * len(rows) + 40
    qs = [r["latency_ms"]["quantiles"] for _, r in rows]
    x = _Axis([q[1] for q in qs] + [max(r["latency_ms"].get("p99") or q[19], q[19]) for (_, r), q in zip(rows, qs)],
              ml, _W - _MR, log=True, pad=0.03)
    out = []
    for k, ((i, r), q) in enumerate(zip(rows, qs)):
        p99 = r["latency_ms"].get("p99") or q[19]
        out.append({"y": _MT + k * rowh + rowh / 2, "label": row_key(r), "color": _PALETTE[i % len(_PALETTE)],
                    "p5": x(q[1]), "p25": x(q[5]), "p50": x(q[10]), "p75": x(q[15]), "p95": x(q[19]), "p99": x(p99),
                    "title": f"p25 {q[5]:.3g} · p50 {q[10]:.3g} · p75 {q[15]:.3g} · p99 {p99:.3g} ms"})
    return {"w": _W, "h": h, "ml": ml, "rows": out, "xticks": x.ticks()}


def _html_row(r: dict[str, Any], env: dict[str, Any], results: list[dict[str, Any]]) -> dict[str, Any]:
    lat = r.get("latency_ms") or {}
    ci = lat.get("p50_ci") or [None, None]
    c = r.get("comparison") or {}
    mark = status_mark(r)
    return {"target": r.get("profile") or r.get("target"), "precision": r.get("precision"), "status": mark,
            "cls": "bad" if r.get("status") == "failed" else "warn" if mark != "ok" else "ok",
            "p50": f"{_ms(lat.get('p50'))} [{_ms(ci[0])}, {_ms(ci[1])}]" if lat else
            ("proxy: n/a" if r.get("proxy") else "–"),
            "p99": _ms(lat.get("p99")), "cold": _ms((r.get("cold_start_ms") or {}).get("total")),
            "rss": f"{r['peak_rss_mb']:.0f} MiB" if r.get("peak_rss_mb") else "–",
            "size": _size((r.get("artifact") or {}).get("bytes")), "drift": _drift_text(r.get("drift")),
            "task": _task_text(r.get("task")), "eff": _eff_text(r),
            "vs": (c.get("verdict", "–") + (f" ({c['change']:+.1%})" if c.get("change") is not None else "")) if c
            else None,
            "note": "; ".join(x for x in (r.get("error"), r.get("latency_note"), *(r.get("warnings") or []),
                                          *_lint_notes(r), compute_note(r, env),
                                          speed_note(r, results)) if x)}


def render_html(report: dict[str, Any]) -> str:
    """Self-contained HTML from the jinja2 template: the table, latency vs the task metric (Pareto front), latency
    vs drift, and the latency distributions (inline SVG, no scripts, nothing fetched)."""
    import jinja2

    results = report.get("results", [])
    env = report.get("env", {})
    task = next((r["task"] for r in results if (r.get("task") or {}).get("value") is not None), None)
    unit = f" ({task.get('unit', '')})" if task and task.get("unit") else ""
    tpl = jinja2.Environment(loader=jinja2.PackageLoader("edgeconv", "templates"), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    return tpl.get_template("report.html.j2").render(
        title=str((report.get("model") or {}).get("name", "model")), env=env, created=report.get("created", ""),
        versions=", ".join(f"{k} {v}" for k, v in (env.get("versions") or {}).items()),
        rows=[_html_row(r, env, results) for r in results], has_vs=bool(report.get("comparison")),
        has_eff=_has_roofline(results), roofline=roofline_summary(report),
        comparison=report.get("comparison"),
        task_plot=_scatter(_task_points(results), xlabel="p50 latency (ms, log)",
                           ylabel=f"{task['metric'] if task else 'task metric'}{unit}", log_y=False,
                           higher_is_better=True, what=task["metric"] if task else "task"),
        drift_plot=_scatter(_drift_points(results), xlabel="p50 latency (ms, log)",
                            ylabel="relative L2 drift (log)", log_y=True, higher_is_better=False, what="rel_l2"),
        boxes=_boxes(results))


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
    fails = [f"{c['name']} {c['value']} vs limit {c['limit']}" for c in d.get("checks", []) if c.get("pass") is False]
    out.append(("drift", "failure" if fails else "pass", "; ".join(fails) or None))
    t = r.get("task")
    if t is None:
        out.append(("task", "skipped", "no task metric (no postprocess or data)"))
    elif t.get("pass") is False:
        ref = _num(t.get("reference"))
        out.append(("task", "failure", f"{_task_text(t)} vs reference {'–' if ref is None else f'{ref:.2f}'} "
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


if __name__ == "__main__":  # python -m edgeconv.bench.report --schema > schemas/report.schema.json
    import sys

    if sys.argv[1:] != ["--schema"]:
        sys.exit("usage: python -m edgeconv.bench.report --schema")
    print(json.dumps(report_json_schema(), indent=2))
