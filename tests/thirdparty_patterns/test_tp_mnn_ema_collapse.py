"""MNN INT8 on a CIFAR-style residual net: quantized.out's default EMA activations collapse (cosine 0.39 on this
pattern, -0.25 on the real ResNet-20, with or without Winograd or batching) where KL is at quantization noise.  The
target checks the EMA result on the calibration sample and re-quantizes with KL, recording why; and the default
method no longer refuses ``--keep-fp32`` (EMA ignores the skip list: KL is used), whose reference node names are
translated to MNN's operator names."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("MNN", reason="mnn target needs the MNN wheel (pip install 'edgeconv[mnn]')")

from edgeconv.calibration.preprocess import Preprocess  # noqa: E402
from edgeconv.pipeline import convert_reference, make_calibration, prepare  # noqa: E402

PP = Preprocess(size=(32, 32), mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))


@pytest.mark.slow
def test_collapsed_ema_is_requantized_with_kl(cifar_pattern: Any, photo_like_32: Path, tmp_path: Path,
                                              find_key: Any) -> None:
    prep = prepare(cifar_pattern, inputs=["input:1x3x32x32"], use_cache=False, preprocess=PP)
    calib = make_calibration(prep, photo_like_32, size=48, preprocess=PP)
    art = convert_reference(prep, "mnn", out=tmp_path / "mnn", precision="int8", calibration=calib,
                            options={"int8_fallback": False}, use_cache=False, preprocess=PP)
    fb = find_key(art.manifest, "feature_fallback")
    assert fb is not None and fb["from"] == "EMA" and fb["to"] == "KL"
    assert fb["ema_cosine"] < fb["threshold"] <= fb["kl_cosine"]
    assert find_key(art.manifest, "feature_method") == "KL"
    assert art.manifest["verification"]["drift"]["cosine"] >= 0.97


@pytest.mark.slow
def test_float_layers_with_the_default_method_use_kl(cifar_pattern: Any, photo_like_32: Path, tmp_path: Path,
                                                     find_key: Any) -> None:
    prep = prepare(cifar_pattern, inputs=["input:1x3x32x32"], use_cache=False, preprocess=PP)
    calib = make_calibration(prep, photo_like_32, size=48, preprocess=PP)
    import onnx

    gemm = next(n.name for n in onnx.load(str(prep.reference.onnx_path)).graph.node if n.op_type == "Gemm")
    # a reference node name, as --keep-fp32 and the float-fallback search pass it (MNN names ops by output tensor)
    art = convert_reference(prep, "mnn", out=tmp_path / "keep", precision="int8", calibration=calib,
                            keep_fp32=(gemm,), options={"int8_fallback": False}, use_cache=False, preprocess=PP)
    assert find_key(art.manifest, "feature_method") == "KL"
    assert "EMA ignores" in str(find_key(art.manifest, "feature_method_reason"))
    kept = find_key(art.manifest, "fp32_ops")
    assert kept and all(k.endswith("__matmul_converted") for k in kept)
