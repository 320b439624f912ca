"""The cache hands back only what it re-verified, and keys are hashes of exactly what a stage receives."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest

from edgeconv import api
from edgeconv.core import cache
from edgeconv.core.hashing import sha256_file

FIX = Path(__file__).parent.parent / "fixtures" / "tiny_model.py"
TWO = '''
import torch
from torch import nn


def build():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU())


def other():
    torch.manual_seed(1)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Sigmoid())
'''


@pytest.fixture
def fresh_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "cache"
    monkeypatch.setenv("EDGECONV_CACHE", str(root))
    return root


def _convert(model: str, out: Path, **kw) -> api.ConvertOutcome:
    kw.setdefault("inputs", ["x:1x3x16x16"])
    (oc,) = api.convert(model, targets=["onnxruntime"], out=out, **kw)
    return oc


def _entry(art) -> Path:
    return cache.entry("artifacts", art.manifest["cache_key"])


def test_two_factories_in_one_file_are_two_models(fresh_cache: Path, tmp_path: Path) -> None:
    src = tmp_path / "models.py"
    src.write_text(TWO)
    a = _convert(f"{src}:build", tmp_path / "a").artifact
    b = _convert(f"{src}:other", tmp_path / "b").artifact
    assert b.manifest.get("cache") != "hit"
    assert a.manifest["cache_key"] != b.manifest["cache_key"]
    assert b.manifest["source"]["spec"].endswith(":other")
    assert a.manifest["reference"]["sha256"] != b.manifest["reference"]["sha256"]


@pytest.mark.parametrize("damage", ["truncate", "delete", "garbage-manifest", "extra-file"])
def test_damaged_cached_artifact_is_evicted_and_rebuilt(fresh_cache: Path, tmp_path: Path, tiny_weights: Path,
                                                         damage: str, caplog: pytest.LogCaptureFixture) -> None:
    args = {"weights": str(tiny_weights), "inputs": ["images:1x3x64x64"]}
    first = _convert(f"{FIX}:build", tmp_path / "o1", **args).artifact
    entry = _entry(first)
    model = entry / "model.onnx"
    if damage == "truncate":
        model.write_bytes(model.read_bytes()[:200])
    elif damage == "delete":
        model.unlink()
    elif damage == "garbage-manifest":
        (entry / "manifest.json").write_text("{not json")
    else:
        (entry / "stray.bin").write_bytes(b"x")
    with caplog.at_level(logging.WARNING, logger="edgeconv"):
        again = _convert(f"{FIX}:build", tmp_path / "o2", **args).artifact
    assert again.manifest.get("cache") != "hit"
    assert "damaged" in caplog.text
    out_model = tmp_path / "o2" / "onnxruntime-fp32" / "model.onnx"
    assert sha256_file(out_model) == again.manifest["files"]["model.onnx"]["sha256"]
    assert out_model.stat().st_size > 1000
    assert cache.check_entry(_entry(again)) is None  # the rebuilt entry is whole again
    third = _convert(f"{FIX}:build", tmp_path / "o3", **args).artifact
    assert third.manifest.get("cache") == "hit"


def test_overwritten_cached_reference_is_re_exported(fresh_cache: Path, tmp_path: Path, tiny_weights: Path) -> None:
    import onnxruntime as ort
    import tiny_model
    import torch

    args = {"weights": str(tiny_weights), "inputs": ["images:1x3x64x64"]}
    _convert(f"{FIX}:build", tmp_path / "o1", **args)
    refs = [e for e in cache.iter_entries() if e.kind == "reference"]
    assert refs
    other = tmp_path / "other"
    _convert(f"{FIX}:build", other, inputs=["images:1x3x64x64"], model_args={"width": 4})
    wrong = next(e for e in cache.iter_entries() if e.kind == "reference" and e.key != refs[0].key)
    shutil.copyfile(wrong.path / "reference.onnx", refs[0].path / "reference.onnx")  # a tampered cached reference
    art = _convert(f"{FIX}:build", tmp_path / "o2", **args).artifact
    m = tiny_model.build()
    m.load_state_dict(torch.load(tiny_weights, weights_only=True))
    m.eval()
    x = np.random.default_rng(0).random((1, 3, 64, 64), dtype=np.float32)
    want = m(torch.from_numpy(x)).detach().numpy()
    got = ort.InferenceSession(str(art.path / "model.onnx")).run(None, {"images": x})[0]
    assert np.abs(want - got).max() < 1e-4


def test_preprocess_change_is_a_different_artifact(fresh_cache: Path, tmp_path: Path, tiny_weights: Path) -> None:
    args = {"weights": str(tiny_weights), "inputs": ["images:1x3x64x64"]}
    a = _convert(f"{FIX}:build", tmp_path / "a", preprocess="size=64x64,color=RGB", **args).artifact
    b = _convert(f"{FIX}:build", tmp_path / "b", preprocess="size=64x64,color=BGR", **args).artifact
    assert a.manifest["cache_key"] != b.manifest["cache_key"]
    assert b.manifest["preprocess"]["color"] == "BGR"


def test_unwritable_cache_is_a_warning_not_a_failure(tmp_path: Path, tiny_weights: Path,
                                                     monkeypatch: pytest.MonkeyPatch,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    blocker = tmp_path / "cache-is-a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("EDGECONV_CACHE", str(blocker))
    with caplog.at_level(logging.WARNING, logger="edgeconv"):
        oc = _convert(f"{FIX}:build", tmp_path / "o", weights=str(tiny_weights), inputs=["images:1x3x64x64"])
    assert oc.ok and (tmp_path / "o" / "onnxruntime-fp32" / "model.onnx").is_file()
    assert "could not write the cache" in caplog.text


def test_no_cache_reads_and_writes_nothing(fresh_cache: Path, tmp_path: Path, tiny_weights: Path,
                                           tiny_calib_dir: Path) -> None:
    (oc,) = api.convert(f"{FIX}:build", targets=["onnxruntime"], precisions=["int8"], out=tmp_path / "o",
                        weights=str(tiny_weights), inputs=["images:1x3x64x64"], calib=str(tiny_calib_dir),
                        use_cache=False)
    assert oc.ok
    assert not fresh_cache.exists() or not any(fresh_cache.rglob("*.onnx"))
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == ["onnxruntime-int8"]  # no hidden temp folders


def test_convert_and_run_make_byte_identical_artifacts(fresh_cache: Path, tmp_path: Path, tiny_weights: Path,
                                                       tiny_calib_dir: Path) -> None:
    from edgeconv.bench.matrix import run_matrix

    common = {"weights": str(tiny_weights), "inputs": ["images:1x3x64x64"]}
    outs = api.convert(f"{FIX}:build", targets=["onnxruntime"], precisions=["fp32", "int8"], out=tmp_path / "c",
                       calib=str(tiny_calib_dir), use_cache=False, **common)
    assert all(o.ok for o in outs)
    cfg = {"model": {"model": f"{FIX}:build", "weights": str(tiny_weights), "input": ["images:1x3x64x64"]},
           "data": {"calib": str(tiny_calib_dir), "limit": 2},
           "targets": [{"profile": "onnxruntime", "precisions": ["fp32", "int8"]}],
           "bench": {"min_iters": 3, "min_seconds": 0.05}}
    report = run_matrix(cfg, tmp_path / "r", use_cache=False)
    assert [r["status"] for r in report["results"]] == ["ok", "ok"]
    for prec in ("fp32", "int8"):
        a = json.loads((tmp_path / "c" / f"onnxruntime-{prec}" / "manifest.json").read_text())
        b = json.loads((tmp_path / "r" / "artifacts" / f"onnxruntime-{prec}" / "manifest.json").read_text())
        assert a["cache_key"] == b["cache_key"]
        assert a["files"] == b["files"]  # same names, sizes and sha256s


def test_dry_run_converts_nothing_and_reports_hits(fresh_cache: Path, tmp_path: Path, tiny_weights: Path) -> None:
    common = {"weights": str(tiny_weights), "inputs": ["images:1x3x64x64"]}
    (plan,) = api.convert(f"{FIX}:build", targets=["onnxruntime"], out=tmp_path / "o", dry_run=True, **common)
    assert plan.planned and plan.cache_hit is False and not (tmp_path / "o").exists()
    _convert(f"{FIX}:build", tmp_path / "o", **common)
    (plan,) = api.convert(f"{FIX}:build", targets=["onnxruntime"], out=tmp_path / "o2", dry_run=True, **common)
    assert plan.cache_hit is True and plan.plan["key"]


def test_repeated_convert_is_decided_from_file_hashes_without_torch(fresh_cache: Path, tmp_path: Path,
                                                                    tiny_weights: Path) -> None:
    import subprocess
    import sys

    code = ("import sys, json; from edgeconv import api; "
            f"o = api.convert({str(FIX) + ':build'!r}, targets=['onnxruntime'], out={str(tmp_path / 'o')!r}, "
            f"weights={str(tiny_weights)!r}, inputs=['images:1x3x64x64']); "
            "print(json.dumps([o[0].ok, o[0].artifact.manifest.get('cache'), 'torch' in sys.modules]))")
    first = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert json.loads(first.stdout.strip().splitlines()[-1]) == [True, None, True], first.stderr
    second = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert json.loads(second.stdout.strip().splitlines()[-1]) == [True, "hit", False], second.stderr
    # a changed helper file beside the factory is a different model: the fast path must not answer
    (FIX.parent / "__edgeconv_probe.py").write_text("X = 1\n")
    try:
        third = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
        assert json.loads(third.stdout.strip().splitlines()[-1])[2] is True, third.stderr
    finally:
        (FIX.parent / "__edgeconv_probe.py").unlink()


def test_bench_worker_ignores_an_edgeconv_folder_in_the_working_directory(tmp_path: Path, tiny_weights: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    from edgeconv.bench.evaluate import evaluate_artifact

    (oc,) = api.convert(f"{FIX}:build", targets=["onnxruntime"], out=tmp_path / "o", weights=str(tiny_weights),
                        inputs=["images:1x3x64x64"], use_cache=False)
    shadow = tmp_path / "cwd" / "edgeconv"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError('the wrong edgeconv')\n")
    monkeypatch.chdir(tmp_path / "cwd")
    (tmp_path / "b").mkdir()
    report = evaluate_artifact(oc.artifact, work=tmp_path / "b")
    assert report["status"] == "ok", report.get("error")


def _build_once(key: str, log_dir: str) -> None:
    """A process that wants the stage ``key``: builds it (and says so) only if no other process has."""
    import os
    import tempfile
    import time

    with cache.building("stages", key):
        if cache.lookup("stages", key) is None:
            (Path(log_dir) / f"built-{os.getpid()}").write_text("")
            time.sleep(0.5)  # long enough for the other process to be waiting on the lock
            with tempfile.TemporaryDirectory() as tmp:
                (Path(tmp) / "model.bin").write_bytes(b"stage")
                cache.store("stages", key, Path(tmp))


def test_two_processes_wanting_one_stage_build_it_once(fresh_cache: Path, tmp_path: Path) -> None:
    """Two plan workers that need the same shared stage at the same moment: the second waits for the first and reads
    its entry back, instead of building it too (TFLite fp16 beside fp32 lowered twice before)."""
    import multiprocessing as mp

    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=_build_once, args=("ab" * 32, str(tmp_path))) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
    assert [p.exitcode for p in procs] == [0, 0]
    assert len(list(tmp_path.glob("built-*"))) == 1
    hit = cache.lookup("stages", "ab" * 32)
    assert hit is not None and (hit / "model.bin").read_bytes() == b"stage"
