"""The worker protocol over the local transport, with this interpreter standing in for an environment's."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from edgeconv.core.errors import ConversionError, VerificationError
from edgeconv.envs.client import WorkerSession, run_job
from edgeconv.envs.transport import LocalTransport

HANDLER = Path(__file__).with_name("handlers_for_tests.py")


@pytest.fixture
def local() -> LocalTransport:
    return LocalTransport(python=sys.executable)


def test_job_returns_result_files_and_keeps_native_output_in_the_log(local: LocalTransport, tmp_path: Path) -> None:
    work = tmp_path / "job"
    out = run_job(local, HANDLER, "echo", {"n": 21, "text": "hello"}, work=work, timeout=60, what="echo")
    assert out["doubled"] == 42
    assert Path(out["cwd"]).resolve() == work.resolve()  # toolkits drop debug files into their cwd: the job dir
    assert (work / "made.txt").read_text() == "hello"
    log = (work / "worker.log").read_text()
    assert "native stdout line" in log and "python stdout line" in log
    assert (work / "worker.py").is_file() and (work / HANDLER.name).is_file()  # the folder is self-contained


def test_expected_failure_keeps_its_kind_and_hint(local: LocalTransport, tmp_path: Path) -> None:
    with pytest.raises(ConversionError, match="op FancyOp is not supported") as e:
        run_job(local, HANDLER, "fail", {}, work=tmp_path / "j", timeout=60, what="toolkit", target="rk3588")
    assert e.value.hint == "a hint from the handler"
    assert e.value.target == "rk3588"


def test_unexpected_exception_is_named(local: LocalTransport, tmp_path: Path) -> None:
    with pytest.raises(ConversionError, match="toolkit failed: ZeroDivisionError: a bug in the toolkit"):
        run_job(local, HANDLER, "bug", {}, work=tmp_path / "j", timeout=60, what="toolkit")


def test_crash_names_the_signal(local: LocalTransport, tmp_path: Path) -> None:
    with pytest.raises(ConversionError, match="crashed \\(killed by SIGABRT\\)"):
        run_job(local, HANDLER, "crash", {}, work=tmp_path / "j", timeout=60, what="toolkit")


def test_hang_is_stopped_at_the_time_limit(local: LocalTransport, tmp_path: Path) -> None:
    with pytest.raises(ConversionError, match="did not finish within 2 s"):
        run_job(local, HANDLER, "hang", {}, work=tmp_path / "j", timeout=2, what="toolkit")


def test_session_round_trips_arrays_with_any_names(local: LocalTransport) -> None:
    s = WorkerSession(local, HANDLER, "open_doubler", {"factor": 3.0}, what="doubler", open_timeout=60,
                      infer_timeout=60)
    try:
        assert s.info == {"kind": "doubler"}
        x = np.arange(12, dtype=np.float32).reshape(1, 3, 2, 2)
        for _ in range(3):  # chatty native output must neither block nor corrupt the protocol
            out = s.infer({"x": x})
            np.testing.assert_array_equal(out["y:0"], x * 3)
        assert s.last_ms is not None and s.last_ms >= 0
        with pytest.raises(ConversionError, match="bad input"):
            s.infer({"x": x, "boom": x})
        np.testing.assert_array_equal(s.infer({"x": x})["y:0"], x * 3)  # the session survives a failed request
    finally:
        s.close()
    assert s.proc.poll() is not None


def test_session_that_dies_is_a_verification_error(local: LocalTransport, tmp_path: Path) -> None:
    with pytest.raises(VerificationError, match="crashed"):
        WorkerSession(local, HANDLER, "crash", {}, what="doubler", open_timeout=60, infer_timeout=60,
                      work=tmp_path / "w")
