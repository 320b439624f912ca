"""A pickled model as ``--model``: ``torch.save(model)`` and Ultralytics/YOLOv5-style training checkpoints
(``{"model": <half module>, "ema": None, "train_args": {"imgsz": N}}``) — refused without --trust-checkpoint with
nothing of theirs run, taken as their own exporters take them with it. The model's package is a stand-in written
here (``fakeyolo``: a ``Detect`` head with Ultralytics' ``export`` switch), importable as the real one would be."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from edgeconv.core.errors import ModelLoadError
from edgeconv.intake.loader import load_source

PKG = '''
import os
import torch
from torch import nn

if os.environ.get("FAKEYOLO_MARKER"):
    open(os.environ["FAKEYOLO_MARKER"], "w").write("imported")


class Detect(nn.Module):
    export = False  # as Ultralytics' and YOLOv5's heads: True returns the decoded tensor alone

    def __init__(self, c: int = 8, no: int = 6) -> None:
        super().__init__()
        self.cv = nn.Conv2d(c, no, 1)

    def forward(self, x):
        raw = self.cv(x)
        y = raw.flatten(2).sigmoid()
        return y if self.export else (y, [raw])


class Model(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.BatchNorm2d(8), nn.SiLU())
        self.head = Detect()

    def forward(self, x):
        return self.head(self.stem(x))
'''


@pytest.fixture
def fakeyolo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    pkg = tmp_path / "pkgs" / "fakeyolo"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text(textwrap.dedent(PKG))
    monkeypatch.syspath_prepend(str(tmp_path / "pkgs"))
    import importlib

    mod = importlib.import_module("fakeyolo")
    yield mod
    import sys

    sys.modules.pop("fakeyolo", None)


def _checkpoint(fakeyolo, path: Path, **extra) -> torch.nn.Module:
    torch.manual_seed(0)
    m = fakeyolo.Model().eval()
    torch.save({"model": m.half(), "ema": None, "epoch": -1, **extra}, path)
    return m


def test_refused_without_trust_and_nothing_of_its_code_runs(fakeyolo, tmp_path, monkeypatch) -> None:
    import sys

    ck = tmp_path / "best.pt"
    _checkpoint(fakeyolo, ck)
    sys.modules.pop("fakeyolo", None)  # as in a fresh process: unpickling would import it
    marker = tmp_path / "imported"
    monkeypatch.setenv("FAKEYOLO_MARKER", str(marker))
    with pytest.raises(ModelLoadError) as e:
        load_source(str(ck))
    assert "pickled model or checkpoint" in e.value.message and "--trust-checkpoint" in e.value.hint
    assert not marker.exists()


def test_trusted_checkpoint_is_taken_as_its_exporter_takes_it(fakeyolo, tmp_path) -> None:
    ck = tmp_path / "best.pt"
    _checkpoint(fakeyolo, ck, train_args={"imgsz": 64})
    src = load_source(str(ck), trust_checkpoint=True)
    assert src.kind == "pickled-module"
    assert {p.dtype for p in src.module.parameters()} == {torch.float32}
    assert src.module.head.export is True and not src.module.training
    assert src.details == {"pickled": True, "checkpoint_key": "model", "cast_to_float32_from": ["float16"],
                           "export_mode": ["Detect"], "input": "images:1x3x64x64",
                           "input_from": "the checkpoint's training image size",
                           "preprocess": "color=RGB,resize=letterbox,scale=1/255"}
    out = src.module(torch.rand(1, 3, 64, 64))
    assert isinstance(out, torch.Tensor) and out.shape == (1, 6, 32 * 32)


def test_torch_save_of_a_module_and_a_weights_only_file(fakeyolo, tmp_path) -> None:
    m = fakeyolo.Model().eval()
    whole = tmp_path / "whole.pth"
    torch.save(m, whole)
    src = load_source(str(whole), trust_checkpoint=True)
    assert src.details["checkpoint_key"] is None and "input" not in src.details
    sd = tmp_path / "sd.pt"
    torch.save(m.state_dict(), sd)
    with pytest.raises(ModelLoadError) as e:
        load_source(str(sd))
    assert "weights only" in e.value.message and "FILE.py:FACTORY --weights" in e.value.hint
    junk = tmp_path / "junk.pt"
    torch.save({"epoch": 3, "best": 0.5}, junk)
    with pytest.raises(ModelLoadError) as e:
        load_source(str(junk), trust_checkpoint=True)
    assert "holds no nn.Module" in e.value.message


def test_cli_converts_a_checkpoint_without_input_or_preprocess(fakeyolo, tmp_path) -> None:
    from edgeconv.cli import main

    ck = tmp_path / "best.pt"
    _checkpoint(fakeyolo, ck, train_args={"imgsz": 64})
    out = tmp_path / "out"
    res = CliRunner().invoke(main, ["convert", "--model", str(ck), "-t", "onnxruntime", "--out", str(out),
                                    "--no-cache"])
    assert res.exit_code == 3 and "--trust-checkpoint" in res.output  # a model-load error
    res = CliRunner().invoke(main, ["convert", "--model", str(ck), "--trust-checkpoint", "-t", "onnxruntime",
                                    "--out", str(out), "--no-cache"])
    assert res.exit_code == 0, res.output
    mf = json.loads((out / "onnxruntime-fp32" / "manifest.json").read_text())
    assert [i["shape"] for i in mf["inputs"]] == [[1, 3, 64, 64]] and len(mf["outputs"]) == 1
    assert mf["source"]["kind"] == "pickled-module" and mf["source"]["export_mode"] == ["Detect"]
    assert mf["verification"]["status"] == "ok"


def test_trusted_unpickling_imports_from_the_working_folder_and_names_a_missing_module(
        fakeyolo, tmp_path, monkeypatch) -> None:
    """A YOLOv5 best.pt names ``models.yolo.Model``: importable from its repository root, where the user runs."""
    import sys

    ck = tmp_path / "best.pt"
    _checkpoint(fakeyolo, ck)
    sys.modules.pop("fakeyolo", None)
    monkeypatch.syspath_prepend(str(tmp_path))  # (pytest's own path entries stay; the package is under pkgs/)
    sys.path.remove(str(tmp_path / "pkgs"))
    with pytest.raises(ModelLoadError) as e:
        load_source(str(ck), trust_checkpoint=True)
    assert "names the module 'fakeyolo'" in e.value.message and "install it" in e.value.hint
    monkeypatch.chdir(tmp_path / "pkgs")
    assert load_source(str(ck), trust_checkpoint=True).kind == "pickled-module"
    assert str(tmp_path / "pkgs") not in sys.path  # only while unpickling


def test_trusted_weights_of_a_factory_get_the_same_import_rules(fakeyolo, tmp_path, monkeypatch) -> None:
    """``--model FILE.py:FACTORY --weights best.pt --trust-checkpoint``: the checkpoint's pickled classes are found
    from the working folder, and a missing one is named, as for ``--model best.pt``."""
    import sys

    from edgeconv.intake.loader import load_state_dict

    ck = tmp_path / "best.pt"
    ref = _checkpoint(fakeyolo, ck)
    sys.modules.pop("fakeyolo", None)
    sys.path.remove(str(tmp_path / "pkgs"))
    with pytest.raises(ModelLoadError) as e:
        load_state_dict(ck, trust=True)
    assert "names the module 'fakeyolo'" in e.value.message
    monkeypatch.chdir(tmp_path / "pkgs")
    state = load_state_dict(ck, trust=True)
    assert set(state) == set(ref.state_dict()) and str(tmp_path / "pkgs") not in sys.path


def test_a_fork_whose_detect_head_has_no_export_switch_still_gets_the_letterbox_default(fakeyolo, tmp_path) -> None:
    """A YOLOv5 fork (plate detectors with landmarks) names its switch ``export_cat``: nothing is switched, but the
    head is a Detect trained on letterboxed RGB /255, which the calibration contract must follow."""
    m = fakeyolo.Model().eval()
    del type(m.head).export  # the fork's Detect has no ``export`` attribute
    try:
        torch.save(m, tmp_path / "fork.pt")
        src = load_source(str(tmp_path / "fork.pt"), trust_checkpoint=True)
    finally:
        type(m.head).export = False
    assert "export_mode" not in src.details
    assert src.details["preprocess"] == "color=RGB,resize=letterbox,scale=1/255"
