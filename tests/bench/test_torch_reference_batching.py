"""The torch reference runs evaluation inputs in batches only where that gives each input's own outputs."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the torch reference needs torch")

from edgeconv.bench.evaluate import TORCH_BATCH, _torch_outputs  # noqa: E402


class PerSample(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)
        self.bn = torch.nn.BatchNorm2d(4)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.relu(self.bn(self.conv(x)))
        return y, y.mean(dim=(2, 3))


class MixesSamples(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x - x.mean(dim=0, keepdim=True) + x.sum()  # batch statistics: batching would change every output


class FixedBatch(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(1, -1)[:, :10]  # the batch is folded away


def _feeds(n: int) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(0)
    return [{"x": rng.standard_normal((1, 3, 8, 8), dtype=np.float32)} for _ in range(n)]


def _alone(module: torch.nn.Module, feeds: list[dict[str, np.ndarray]]) -> list[list[np.ndarray]]:
    with torch.no_grad():
        outs = [module(torch.from_numpy(f["x"])) for f in feeds]
    return [[t.numpy() for t in (o if isinstance(o, tuple) else (o,))] for o in outs]


@pytest.mark.parametrize("cls,names", [(PerSample, ["y", "pooled"]), (MixesSamples, ["y"]), (FixedBatch, ["y"])])
def test_batched_reference_equals_one_by_one(cls: type, names: list[str]) -> None:
    module = cls().eval()
    feeds = _feeds(TORCH_BATCH + 5)  # one full batch and a partial one
    got = _torch_outputs(module, feeds, names)
    want = _alone(module, feeds)
    assert len(got) == len(feeds)
    for g, w in zip(got, want, strict=True):
        for name, a in zip(names, w, strict=True):
            assert g[name].shape == a.shape
            np.testing.assert_allclose(g[name], a, rtol=1e-5, atol=1e-5)
