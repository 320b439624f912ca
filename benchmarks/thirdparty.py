"""Real third-party pretrained models through the edgeconv CLI, to every backend at fp32 and int8 (issue 21).

Why this exists: edgeconv's own zoo models were written with edgeconv in mind; models written and trained by other
people (their checkpoints, their preprocessing, their Python quirks) are what a new user brings.  This script runs
the CLI on them exactly as such a user would (``edgeconv convert`` per target, with the repository's own
preprocessing as ``--preprocess`` and its own sample images as calibration data), then measures every artifact that
runs here against **torch** (not only against the reference ONNX) on held-out real images, with a task metric per
model kind, and writes one table.

Nothing third-party is in this repository: the models are listed by local path in a TOML file that lives outside it
(``[[model]]`` tables: ``name``, ``repo``, ``commit``, ``kind``, ``model`` = ``FILE.py:FACTORY``, ``weights``,
``input``, ``preprocess``, ``calib``, ``eval``, optional ``calib_size``, ``eval_limit``, ``args``, ``task_args``).
A model whose files are absent is skipped with the reason.  To reproduce::

    # fetch each repository at the listed commit into /work/thirdparty/<name>/, write a thin factory per model
    # (a FILE.py with build() returning the nn.Module), split its sample images into calib/ and eval/ folders
    export EDGECONV_CACHE=/tmp/ec-thirdparty
    nice python benchmarks/thirdparty.py /work/thirdparty/models.toml --work /tmp/tp convert
    nice python benchmarks/thirdparty.py /work/thirdparty/models.toml --work /tmp/tp score
    python benchmarks/thirdparty.py /work/thirdparty/models.toml --work /tmp/tp report \\
        --results benchmarks/results/thirdparty_2026-12-02

Stages are resumable: a (model, target) whose CLI result is already in ``--work`` is not converted again.
Scoring runs one child process per model (repositories reuse top-level package names such as ``model``).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

TARGETS = ("onnxruntime", "openvino", "ncnn", "tflite", "mnn", "opencv", "executorch", "tensorrt", "rk3588", "ios")
PRECISIONS = ("fp32", "int8")
NOT_RUNNABLE = {"tensorrt": "TensorRT is not installed here (no NVIDIA GPU): Q/DQ ONNX + calibration cache written, "
                            "engine build and execution only on a device with TensorRT",
                "ios": "Core ML runs only on Apple platforms: converted and checked, not executed here"}


def load_models(path: Path) -> list[dict[str, Any]]:
    """Read the model list; each entry gets ``missing`` (a reason) when one of its files is absent."""
    models = tomllib.loads(path.read_text())["model"]
    for m in models:
        files = [m["model"].rsplit(":", 1)[0], m.get("weights"), m.get("calib"), m.get("eval")]
        absent = [f for f in files if f and not Path(f).exists()]
        m["missing"] = f"files absent: {', '.join(absent)}" if absent else None
    return models


def _cli_args(m: dict[str, Any], target: str, precision: str, out: Path) -> list[str]:
    args = ["edgeconv", "convert", "--model", m["model"], "--target", target, "-p", precision, "--out", str(out),
            "--preprocess", m["preprocess"], "--json"]
    for inp in ([m["input"]] if isinstance(m["input"], str) else m["input"]):
        args += ["--input", inp]
    if m.get("weights"):
        args += ["--weights", m["weights"]]
    if precision == "int8":
        args += ["--calib", m["calib"], "--calib-size", str(m.get("calib_size", 100))]
    return args + list(m.get("args", []))


_CONVERTED = re.compile(r"converted (\S+) (\S+) in ([0-9.]+) s")


def convert(models: list[dict[str, Any]], work: Path, targets: tuple[str, ...],
            precisions: tuple[str, ...] = PRECISIONS, row_timeout: float = 3600.0) -> None:
    """One CLI call per (model, target, precision), as a user would type it; stdout JSON and the log kept.

    A row still running after ``row_timeout`` seconds is stopped and recorded as such (rc 124): on a shared 2-core
    machine an INT8 row's float-fallback search can take longer than the whole budget of a run.
    """
    for m in models:
        if m["missing"]:
            print(f"skip {m['name']}: {m['missing']}", file=sys.stderr)
            continue
        for target, precision in ((t, p) for p in precisions for t in targets):
            rec = work / m["name"] / f"{target}-{precision}.cli.json"
            if rec.exists():
                if precision == "fp32" and m.get("fp32_retry") and json.loads(rec.read_text())["rc"] == 6:
                    _retry(m, target, work, json.loads(rec.read_text())["cmd"])
                continue
            rec.parent.mkdir(parents=True, exist_ok=True)
            cmd = _cli_args(m, target, precision, work / m["name"] / "out")
            t0 = time.perf_counter()
            p = _run(cmd, row_timeout)
            wall = time.perf_counter() - t0
            try:
                rows = json.loads(p.stdout) if p.stdout.strip() else []
            except json.JSONDecodeError:
                rows = []
            conv = {(a, b): float(s) for a, b, s in _CONVERTED.findall(p.stderr)}
            record = {"cmd": cmd, "rc": p.returncode, "wall_s": round(wall, 1), "rows": rows,
                      "convert_s": conv.get((target, precision)), "stderr_tail": p.stderr[-4000:]}
            rec.write_text(json.dumps(record, indent=1, ensure_ascii=False))
            status = rows[0]["status"] if rows else f"rc {p.returncode}"
            print(f"{m['name']:<12} {target:<12} {precision:<5} {status:<12} {wall:6.1f} s", file=sys.stderr)
            if precision == "fp32" and p.returncode == 6 and m.get("fp32_retry"):
                _retry(m, target, work, cmd)


def _run(cmd: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    """The CLI in its own process group, so a row stopped at ``timeout`` takes its conversion children with it."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
        return subprocess.CompletedProcess(cmd, proc.returncode, out, err)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        return subprocess.CompletedProcess(cmd, 124, "", (err or "") + f"\nnot finished error: the row was stopped "
                                           f"after {timeout:.0f} s (time budget of this run)\n")


def _retry(m: dict[str, Any], target: str, work: Path, cmd: list[str]) -> None:
    """What the user does next after an fp32 verification refusal: the same command with the model's listed
    ``fp32_retry`` arguments (e.g. a looser ``--tol``), into its own folder, recorded as precision ``fp32+retry``."""
    rec = work / m["name"] / f"{target}-fp32+retry.cli.json"
    if rec.exists():
        return
    out_i = cmd.index("--out") + 1
    cmd = [*cmd[:out_i], str(work / m["name"] / "retry"), *cmd[out_i + 1:], *m["fp32_retry"]]
    t0 = time.perf_counter()
    p = _run(cmd, 3600.0)
    rows = json.loads(p.stdout) if p.stdout.strip().startswith("[") else []
    conv = {(a, b): float(s) for a, b, s in _CONVERTED.findall(p.stderr)}
    rec.write_text(json.dumps({"cmd": cmd, "rc": p.returncode, "wall_s": round(time.perf_counter() - t0, 1),
                               "rows": rows, "convert_s": conv.get((target, "fp32")),
                               "stderr_tail": p.stderr[-4000:]}, indent=1, ensure_ascii=False))
    print(f"{m['name']:<12} {target:<12} fp32+retry rc {p.returncode}", file=sys.stderr)


def score(models: list[dict[str, Any]], work: Path, toml_path: Path) -> None:
    """One child per model, so two repositories' same-named packages never meet in one interpreter."""
    for m in models:
        if m["missing"] or not (work / m["name"]).exists():
            continue
        subprocess.run([sys.executable, __file__, str(toml_path), "--work", str(work), "score-one", m["name"]],
                       check=False)


def machine() -> dict[str, Any]:
    """The machine, named: lscpu model, cores, load (results without it mean nothing)."""
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        cpu = re.search(r"Model name:\s*(.+)", lscpu).group(1).strip()  # type: ignore[union-attr]
    except (OSError, AttributeError):
        cpu = "unknown"
    return {"cpu": cpu, "cores": os.cpu_count(), "load_avg": [round(x, 2) for x in os.getloadavg()],
            "note": "2 cores shared by ~6 engineers while measured: conversion seconds are wall time under load"}


def _first_line(s: str | None) -> str | None:
    return s.strip().splitlines()[0] if s and s.strip() else None


def collect(models: list[dict[str, Any]], work: Path, targets: tuple[str, ...]) -> list[dict[str, Any]]:
    """One row per (model, target, precision): the CLI's verdict, the script's measurement beside it."""
    out = []
    for m in models:
        base = {"model": f"{m['repo']}@{m['commit'][:10]}", "name": m["name"], "kind": m["kind"]}
        if m["missing"]:
            out.append({**base, "backend": "*", "precision": "*", "converted": "skipped", "error": m["missing"]})
            continue
        scores = json.loads((work / m["name"] / "score.json").read_text()) \
            if (work / m["name"] / "score.json").exists() else {}
        for target in targets:
            for precision in (*PRECISIONS, "fp32+retry"):
                rec_p = work / m["name"] / f"{target}-{precision}.cli.json"
                if not rec_p.exists():
                    continue
                rec = json.loads(rec_p.read_text())
                row = rec["rows"][0] if rec["rows"] else {}
                err = row.get("error") or {}
                status = row.get("status") or "failed"
                if not rec["rows"] and rec["rc"]:  # one row asked for: its error is the command's, on stderr only
                    err = _stderr_error(rec["stderr_tail"], rec["rc"])
                s = scores.get(f"{target}-{precision}", {})
                if precision == "fp32+retry":
                    precision = "fp32 " + " ".join(m["fp32_retry"])
                out.append({**base, "backend": target, "precision": precision,
                            "converted": {"ok": "yes", "not-executed": "yes (not executed)"}.get(status, "no"),
                            "exit_code": rec["rc"], "verify_max_abs": (row.get("verification") or {}).get("max_abs"),
                            "verify_cosine": (row.get("verification") or {}).get("cosine"),
                            "cli_task": row.get("task"), "torch_max_abs": s.get("max_abs"),
                            "torch_cosine": s.get("cosine"), "task_metric": s.get("metric"),
                            "task_value": s.get("value"), "task_torch": s.get("torch"), "task_delta": s.get("delta"),
                            "score_note": (NOT_RUNNABLE.get(target) if status != "failed" else None) or s.get("note"),
                            "seconds": rec["wall_s"] if rec["rc"] == 124 else (rec.get("convert_s") or rec["wall_s"]),
                            "wall_s": rec["wall_s"],
                            "error_kind": err.get("kind"), "error": _bare(_first_line(err.get("message"))),
                            "hint": _first_line(err.get("hint")), "task_hook": s.get("hook"),
                            "record_note": rec.get("note"),
                            "task_note": s.get("note") if s.get("max_abs") is not None else None})
                plain = scores.get(f"{target}-{precision}-plainload")
                if plain:
                    out.append({**out[-1], "backend": f"{target} (plain compile_model)", "torch_max_abs":
                                plain.get("max_abs"), "torch_cosine": plain.get("cosine"),
                                "task_value": plain.get("value"), "task_delta": plain.get("delta"),
                                "task_note": plain.get("note"), "task_hook": None})
    return out


_ERR = re.compile(r"^([a-z][a-z0-9 ]*error)(?: \[[^\]]*\])?: (.*)$", re.M)  # not the indented hint
_HINT_LINE = re.compile(r"^\s+hint: (.*)$", re.M)


def _bare(msg: str | None) -> str | None:
    """The message without the ``kind error [stage/target]:`` prefix the CLI's one-line form carries."""
    m = _ERR.match(msg) if msg else None
    return m.group(2) if m else msg


def _stderr_error(tail: str, rc: int) -> dict[str, Any]:
    """The CLI's own one-line error and hint from stderr (``--json`` prints no row for a one-row command)."""
    errs, hints = _ERR.findall(tail), _HINT_LINE.findall(tail)
    msg = errs[-1][1] if errs else (_first_line(tail.strip().splitlines()[-1]) if tail.strip() else None)
    return {"kind": errs[-1][0] if errs else f"exit {rc}", "message": msg, "hint": hints[-1] if hints else None}


def _f(v: Any, fmt: str) -> str:
    return format(v, fmt) if isinstance(v, (int, float)) else "–"


def write_report(rows: list[dict[str, Any]], models: list[dict[str, Any]], results: Path) -> None:
    mach = machine()
    doc = {"schema": "edgeconv.thirdparty/1", "date": time.strftime("%Y-%m-%d"), "machine": mach,
           "models": [{k: m.get(k) for k in ("name", "repo", "commit", "kind", "input", "preprocess", "calib_size",
                                             "eval_limit", "args", "fp32_retry", "source_note", "int8_note")}
                      for m in models],
           "rows": rows}
    results.parent.mkdir(parents=True, exist_ok=True)
    results.with_suffix(".json").write_text(json.dumps(doc, indent=1, ensure_ascii=False))
    lines = [f"# Third-party pretrained models through the edgeconv CLI ({doc['date']})", "",
             f"Machine: {mach['cpu']}, {mach['cores']} cores, load average {mach['load_avg']} ({mach['note']}).",
             "Drift is vs **torch** on held-out real images of each model (the CLI's own verification is vs the "
             "reference ONNX). Task delta: artifact minus torch, in points, on the same images.", "",
             "| model | task | backend | prec | converted? | max abs / cosine vs torch | task delta | s | "
             "error (first line) + hint |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        drift = (f"{_f(r.get('torch_max_abs'), '.2e')} / {_f(r.get('torch_cosine'), '.6f')}"
                 if r.get("torch_max_abs") is not None else (r.get("score_note") or "–"))
        task = (f"{r['task_metric']} {r['task_value']:.1f} ({r['task_delta']:+.1f})"
                if r.get("task_delta") is not None else "–")
        if r.get("task_hook"):
            h = r["task_hook"]
            task += f"; edgeconv.tasks {h['metric']} {h['value']:.1f} ({h['delta']:+.1f})"
        if r.get("task_note"):
            task += f"; {r['task_note']}"
        err = r.get("error") or ""
        if r.get("record_note"):
            drift += f" ({r['record_note']})"
        if err:
            err = f"`{err[:220]}`" + (f" — hint: {r['hint'][:160]}" if r.get("hint") else "")
        lines.append(f"| {r['model']} | {r['kind']} | {r['backend']} | {r['precision']} | {r['converted']} | "
                     f"{drift} | {task} | {_f(r.get('seconds'), '.1f')} | {err.replace('|', '/')} |")
    lines += ["", "## Per model", "", "| model | rows converted | fp32 worst max abs vs torch (runnable) | "
              "int8 task delta range (points) |", "|---|---|---|---|"]
    for m in models:
        mine = [r for r in rows if r["name"] == m["name"] and "plain" not in r["backend"]]
        ok = [r for r in mine if r["converted"].startswith("yes")]
        f32 = [r["torch_max_abs"] for r in ok
               if r["precision"].startswith("fp32") and r.get("torch_max_abs") is not None]
        d8 = [r["task_delta"] for r in ok if r["precision"] == "int8" and r.get("task_delta") is not None]
        lines.append(f"| {m['name']} | {len(ok)} of {len(mine)} | {_f(max(f32) if f32 else None, '.2e')} | "
                     + (f"{min(d8):+.1f} … {max(d8):+.1f}" if d8 else "–") + " |")
    lines += ["", "## Models", ""]
    for m in models:
        lines.append(f"- **{m['name']}** ({m['repo']}@{m['commit'][:10]}, {m['kind']}): `--input {m['input']}` "
                     f"`--preprocess {m['preprocess']}`; calibration {m.get('calib_size', 100)} images, evaluation "
                     f"up to {m.get('eval_limit', 50)}. {m.get('source_note') or ''} {m.get('int8_note') or ''}"
                     + (f" fp32 refusals retried with `{' '.join(m['fp32_retry'])}`." if m.get("fp32_retry") else ""))
    results.with_suffix(".md").write_text("\n".join(lines) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("models", type=Path, help="TOML listing the models by local path (outside the repository)")
    ap.add_argument("--work", type=Path, default=Path("/tmp/edgeconv-thirdparty"), help="artifacts and records")
    ap.add_argument("--targets", default=",".join(TARGETS))
    ap.add_argument("--only", default="", help="comma-separated model names")
    ap.add_argument("--precisions", default=",".join(PRECISIONS), help="precisions to convert, in this order")
    ap.add_argument("--row-timeout", type=float, default=3600.0, help="seconds before a CLI row is stopped")
    ap.add_argument("--results", type=Path, default=Path("benchmarks/results/thirdparty"))
    ap.add_argument("stage", choices=("convert", "score", "score-one", "report", "all"))
    ap.add_argument("name", nargs="?")
    a = ap.parse_args()
    models = load_models(a.models)
    if a.only:
        models = [m for m in models if m["name"] in a.only.split(",")]
    targets = tuple(t for t in a.targets.split(",") if t)
    if a.stage == "score-one":
        from thirdparty_score import score_model  # numpy/torch only in the scoring child

        m = next(m for m in models if m["name"] == a.name)
        res = score_model(m, a.work / m["name"], targets, PRECISIONS, skip=tuple(NOT_RUNNABLE))
        (a.work / m["name"] / "score.json").write_text(json.dumps(res, indent=1))
        return
    if a.stage in ("convert", "all"):
        convert(models, a.work, targets, tuple(a.precisions.split(",")), a.row_timeout)
    if a.stage in ("score", "all"):
        score(models, a.work, a.models)
    if a.stage in ("report", "all"):
        write_report(collect(models, a.work, targets), models, a.results)


if __name__ == "__main__":
    main()
