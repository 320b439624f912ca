"""Console behaviour: progress is never silent off a terminal (a line with the time left), -q silences it, and
results go to stdout while logs go to stderr."""

from __future__ import annotations

import logging

import pytest

from edgeconv.core import console as con


@pytest.fixture(autouse=True)
def _restore_logging():
    yield
    con.setup_logging()


def test_track_logs_progress_with_an_estimate_when_not_a_terminal(monkeypatch: pytest.MonkeyPatch,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(con, "_PLAIN_EVERY_S", 0.0)
    clock = iter(range(0, 1000, 10))
    monkeypatch.setattr(con.time, "monotonic", lambda: float(next(clock)))
    con.setup_logging()
    con.log.propagate = True  # let caplog see the records
    with caplog.at_level(logging.INFO, logger="edgeconv"):
        assert list(con.track(range(4), "loading images")) == [0, 1, 2, 3]
    lines = [r.getMessage() for r in caplog.records if "loading images" in r.getMessage()]
    assert lines[0] == "loading images: 0/4"
    assert any("1/4, about 30 s left" in ln for ln in lines), lines  # 10 s per item, 3 to go
    assert lines[-1].startswith("loading images: 4/4")


def test_quiet_silences_progress_and_info(caplog: pytest.LogCaptureFixture) -> None:
    con.setup_logging(quiet=True)
    con.log.propagate = True
    with caplog.at_level(logging.DEBUG, logger="edgeconv"):
        assert list(con.track([1, 2], "x")) == [1, 2]
    assert con.is_quiet() and not [r for r in caplog.records if r.getMessage().startswith("x:")]
    assert con.log.level == logging.WARNING


def test_log_file_gets_debug_lines(tmp_path) -> None:
    log = tmp_path / "run.log"
    con.setup_logging(log_file=log)
    con.log.debug("a debug line")
    for h in con.log.handlers:
        h.flush()
    assert "DEBUG edgeconv: a debug line" in log.read_text()
    for h in list(con.log.handlers):
        if isinstance(h, logging.FileHandler):
            con.log.removeHandler(h)
            h.close()


def test_emit_json_and_escape(capsys: pytest.CaptureFixture[str]) -> None:
    con.emit_json({"a": float("nan"), "b": [1.5, float("inf")]})
    assert capsys.readouterr().out == '{\n  "a": null,\n  "b": [\n    1.5,\n    null\n  ]\n}\n'
    assert con.escape("pip install 'edgeconv[ncnn]'") == "pip install 'edgeconv\\[ncnn]'"


def test_stdout_to_stderr_keeps_tool_noise_off_stdout() -> None:
    import subprocess
    import sys

    code = ("import os, sys; from edgeconv.core.console import stdout_to_stderr\n"
            "print('result-before', flush=True)\n"
            "with stdout_to_stderr():\n"
            "    print('python-noise', flush=True); os.write(1, b'native-noise\\n')\n"
            "print('result-after', flush=True)\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert res.stdout.split() == ["result-before", "result-after"]
    assert "python-noise" in res.stderr and "native-noise" in res.stderr
