"""ExecuTorch target: torch.export → XNNPACK-lowered .pte (fp32; PT2E int8 with the XNNPACK quantizer), run through
executorch.runtime and verified against the reference ONNX by the pipeline."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("executorch", reason="executorch target needs its wheel (pip install 'edgeconv[executorch]')")
pytest.importorskip("executorch.runtime", reason="executorch's Python runtime is missing")

from edgeconv.core.errors import ConfigError  # noqa: E402
from edgeconv.pipeline import convert_reference, make_calibration, prepare  # noqa: E402


@pytest.fixture(scope="module")
def out_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("executorch")


@pytest.fixture(scope="module")
def fp32_art(tiny_prepared, out_root: Path):
    return convert_reference(tiny_prepared, "executorch", out=out_root / "fp32", precision="fp32", use_cache=False)


def test_fp32_verifies_and_reports_the_delegated_fraction(fp32_art) -> None:
    conv = fp32_art.manifest["conversion"]
    assert fp32_art.manifest["verification"]["status"] == "ok"
    assert fp32_art.manifest["verification"]["drift"]["max_abs"] < 1e-4
    d = conv["delegation"]
    assert d["delegate"] == "XnnpackBackend" and d["subgraphs"] >= 1
    assert d["fraction"] == pytest.approx(d["delegated_nodes"] / (d["delegated_nodes"] + d["non_delegated_nodes"]),
                                          abs=1e-4)
    assert d["fraction"] == 1.0 and d["portable_ops"] == {}  # conv/bn/relu/silu: all XNNPACK ops
    assert fp32_art.file("model").read_bytes()[4:8] == b"ET12"  # the .pte flatbuffer identifier


def test_runner_maps_outputs_by_reference_name(fp32_art, tiny_prepared) -> None:
    from edgeconv.targets.executorch.runner import ExecuTorchRunner
    from edgeconv.targets.onnxruntime.runner import OrtRunner

    x = np.random.default_rng(5).random((1, 3, 64, 64), dtype=np.float32)
    with ExecuTorchRunner.from_artifact(fp32_art, threads=1) as r:
        got = r.infer({"images": x})
    with OrtRunner(tiny_prepared.reference.onnx_path) as o:
        want = o.infer({"images": x})
    assert set(got) == set(want)
    for k in want:
        np.testing.assert_allclose(got[k], want[k], atol=1e-4)


@pytest.mark.slow  # PT2E export + calibration + lowering: ~40 s on a shared 2-core machine
def test_int8_pt2e_xnnpack_quantizer(tiny_prepared, tiny_calib_dir: Path, out_root: Path) -> None:
    calib = make_calibration(tiny_prepared, tiny_calib_dir, size=8)
    art = convert_reference(tiny_prepared, "executorch", out=out_root / "int8", precision="int8", calibration=calib,
                            options={"observer": "minmax"}, use_cache=False)
    conv = art.manifest["conversion"]
    q = conv["quantization"]
    assert q["method"] == "pt2e" and q["calibration_samples"] == 8 and q["observer"] == "minmax"
    assert art.manifest["verification"]["status"] == "ok"
    assert conv["delegation"]["fraction"] > 0.9  # quantized conv/add lowered to XNNPACK, not portable kernels
    assert art.manifest["verification"]["drift"]["cosine"] > 0.97


def test_onnx_only_model_is_a_config_error(tmp_path: Path, tiny_prepared) -> None:
    prep = prepare(str(tiny_prepared.reference.onnx_path))
    with pytest.raises(ConfigError, match="PyTorch"):
        convert_reference(prep, "executorch", out=tmp_path / "x", precision="fp32", use_cache=False)


@pytest.mark.slow  # exporting + lowering the bundled model takes ~1 min on a shared 2-core machine
def test_bundled_classifier_fp32(tmp_path: Path) -> None:
    art = convert_reference(prepare("zoo:classifier"), "executorch", out=tmp_path / "cls", precision="fp32")
    assert art.manifest["verification"]["status"] == "ok"
    assert art.manifest["conversion"]["delegation"]["fraction"] > 0.95


def test_the_runtime_imports_without_the_compiler() -> None:
    """A benchmark worker loads the runtime binding, not ``executorch.exir`` (7.5 s of a 10 s import); a later
    ``import executorch.exir`` in the same process still gets the real package."""
    import subprocess
    import sys

    code = ("import sys\nfrom edgeconv.targets.executorch.runner import import_runtime\n"
            "rt = import_runtime().Runtime.get()\n"
            "assert rt is not None and 'executorch.exir' not in sys.modules, sorted(sys.modules)\n"
            "import executorch.exir\nassert executorch.exir.__file__ and hasattr(executorch.exir, 'to_edge')\n"
            "print('ok')\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr[-2000:]


PRELU_2D = '''
import torch
from torch import nn


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.fc, self.act = nn.Conv2d(3, 8, 3), nn.Linear(8, 16), nn.PReLU(16)

    def forward(self, x):
        return self.act(self.fc(self.conv(x).mean((2, 3))))


def build():
    torch.manual_seed(0)
    return Net().eval()
'''


def test_a_graph_xnnpack_rejects_runs_on_portable_kernels_and_says_so(tmp_path: Path) -> None:
    """A PReLU on a 2-D tensor (MTCNN's ONet, SINet): XNNPACK's ChannelsLastTaggedReshapePass refuses the whole
    graph; ExecuTorch's portable kernels run it, verified as any artifact, and the manifest says no delegate ran."""
    (tmp_path / "prelu2d.py").write_text(PRELU_2D)
    prep = prepare(f"{tmp_path / 'prelu2d.py'}:build", inputs=["x:1x3x16x16"])
    art = convert_reference(prep, "executorch", out=tmp_path / "o", precision="fp32", use_cache=False)
    conv = art.manifest["conversion"]
    assert "ChannelsLastTaggedReshapePass" in conv["xnnpack_lowering_failed"]
    assert conv["delegation"]["delegated_nodes"] == 0 and art.manifest["verification"]["status"] == "ok"
