"""Model sources real users have: TorchScript files, modules that shadow nn.Module methods, module objects."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from edgeconv.core.tensors import TensorSpec, random_feeds
from edgeconv.export.onnx_export import onnx_outputs
from edgeconv.export.reference import prepare_reference
from edgeconv.intake.loader import load_source
from edgeconv.intake.modules import named_tensors

FIX = Path(__file__).parents[1] / "fixtures" / "tiny_model.py"
SHADOWED = ("modules", "children", "named_modules", "train", "eval", "parameters")


@pytest.mark.parametrize("how", ["trace", "script"])
def test_torchscript_model_converts_through_prepare(tmp_path: Path, how: str) -> None:
    import tiny_model

    from edgeconv.pipeline import prepare

    m = tiny_model.build().eval()
    x = torch.rand(1, 3, 32, 32)
    ts = torch.jit.trace(m, x) if how == "trace" else torch.jit.script(m)
    path = tmp_path / f"{how}.pt"
    ts.save(str(path))
    prep = prepare(str(path), inputs=["images:1x3x32x32"], use_cache=False)
    ref = prep.reference
    assert ref.source.kind == "torchscript" and ref.record["export"]["route"] in ("dynamo", "legacy")
    feed = random_feeds(ref.inputs, seed=7)
    got = next(iter(onnx_outputs(ref.onnx_path, feed).values()))
    np.testing.assert_allclose(got, m(torch.from_numpy(feed["images"])).detach().numpy(), atol=1e-5)


@pytest.mark.parametrize("route", ["legacy", "dynamo"])
def test_scripted_module_exports_with_each_exporter(tmp_path: Path, route: str) -> None:
    import tiny_model

    path = tmp_path / "s.pt"
    torch.jit.script(tiny_model.build().eval()).save(str(path))
    ref = prepare_reference(load_source(str(path)), [TensorSpec("images", (1, 3, 32, 32))], exporters=(route,),
                            use_cache=False)
    assert ref.record["export"]["route"] == route


class _Block(nn.Module):
    def __init__(self, shadow: str) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.bn = nn.BatchNorm2d(3)
        setattr(self, shadow, [self.conv, self.bn] if shadow in ("modules", "children", "parameters") else {"a": 1})

    def forward(self, x):
        return self.bn(self.conv(x))


class _Shadowing(nn.Module):
    def __init__(self, shadow: str) -> None:
        super().__init__()
        self.block = _Block(shadow)
        self.head = nn.Conv2d(3, 2, 1)
        setattr(self, shadow, [self.block, self.head] if shadow in ("modules", "children", "parameters") else {"b": 2})

    def forward(self, x):
        return self.head(self.block(x))


@pytest.mark.parametrize("shadow", SHADOWED)
@pytest.mark.parametrize("route", ["dynamo", "legacy"])
def test_models_shadowing_module_methods_load_and_export(shadow: str, route: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = _Shadowing(shadow)
    state = tmp_path / "w.pt"
    torch.save({k: v.clone() for k, v in named_tensors(model).items()}, state)
    src = load_source(model, weights=str(state))  # module object + weights: both paths walk the tree
    assert not model.block.bn.training  # inference mode reached the nested BatchNorm
    ref = prepare_reference(src, [TensorSpec("x", (1, 3, 8, 8))], exporters=(route,), use_cache=False)
    assert ref.record["export"]["route"] == route


def test_named_tensors_matches_state_dict_on_ordinary_models() -> None:
    import tiny_model

    m = tiny_model.build()
    m.shared = m.conv1  # one module under two names: state_dict lists both
    assert list(named_tensors(m)) == list(m.state_dict())


def test_module_object_source_is_hashed_by_content() -> None:
    import tiny_model

    a, b = tiny_model.build(), tiny_model.build()
    assert load_source(a).sha256 == load_source(b).sha256
    with torch.no_grad():
        b.head.bias += 1
    assert load_source(a).sha256 != load_source(b).sha256
    assert load_source(a).kind == "module"
