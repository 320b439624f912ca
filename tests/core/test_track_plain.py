"""Progress without a terminal: a first line, one every 15 s, and a last one for a loop that took a while (a log
that stopped at "calibrating (PT2E): 0/48" read as a hang)."""

from __future__ import annotations

import itertools
import logging

import pytest

from edgeconv.core import console


def test_plain_progress_ends_with_a_done_line(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture):
    clock = itertools.count(0.0, 1.0)  # each call one second later
    monkeypatch.setattr(console, "_live", lambda: False)
    monkeypatch.setattr(console.time, "monotonic", lambda: next(clock))
    with caplog.at_level(logging.INFO, logger=console.log.name):
        assert list(console.track(range(5), "calibrating", total=5)) == [0, 1, 2, 3, 4]
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0] == "calibrating: 0/5" and lines[-1].startswith("calibrating: 5/5 done in ")


def test_a_quick_loop_has_no_done_line(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture):
    monkeypatch.setattr(console, "_live", lambda: False)
    with caplog.at_level(logging.INFO, logger=console.log.name):
        list(console.track(range(3), "quick", total=3))
    assert [r.getMessage() for r in caplog.records] == ["quick: 0/3"]


def test_library_log_lines_and_deprecations_go_to_the_debug_log(tmp_path) -> None:
    import subprocess
    import sys

    code = ("import logging, warnings\n"
            "from edgeconv.core.console import setup_logging\n"
            f"setup_logging(log_file={str(tmp_path / 'log')!r})\n"
            "logging.warning('Please consider to run pre-processing before quantization')\n"
            "warnings.warn('isinstance(treespec, LeafSpec) is deprecated', FutureWarning)\n"
            "warnings.warn('a user-facing warning', UserWarning)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "pre-processing" not in done.stderr and "LeafSpec" not in done.stderr
    assert "a user-facing warning" in done.stderr  # other warnings are shown as before
    logged = (tmp_path / "log").read_text()
    assert "[root] Please consider" in logged and "[FutureWarning]" in logged
