"""Model intake: checkpoints in their real-world shapes, and mismatches reported precisely."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from edgeconv.core.errors import ConfigError, ModelLoadError
from edgeconv.intake.loader import load_source, load_state_dict, parse_model_args

FIX = Path(__file__).parents[1] / "fixtures" / "tiny_model.py"


def test_wrapped_and_prefixed_state_dicts(tmp_path: Path) -> None:
    import tiny_model

    sd = tiny_model.build().state_dict()
    p = tmp_path / "ckpt.pt"
    torch.save({"state_dict": {f"module.{k}": v for k, v in sd.items()}, "epoch": 1}, p)
    loaded = load_state_dict(p)
    assert set(loaded) == set(sd)
    src = load_source(f"{FIX}:build", weights=str(p))
    assert src.kind == "factory" and not src.module.training


def test_safetensors(tmp_path: Path) -> None:
    import tiny_model
    from safetensors.torch import save_file

    p = tmp_path / "w.safetensors"
    save_file(tiny_model.build().state_dict(), str(p))
    src = load_source(f"{FIX}:build", weights=str(p))
    assert src.details["weights_sha256"]


def test_missing_and_unexpected_keys_are_listed(tmp_path: Path) -> None:
    import tiny_model

    sd = tiny_model.build().state_dict()
    sd.pop("head.weight")
    sd["extra.bias"] = torch.zeros(1)
    p = tmp_path / "bad.pt"
    torch.save(sd, p)
    with pytest.raises(ModelLoadError) as ei:
        load_source(f"{FIX}:build", weights=str(p))
    assert "missing key(s): head.weight" in ei.value.message
    assert "unexpected key(s): extra.bias" in ei.value.message


def test_torchscript_and_exported_program(tmp_path: Path) -> None:
    import tiny_model

    m = tiny_model.build().eval()
    x = torch.rand(1, 3, 32, 32)
    ts = tmp_path / "m.torchscript"
    torch.jit.trace(m, x).save(str(ts))
    assert load_source(str(ts)).kind == "torchscript"
    pt2 = tmp_path / "m.pt2"
    torch.export.save(torch.export.export(m, (x,)), str(pt2))
    src = load_source(str(pt2))
    assert src.kind == "exported-program"
    assert torch.allclose(src.module(x), m(x), atol=1e-6)


def test_model_args_parsing() -> None:
    assert parse_model_args(["n=3", "r=0.5", "name=abc", "l=[1,2]"]) == {"n": 3, "r": 0.5, "name": "abc", "l": [1, 2]}
    with pytest.raises(ConfigError):
        parse_model_args(["no_equals"])


def test_onnx_source_with_weights_is_refused(tmp_path: Path) -> None:
    p = tmp_path / "m.onnx"
    p.write_bytes(b"x")
    with pytest.raises(ConfigError):
        load_source(str(p), weights="w.pt")


@pytest.mark.parametrize("arg", ["model", "weights"])
def test_a_url_is_refused_as_one_line_naming_the_download(arg: str) -> None:
    from edgeconv.core.errors import ConfigError
    from edgeconv.intake.loader import load_source

    kw = {"model": "https://example.com/yolo.onnx"} if arg == "model" else {
        "model": "m.py:build", "weights": "hf://org/model/best.pt"}
    with pytest.raises(ConfigError, match="is a URL") as ei:
        load_source(**kw)
    assert "download" in ei.value.hint


def test_a_model_left_in_training_mode_is_converted_in_eval_mode_and_told(tmp_path, caplog) -> None:
    import logging

    from edgeconv.intake.loader import load_source

    f = tmp_path / "m.py"
    f.write_text("import torch\n"
                 "def build():\n"
                 "    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), "
                 "torch.nn.Dropout())\n"
                 "def built_eval():\n"
                 "    return build().eval()\n")
    with caplog.at_level(logging.INFO, logger="edgeconv"):
        src = load_source(f"{f}:build")
    assert not src.module.training and not src.module[1].training
    assert "training mode" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="edgeconv"):
        load_source(f"{f}:built_eval")
    assert "training mode" not in caplog.text
