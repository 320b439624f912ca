"""Report writers: the four files, the JUnit structure, the self-contained HTML and its plots, the Pareto front, the
contract's validation (future schema versions, wrong shapes) and the checked-in JSON Schema."""

from __future__ import annotations

import copy
import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from edgeconv.bench.latency import summarize
from edgeconv.bench.report import (
    FILES,
    SCHEMA,
    _boxes,
    check_report,
    load_report,
    make_report,
    pareto_front,
    render_html,
    render_junit,
    report_json_schema,
    write_all,
)
from edgeconv.core.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


def _row(profile: str, precision: str, p50: float, rel_l2: float, *, drift_ok: bool = True,
         value: float = 49.5) -> dict:
    import numpy as np

    lat = summarize(np.random.default_rng(0).normal(p50, p50 * 0.05, 200).clip(p50 * 0.5))
    return {"target": profile, "profile": profile, "precision": precision, "status": "ok", "error": None,
            "artifact": {"path": "/x", "bytes": 12345, "sha256": "ab"}, "latency_ms": lat,
            "drift": {"shape_ok": True, "max_abs": 0.01, "rel_l2": rel_l2, "cosine": 0.999,
                      "checks": [{"name": "cosine", "value": 0.999, "limit": 0.98, "pass": drift_ok}],
                      "pass": drift_ok},
            "task": {"metric": "map50_95", "reference": 50.0, "value": value, "delta": value - 50.0, "tolerance": 1.0,
                     "pass": True},
            "checks": {"drift": drift_ok, "task": True}}


def _report() -> dict:
    rows = [_row("onnxruntime", "fp32", 10.0, 1e-7), _row("openvino", "int8", 4.0, 1e-2, drift_ok=False),
            _row("ncnn", "fp32", 12.0, 1e-3),
            {"target": "tflite", "profile": "tflite", "precision": "int8", "status": "failed",
             "error": "conversion error [convert/tflite]: <boom> & co", "artifact": None, "latency_ms": None,
             "drift": None, "task": None}]
    return make_report(rows, model={"name": "tiny", "sha256": "00"}, env={"cpu": "Test CPU", "cores": 2,
                                                                          "versions": {"onnxruntime": "1"}})


def test_pareto_front() -> None:
    pts = [(10, 1.0), (4, 3.0), (12, 0.5), (11, 2.0), (4, 5.0)]
    assert pareto_front(pts) == [1, 0, 2]


def test_write_all_produces_four_parseable_files(tmp_path: Path) -> None:
    paths = write_all(_report(), tmp_path)
    assert set(paths) == set(FILES) and all(p.is_file() for p in paths.values())
    rep = json.loads(paths["report.json"].read_text())
    assert rep["schema"] == SCHEMA
    assert [r["status"] for r in rep["results"]] == ["ok", "ok", "ok", "failed"]
    md = paths["report.md"].read_text()
    assert md.count("\n| ") >= 5 and "tflite | int8 | FAILED" in md
    assert "openvino | int8 | ok, checks failed: drift" in md
    html = paths["report.html"].read_text()
    assert "<svg" in html and "<script" not in html and "http" not in html.replace("http://www.w3.org", "")
    assert not re.search(r"\b(src|href)=|url\(|@import|<link", html)  # nothing to fetch
    assert "&lt;boom&gt; &amp; co" in html  # escaped error text
    assert "Pareto" in html


def test_junit_one_testcase_per_row_and_check() -> None:
    root = ET.fromstring(render_junit(_report()))
    cases = list(root.iter("testcase"))
    assert len(cases) == 4 * 4  # rows × (run, drift, task, latency)
    by = {(c.get("classname"), c.get("name")): c for c in cases}
    assert by[("edgeconv.openvino.int8", "drift")].find("failure") is not None
    assert by[("edgeconv.onnxruntime.fp32", "drift")].find("failure") is None
    err = by[("edgeconv.tflite.int8", "run")].find("error")
    assert err is not None and "boom" in err.get("message")
    assert by[("edgeconv.tflite.int8", "latency")].find("skipped") is not None
    suite = root.find("testsuite")
    assert suite.get("tests") == "16" and suite.get("failures") == "1" and suite.get("errors") == "1"


def test_proxy_row_has_null_latency_and_note(tmp_path: Path) -> None:
    rep = _report()
    rep["results"][0].update(latency_ms=None, proxy=True, latency_note="TensorRT proxy: ORT on the Q/DQ ONNX")
    write_all(rep, tmp_path)
    md = (tmp_path / "report.md").read_text()
    assert "proxy: n/a" in md and "TensorRT proxy" in md
    root = ET.parse(tmp_path / "junit.xml").getroot()
    lat = next(c for c in root.iter("testcase") if c.get("classname") == "edgeconv.onnxruntime.fp32"
           and c.get("name") == "latency")
    assert lat.find("skipped") is not None


def test_status_marks_are_words_not_emoji(tmp_path: Path) -> None:
    write_all(_report(), tmp_path)
    for name in ("report.md", "report.html"):
        text = (tmp_path / name).read_text()
        assert not [c for c in text if ord(c) >= 0x2600 and c not in "–Δ·"], name  # no emoji / dingbats


def test_plots_latency_vs_task_metric_then_drift_one_point_per_row() -> None:
    html = render_html(_report())
    plots = re.findall(r'<svg class="plot".*?</svg>', html, re.S)
    assert len(plots) == 2 and 'aria-label="latency vs task metric"' in plots[0]
    for svg in plots:
        assert svg.count('class="point') == 3  # the three ok rows; the failed row has no numbers
    assert "map50_95" in html.split("Latency vs drift")[0]


def test_pareto_front_of_the_task_plot_maximises_the_metric() -> None:
    rows = [_row("fast-bad", "int8", 4.0, 1e-2, value=40.0), _row("slow-good", "fp32", 10.0, 1e-7, value=50.0),
            _row("dominated", "fp16", 12.0, 1e-3, value=45.0)]
    html = render_html(make_report(rows, model={"name": "m"}, env={}))
    task_plot = re.findall(r'<svg class="plot".*?</svg>', html, re.S)[0]
    pareto = re.findall(r'<circle class="point pareto" data-row="(\d)"', task_plot)
    assert sorted(pareto) == ["0", "1"]


def test_latency_boxes_survive_one_slow_row() -> None:
    rows = [_row("a", "fp32", 5.0, 1e-7), _row("b", "int8", 4.0, 1e-2), _row("slow", "fp32", 400.0, 1e-7)]
    boxes = _boxes(rows)["rows"]
    widths = {b["label"]: b["p95"] - b["p5"] for b in boxes}
    assert widths["a/fp32"] > 10 and widths["b/int8"] > 10  # a linear axis to 400 ms would squash these to ~2 px
    assert boxes[0]["p50"] < boxes[2]["p50"]


def test_future_schema_and_wrong_shape_are_config_errors(tmp_path: Path) -> None:
    rep = json.loads(json.dumps(_report()))
    check_report(rep)
    future = {**copy.deepcopy(rep), "schema": "edgeconv.report/2"}
    with pytest.raises(ConfigError, match="newer than this edgeconv"):
        check_report(future)
    bad = copy.deepcopy(rep)
    bad["results"][0]["latency_ms"] = {"p50": "fast"}
    with pytest.raises(ConfigError, match=r"results\.0\.latency_ms\.p50"):
        check_report(bad)
    for doc in ([1, 2], {"schema": "something/1"}, {**rep, "results": {"a": 1}}):
        with pytest.raises(ConfigError):
            check_report(doc)
    (tmp_path / "future.json").write_text(json.dumps(future))
    with pytest.raises(ConfigError) as ei:
        load_report(tmp_path / "future.json")
    assert "edgeconv.report/2" in ei.value.message and "upgrade" in (ei.value.hint or "")


def test_checked_in_schema_is_the_generated_one_and_accepts_real_reports(tmp_path: Path) -> None:
    jsonschema = pytest.importorskip("jsonschema", reason="validating against the JSON Schema needs jsonschema")
    checked_in = json.loads((ROOT / "schemas" / "report.schema.json").read_text())
    assert checked_in == report_json_schema(), "regenerate: python -m edgeconv.bench.report --schema"
    write_all(_report(), tmp_path)
    jsonschema.validate(json.loads((tmp_path / "report.json").read_text()), checked_in)
    bad = json.loads((tmp_path / "report.json").read_text())
    del bad["results"][0]["precision"]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, checked_in)


# --- a real browser ------------------------------------------------------------------------------------------------


class _Chromium:
    """Headless Chromium driven over the DevTools protocol on a pipe (no websocket library needed)."""

    def __init__(self, exe: str, profile: Path) -> None:
        import fcntl
        import os
        import subprocess

        def high(fd: int) -> int:  # above 4, so the 3</4> redirections cannot clobber it
            new = fcntl.fcntl(fd, fcntl.F_DUPFD, 10)
            os.close(fd)
            return new

        to_r, self._to_w = (high(fd) for fd in os.pipe())
        self._from_r, from_w = (high(fd) for fd in os.pipe())
        cmd = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--remote-debugging-pipe", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               "--disable-default-apps", f"--user-data-dir={profile}", "about:blank"]
        self.proc = subprocess.Popen(["bash", "-c", f'exec "$@" 3<&{to_r} 4>&{from_w}', "bash", *cmd],
                                     pass_fds=(to_r, from_w), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(to_r)
        os.close(from_w)
        self._buf, self._id, self.events = b"", 0, []

    def send(self, method: str, params: dict | None = None, session: str | None = None, timeout: float = 60) -> dict:
        import os
        import select
        import time

        self._id += 1
        msg = {"id": self._id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self._to_w, json.dumps(msg).encode() + b"\0")
        end = time.monotonic() + timeout
        while True:
            while b"\0" in self._buf:
                raw, self._buf = self._buf.split(b"\0", 1)
                m = json.loads(raw)
                if m.get("id") == self._id:
                    if "error" in m:
                        raise RuntimeError(f"{method}: {m['error']}")
                    return m.get("result", {})
                self.events.append(m)
            left = end - time.monotonic()
            if left <= 0 or not select.select([self._from_r], [], [], left)[0]:
                raise TimeoutError(method)
            chunk = os.read(self._from_r, 1 << 20)
            if not chunk:
                raise RuntimeError("chromium exited")
            self._buf += chunk

    def close(self) -> None:
        import contextlib
        import os

        with contextlib.suppress(Exception):
            self.send("Browser.close", timeout=5)
        self.proc.kill()
        self.proc.wait(timeout=30)
        os.close(self._to_w)
        os.close(self._from_r)


def test_html_report_in_a_real_browser(tmp_path: Path) -> None:
    """Chromium renders the page, its task plot has one point per row with numbers, and it requests nothing but the
    page itself (every request the page makes is recorded by the DevTools protocol)."""
    import base64
    import shutil
    import time

    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.skip("chromium is not installed (Debian: apt-get install -y chromium)")
    write_all(_report(), tmp_path / "rep")
    url = (tmp_path / "rep" / "report.html").as_uri()
    browser = _Chromium(exe, tmp_path / "profile")
    try:
        target = browser.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = browser.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for m in ("Network.enable", "Page.enable"):
            browser.send(m, session=session)
        browser.events.clear()
        browser.send("Page.navigate", {"url": url}, session=session)
        end = time.monotonic() + 60
        while not any(e.get("method") == "Page.loadEventFired" for e in browser.events):
            assert time.monotonic() < end, "the page did not load"
            browser.send("Runtime.evaluate", {"expression": "1"}, session=session)

        def js(expr: str):
            return browser.send("Runtime.evaluate", {"expression": expr, "returnByValue": True},
                                session=session)["result"]["value"]

        assert js("document.title") == "edgeconv report: tiny"
        assert js("document.querySelectorAll('svg.plot')[0].querySelectorAll('circle.point').length") == 3
        assert js("document.querySelectorAll('svg.plot')[1].querySelectorAll('circle.point').length") == 3
        assert js("document.querySelector('svg.plot').getBoundingClientRect().width") > 300  # laid out
        assert js("document.querySelectorAll('#results tr').length") == 1 + 4
        shot = browser.send("Page.captureScreenshot", {"format": "png"}, session=session)["data"]
        assert base64.b64decode(shot)[:8] == b"\x89PNG\r\n\x1a\n"
        requested = [e["params"]["request"]["url"] for e in browser.events
                     if e.get("method") == "Network.requestWillBeSent"]
        assert requested == [url], requested
    finally:
        browser.close()
