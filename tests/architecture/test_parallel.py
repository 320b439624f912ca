"""Rows converted at once in forked workers: results in row order, one row's crash or hang only its own, the same
artifacts as converting one at a time, and the workers really run side by side."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from edgeconv import api
from edgeconv.core.errors import ConfigError, ConversionError, ExportError
from edgeconv.core.isolate import Call, iter_many
from edgeconv.plan import default_jobs

FIX = Path(__file__).parent.parent / "fixtures" / "tiny_model.py"


def _wait_for(me: Path, other: Path) -> str:
    """Announce this worker, then wait for the other one: only possible when both run at the same time."""
    me.write_text("here")
    deadline = time.monotonic() + 60
    while not other.exists():
        if time.monotonic() > deadline:
            raise ExportError("the other worker never started")
        time.sleep(0.02)
    return me.name


def _segfault() -> None:
    os.kill(os.getpid(), signal.SIGSEGV)


def _raise_config() -> None:
    raise ConfigError("bad thing", hint="do the other thing")


def test_run_many_runs_side_by_side_and_keeps_order(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    res = dict(iter_many([Call(_wait_for, (a, b), timeout=90), Call(_wait_for, (b, a), timeout=90)], jobs=2))
    assert [res[0], res[1]] == ["a", "b"]


def test_run_many_failures_stay_in_their_slot(tmp_path: Path) -> None:
    calls = [Call(_segfault, what="crasher", target="x"), Call(_raise_config), Call(time.sleep, (30,), timeout=1.5),
             Call(len, ("abc",))]
    got = list(iter_many(calls, jobs=2))
    done = [i for i, _ in got]
    res = dict(got)
    assert isinstance(res[0], ConversionError) and "SIGSEGV" in res[0].message and res[0].target == "x"
    assert isinstance(res[1], ConfigError) and res[1].hint == "do the other thing"  # its kind and hint survive
    assert isinstance(res[2], ConversionError) and "did not finish within 2 s" in res[2].message
    assert res[3] == 3
    assert sorted(done) == [0, 1, 2, 3]


def test_default_jobs_bounds(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGECONV_JOBS", "3")
    assert default_jobs(10) == 3 and default_jobs(2) == 2
    monkeypatch.setenv("EDGECONV_JOBS", "many")
    with pytest.raises(ConfigError, match="EDGECONV_JOBS"):
        default_jobs(4)
    monkeypatch.delenv("EDGECONV_JOBS")
    assert 1 <= default_jobs(64) <= (os.cpu_count() or 1)


def test_parallel_rows_fail_alone_and_match_sequential(plugin_env: dict[str, str], tmp_path: Path,
                                                       tiny_weights: Path) -> None:
    kw = {"weights": str(tiny_weights), "inputs": ["images:1x3x64x64"], "use_cache": False}
    par = api.convert(f"{FIX}:build", targets=["crashy", "echo", "onnxruntime"], out=tmp_path / "par", jobs=2, **kw)
    assert [o.profile for o in par] == ["crashy", "echo", "onnxruntime"]
    assert isinstance(par[0].error, ConversionError) and "SIGSEGV" in par[0].error.message
    assert par[1].ok and par[2].ok
    seq = api.convert(f"{FIX}:build", targets=["echo", "onnxruntime"], out=tmp_path / "seq", jobs=1, **kw)
    for p, s in zip(par[1:], seq, strict=True):
        assert p.artifact.manifest["cache_key"] == s.artifact.manifest["cache_key"]
        for name in s.artifact.manifest["files"]:
            assert (p.out / name).read_bytes() == (s.out / name).read_bytes(), name


def test_heavy_imports_are_preloaded_once_before_workers_fork(tiny_prepared, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """Two TFLite rows to convert: litert-torch is imported in the parent before the fork (each worker imported it
    before: ~4-8 s of CPU each); one row, or rows the cache already holds, import nothing here."""
    import edgeconv.pipeline as pipeline
    from edgeconv.plan import Planner, _expected_cost, make_rows

    calls: list[str] = []
    monkeypatch.setattr(pipeline, "preload", lambda backend: calls.append(backend.name))
    planner = Planner(tiny_prepared)
    two = make_rows(["tflite", "onnxruntime"], ["fp32", "fp16"], tmp_path / "out")
    planner._preload_shared(two)
    assert calls == ["tflite"]
    calls.clear()
    planner._preload_shared([r for r in two if r.label == "tflite-fp32" or r.profile.backend == "onnxruntime"])
    assert calls == []
    # the fp16 row casts the fp32 lowering: scheduled after it, so the shared stage is there to cast
    fp32, fp16 = (next(r for r in two if r.label == f"tflite-{p}") for p in ("fp32", "fp16"))
    assert _expected_cost(fp16) < _expected_cost(fp32)


def _chatty(n: int) -> int:
    """A converter that prints from Python and from native code (fd 2 directly), then logs its own line."""
    import sys

    from edgeconv.core.console import log

    print(f"python chatter {n}")
    os.write(2, f"native chatter {n}\n".encode())
    print(f"stderr chatter {n}", file=sys.stderr)
    log.warning("edgeconv's own line %d", n)
    if n == 1:
        raise ConversionError("row 1 failed")
    return n


def test_workers_third_party_output_goes_to_a_file_not_the_terminal(tmp_path: Path, capfd) -> None:
    """What a converter prints (Python or native) lands in the worker's output file, which a failed call's error
    names; edgeconv's own log lines still reach the terminal."""
    from edgeconv.core.console import setup_logging

    setup_logging()
    calls = [Call(_chatty, (n,), what=f"row {n}") for n in range(2)]
    res = dict(iter_many(calls, 2, output_dir=tmp_path))
    out, err = capfd.readouterr()
    assert res[0] == 0 and isinstance(res[1], ConversionError)
    assert "chatter" not in out + err
    assert "edgeconv's own line 0" in err and "edgeconv's own line 1" in err
    log1 = res[1].output_log
    assert log1 == tmp_path / "01.log" and not (tmp_path / "00.log").exists()  # a successful call keeps none
    text = log1.read_text()
    assert text.startswith("== row 1\n")
    assert all(f"{k} chatter 1" in text for k in ("python", "native", "stderr")) and "own line" not in text


def test_verbose_keeps_third_party_output_where_it_was_written(tmp_path: Path, capfd) -> None:
    from edgeconv.core.console import setup_logging

    setup_logging(verbose=True)
    try:
        res = dict(iter_many([Call(_chatty, (0,), what="row 0")], 1, output_dir=tmp_path))
        _, err = capfd.readouterr()
        assert res[0] == 0 and "native chatter 0" in err
    finally:
        setup_logging()


def test_native_output_to_restores_the_descriptors(tmp_path: Path, capfd) -> None:
    from edgeconv.core.console import native_output_to, setup_logging

    setup_logging()
    with native_output_to(tmp_path / "step.log"):
        os.write(2, b"inside\n")
    os.write(2, b"after\n")
    _, err = capfd.readouterr()
    assert (tmp_path / "step.log").read_text() == "inside\n"
    assert "after" in err and "inside" not in err
