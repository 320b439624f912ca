"""The tune result as a table: Markdown for ``tune.md`` and rows for the terminal (one source for both)."""

from __future__ import annotations

from typing import Any

from edgeconv.tune.pareto import margin_text

COLUMNS = ("candidate", "status", "p50 ms", "task Δ [95% CI]", "drift rel_l2", "front", "note")


def _num(x: Any, fmt: str) -> str:
    """A measured number, or '-' where there is none (a missing value is never shown as a number)."""
    return "-" if x is None else format(x, fmt)


def _delta(task: dict[str, Any]) -> str:
    """The task delta with its 95 % interval where the harness gave one."""
    d, ci = task.get("delta"), task.get("delta_ci95")
    if d is None:
        return "-"
    if isinstance(ci, (list, tuple)) and len(ci) == 2 and None not in ci:
        return f"{d:+.2f} [{ci[0]:+.2f}, {ci[1]:+.2f}]"
    return f"{d:+.2f}"


def rows(doc: dict[str, Any]) -> list[tuple[str, ...]]:
    """One tuple of cells per candidate, fastest acceptable first, then the others in search order."""
    cands = doc.get("candidates") or []
    ok = sorted((c for c in cands if c.get("status") == "ok"), key=lambda c: (c.get("latency_ms") or {}).get("p50"))
    rest = [c for c in cands if c.get("status") != "ok"]
    out = []
    for c in ok + rest:
        task = c.get("task") or {}
        mark = "best" if c["id"] == doc.get("recommended") else ("yes" if c.get("pareto") else "")
        out.append((c["id"], c.get("status", "?"), _num((c.get("latency_ms") or {}).get("p50"), ".3g"),
                    _delta(task), _num((c.get("drift") or {}).get("rel_l2"), ".2g"), mark,
                    " ".join(str(c.get("reason") or "").split())[:120]))
    return out


def markdown(doc: dict[str, Any]) -> str:
    env, search = doc.get("env") or {}, doc.get("search") or {}
    lines = [f"# edgeconv tune: {doc.get('model')}", "",
             f"Profiles: {', '.join(doc.get('profiles') or [])}. Machine: {env.get('cpu')}, {env.get('cores')} cores, "
             f"{env.get('isa_line') or 'ISA unknown'}; load average {env.get('load')}. "
             f"{search.get('tried')} candidate(s) tried in {search.get('wall_s')} s; cost axis: "
             f"{'task metric drop (points)' if doc.get('cost_axis') == 'task' else 'output drift (rel_l2)'}.", "",
             f"**Recommended:** {doc.get('recommended') or 'none within the budget'}"
             + (f" (`{doc['best_path']}`)" if doc.get("best_path") else "") + margin_text(doc.get("margin")), "",
             "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for r in rows(doc):
        lines.append("| " + " | ".join(x.replace("|", "\\|") for x in r) + " |")
    if search.get("not_tried"):
        lines += ["", f"Not tried (--max-candidates / --time-budget): {', '.join(search['not_tried'])}"]
    for e in search.get("excluded") or []:
        lines.append(f"- excluded {e['profile']} {e['precision']}: {e['reason']}")
    return "\n".join(lines) + "\n"
