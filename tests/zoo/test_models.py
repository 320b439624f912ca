"""Bundled model architectures, registry and committed checkpoints."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest

from edgeconv.zoo import BUNDLED, get

torch = pytest.importorskip("torch")


@pytest.mark.parametrize("name", sorted(BUNDLED))
def test_output_shapes(name: str) -> None:
    from edgeconv.bench.plugins import load_callable

    spec = BUNDLED[name]
    model = load_callable(spec.factory)().eval()
    x = torch.rand(spec.input_shape)
    with torch.no_grad():
        out = model(x)
    out = out if isinstance(out, tuple) else (out,)
    assert len(out) == len(spec.output_names)
    n_params = sum(p.numel() for p in model.parameters())
    assert n_params <= 1_300_000
    if name == "yolo":
        assert [tuple(o.shape) for o in out] == [(1, 30, 32, 32), (1, 30, 16, 16), (1, 30, 8, 8)]
    elif name == "centernet":
        assert [tuple(o.shape) for o in out] == [(1, 5, 64, 64), (1, 2, 64, 64), (1, 2, 64, 64)]
        assert float(out[0].min()) >= 0 and float(out[0].max()) <= 1  # heatmap is post-sigmoid
    else:
        assert tuple(out[0].shape) == (1, 5)


def test_yolo_focus_stem_is_strided_slicing() -> None:
    """The Focus stem must stay slicing+concat (converters are expected to cope with it)."""
    from edgeconv.zoo import yolo

    m = yolo.build()
    x = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).reshape(2, 3, 4, 4)
    seen: dict[str, torch.Tensor] = {}

    def hook(mod: torch.nn.Module, inp: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        seen["in"] = inp[0]

    m.stem.conv.register_forward_hook(hook)
    m.eval()(torch.nn.functional.pad(x, (0, 60, 0, 60)))
    s2d = seen["in"][:, :, :2, :2]
    assert s2d.shape[1] == 12
    assert torch.equal(s2d[:, 0:3], x[..., ::2, ::2][..., :2, :2])
    assert torch.equal(s2d[:, 3:6], x[..., 1::2, ::2][..., :2, :2])


def test_registry_contract() -> None:
    assert set(BUNDLED) == {"yolo", "centernet", "classifier"}
    assert BUNDLED["yolo"].output_names == ("p3", "p4", "p5")
    assert BUNDLED["centernet"].output_names == ("heatmap", "wh", "offset")
    assert BUNDLED["classifier"].output_names == ("logits",)
    for spec in BUNDLED.values():
        assert spec.input_name == "images"
        assert spec.preprocess["layout"] == "NCHW" and spec.preprocess["size"] == list(spec.input_shape[2:])
    with pytest.raises(KeyError, match="available"):
        get("resnet")
    with pytest.raises(dataclasses.FrozenInstanceError):
        BUNDLED["yolo"].name = "x"  # type: ignore[misc]


def test_import_is_cheap() -> None:
    code = "import sys, edgeconv.zoo, edgeconv.zoo.data, edgeconv.bench.metrics; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


@pytest.mark.parametrize("name", sorted(BUNDLED))
def test_committed_checkpoint(name: str) -> None:
    spec = BUNDLED[name]
    if not spec.weights.is_file():
        pytest.skip(f"{spec.weights.name} not trained yet")
    assert spec.weights.stat().st_size <= 5 * 1024 * 1024
    state = torch.load(spec.weights, map_location="cpu", weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    from edgeconv.zoo import load

    model = load(name)
    assert not model.training
    assert spec.weights.with_suffix(".train.log").is_file()
