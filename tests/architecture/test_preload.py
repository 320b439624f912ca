"""Backends' preloaded modules: imported once in the converting process, never one whose pools a fork breaks."""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from edgeconv.pipeline import preload
from edgeconv.targets.registry import all_targets, get_target


def test_no_backend_preloads_a_module_it_calls_fork_unsafe():
    for t in all_targets().values():
        overlap = {p for p in t.preload_modules for u in t.fork_unsafe_modules if p == u or p.startswith(u + ".")}
        assert not overlap, f"{t.name} preloads fork-unsafe {overlap}"


def test_preload_imports_once_and_leaves_a_broken_module_to_the_child(tmp_path: Path, monkeypatch):
    (tmp_path / "ec_preload_ok.py").write_text("COUNT = [0]\nCOUNT[0] += 1\n")
    (tmp_path / "ec_preload_bad.py").write_text("raise RuntimeError('broken on import')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in ("ec_preload_ok", "ec_preload_bad", "ec_preload_skip"):
        monkeypatch.delitem(sys.modules, name, raising=False)

    fake = SimpleNamespace(preload_modules=("ec_preload_ok", "ec_preload_bad", "ec_preload_skip"),
                           fork_unsafe_modules=())
    preload(fake)  # the bad module raises on import: no exception here, and nothing after it is imported
    preload(fake)
    assert sys.modules["ec_preload_ok"].COUNT == [1]
    assert "ec_preload_bad" not in sys.modules and "ec_preload_skip" not in sys.modules


@pytest.mark.parametrize("backend", ["tflite", "executorch"])
def test_torch_route_backends_preload_their_converter(backend):
    t = get_target(backend)
    assert t.preload_modules, f"{backend}'s converter import (seconds of CPU) would repeat in every child"
