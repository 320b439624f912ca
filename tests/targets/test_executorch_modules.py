"""ExecuTorch converts the user's module as it is: no deep copy (a model holding a Python module as an attribute
cannot be copied) and no ``.eval()`` or other tree walk through methods a model may shadow."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

pytest.importorskip("executorch", reason="executorch target needs its wheel (pip install 'edgeconv[executorch]')")
pytest.importorskip("executorch.runtime", reason="executorch's Python runtime is missing")
torch = pytest.importorskip("torch", reason="torch builds the test models")

from torch import nn  # noqa: E402

from edgeconv.pipeline import convert_reference, prepare  # noqa: E402


class HoldsAModule(nn.Module):
    """Keeps the ``math`` module as an attribute (``copy.deepcopy`` raises "cannot pickle 'module' object")."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.math = math

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.bn(self.conv(x))) * self.math.pi


class Shadows(nn.Module):
    """``eval``, ``train`` and ``modules`` shadowed by data, as real training code does."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.eval = {"every": 5}
        self.train = {"epochs": 300}
        self.modules = [self.conv, self.bn]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.bn(self.conv(x)))


class ShadowsNamedModules(nn.Module):
    """``named_modules`` shadowed by data: torch.export calls it on the root, which recurses into each child's."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.named_modules = [self.conv, self.bn]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.bn(self.conv(x)))


def _init(m: nn.Module) -> nn.Module:
    torch.manual_seed(0)
    with torch.no_grad():
        m.bn.running_mean.uniform_(-0.5, 0.5)  # so a BatchNorm left in training mode would show in the drift
        m.bn.running_var.uniform_(0.5, 2.0)
    return m


def build_holds_a_module() -> nn.Module:
    return _init(HoldsAModule())


def build_shadows() -> nn.Module:
    return _init(Shadows())


def build_shadows_named_modules() -> nn.Module:
    return _init(ShadowsNamedModules())


@pytest.mark.parametrize("factory", [
    "build_holds_a_module", "build_shadows",
    "build_shadows_named_modules",
])
def test_user_module_is_converted_as_it_is(factory: str, tmp_path: Path) -> None:
    """Both fail on a deep copy + ``.eval()`` (``cannot pickle 'module' object``; ``'dict' object is not callable``)."""
    prep = prepare(f"{__file__}:{factory}", inputs=["images:1x3x16x16"], use_cache=False)
    module = prep.reference.module
    assert not module.bn.training  # the intake's inference mode, which the conversion must not need to redo
    art = convert_reference(prep, "executorch", out=tmp_path / factory, precision="fp32", use_cache=False)
    v = art.manifest["verification"]
    assert v["status"] == "ok" and v["drift"]["max_abs"] < 1e-4  # BatchNorm ran with its running statistics
    if factory == "build_holds_a_module":
        assert module.math is math
    elif factory == "build_shadows":
        assert module.eval == {"every": 5} and module.train == {"epochs": 300} and module.modules[1] is module.bn


def test_runtime_load_failure_is_one_line_naming_the_error() -> None:
    """LPRNet's .pte failed to load with `error: 0x:14` (OperatorMissing: max_pool3d and mean outside XNNPACK)."""
    from edgeconv.core.errors import ConversionError
    from edgeconv.targets.executorch.runner import explain_runtime_error

    e = explain_runtime_error(RuntimeError("Failed to load method forward, error: 0x:14"))
    assert isinstance(e, ConversionError) and "OperatorMissing" in e.message and e.hint
    unknown = explain_runtime_error(RuntimeError("something else"))
    assert "unknown" in unknown.message and "something else" in unknown.message
