"""Conv + BatchNorm folding for the torch-route converters: a view of the model, never a change to it."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch", reason="torch builds the test models")
from torch import nn  # noqa: E402

from edgeconv.targets.base import flat_module  # noqa: E402
from edgeconv.targets.fold_bn import fold_batch_norms  # noqa: E402


class Net(nn.Module):
    """Two foldable conv+BN pairs; a BN after an add (no conv to fold into); a conv whose output is also read by
    something else (folding would change that reader); a ``train`` attribute shadowing nn.Module.train."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.b = nn.Sequential(nn.Conv2d(8, 8, 1, bias=False), nn.BatchNorm2d(8))
        self.shared = nn.Conv2d(8, 8, 1)
        self.shared_bn = nn.BatchNorm2d(8)
        self.post_bn = nn.BatchNorm2d(8)
        self.train = {"lr": 0.1}

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y = self.b(self.a(x))
        s = self.shared(y)
        return self.post_bn(y + self.shared_bn(s)), s


def _net() -> nn.Module:
    torch.manual_seed(0)
    net = Net()
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):  # statistics that make folding visible
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
            m.weight.data.uniform_(0.5, 1.5)
    nn.Module.train(net, False)
    return net


def test_folds_the_pairs_it_can_and_leaves_the_model_alone() -> None:
    net = _net()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    children = dict(net.named_children())
    x = torch.randn(2, 3, 16, 16)
    root = flat_module(net)
    view, n = fold_batch_norms(root, (x,))
    assert n == 2 and view is not root
    with torch.no_grad():
        for a, b in zip(root(x), view(x), strict=True):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    # The user's model: same parameters, same modules, still calling its BNs.
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert dict(net.named_children()) == children and isinstance(net.a[1], nn.BatchNorm2d)
    inner = view._modules["inner"]
    assert inner is not net and isinstance(inner._modules["a"]._modules["1"], nn.Identity)
    assert inner._modules["shared"] is net.shared and inner._modules["post_bn"] is net.post_bn  # shared, not copied
    assert sum(isinstance(m, nn.BatchNorm2d) for m in net.modules()) == 4


def test_a_model_torch_export_refuses_still_folds_by_hooks_exactly() -> None:
    class Branchy(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.c, self.bn = nn.Conv2d(3, 3, 1), nn.BatchNorm2d(3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.bn(self.c(x)) if float(x.sum()) > 0 else x  # data-dependent: torch.export refuses

    net = Branchy().eval()
    net.bn.running_mean.uniform_(-1, 1)
    view, n = fold_batch_norms(net, (torch.ones(1, 3, 4, 4),))
    assert view is not net and n == 1
    with torch.no_grad():
        for x in (torch.rand(1, 3, 4, 4), -torch.rand(1, 3, 4, 4)):
            torch.testing.assert_close(view(x), net(x))


def test_hooks_find_the_pairs_without_an_export(monkeypatch: pytest.MonkeyPatch) -> None:
    """The forward-hook pass is enough for a plain conv/BN stack: torch.export (seconds on a detector) never runs."""
    from edgeconv.targets import fold_bn

    def no_export(*_: object) -> None:
        raise AssertionError("torch.export ran")

    monkeypatch.setattr(fold_bn, "_pairs", no_export)
    net = _net()
    net.shared_bn = nn.Identity()  # no conv output read twice: every pair is exact by hooks alone
    x = torch.randn(2, 3, 16, 16)
    root = flat_module(net)
    view, n = fold_batch_norms(root, (x,))
    assert n == 2
    with torch.no_grad():
        for a, b in zip(root(x), view(x), strict=True):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


class ConvBnNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.SiLU())
        self.b = nn.Sequential(nn.Conv2d(8, 4, 1, bias=False), nn.BatchNorm2d(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(self.a(x))


def build_conv_bn() -> nn.Module:
    torch.manual_seed(0)
    net = ConvBnNet()
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
    return net.eval()


@pytest.mark.parametrize("target", ["executorch", "tflite"])
def test_torch_route_targets_convert_the_folded_view_and_verify(target: str, tmp_path) -> None:
    from edgeconv.targets.registry import get_target

    if not get_target(target).available():
        pytest.skip(f"{target} is not installed")
    from edgeconv.pipeline import convert_reference, prepare

    prep = prepare(f"{__file__}:build_conv_bn", inputs=["x:1x3x16x16"], use_cache=False)
    art = convert_reference(prep, target, out=tmp_path / target, precision="fp32", use_cache=False)
    assert art.manifest["conversion"]["folded_batch_norms"] == 2
    assert art.manifest["verification"]["status"] == "ok" and art.manifest["verification"]["drift"]["max_abs"] < 1e-4
