"""ExecuTorch INT8 per-layer float fallback: ``--keep-fp32`` nodes of the reference are found in the traced graph and
skipped by the XNNPACK quantizer's filter; on the outlier pattern keeping the spiky sum and the conv reading it
removes the drift. A pattern without a counterpart is a loud error."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("executorch", reason="executorch target needs its wheel (pip install 'edgeconv[executorch]')")
pytest.importorskip("executorch.runtime", reason="executorch's Python runtime is missing")

from edgeconv.core.errors import ConfigError  # noqa: E402
from edgeconv.quant.fallback import PERMISSIVE  # noqa: E402

BUDGET = 0.5


def _convert(pattern: Any, out: Path, keep: tuple[str, ...] = ()) -> Any:
    from edgeconv.pipeline import convert_reference
    from edgeconv.plan import with_tolerances
    from edgeconv.profiles import load_profile

    prep, cal, ev = pattern("outlier")
    profile = with_tolerances(load_profile("executorch"), {"int8": dict(PERMISSIVE)})
    return convert_reference(prep, profile, out=out, precision="int8", calibration=cal, evaluator=ev,
                             keep_fp32=keep, options={"observer": "minmax"}, use_cache=False)


@pytest.mark.slow  # two PT2E exports + calibrations + XNNPACK lowerings: ~1 min on a shared 2-core machine
def test_keeping_the_outlier_tensor_float_removes_the_drift(pattern: Any, tmp_path: Path) -> None:
    base = _convert(pattern, tmp_path / "base")
    assert base.manifest["verification"]["task"]["delta"] < -10 * BUDGET
    art = _convert(pattern, tmp_path / "kept", ("/inner/Add", "inner/conv2"))
    q = art.manifest["conversion"]["quantization"]
    assert q["keep_fp32"]["patterns"]["inner/conv2"]["onnx"] == ["/inner/conv2/Conv"]
    assert {"add", "conv2d_1"} <= set(q["kept_float"])
    assert art.manifest["verification"]["task"]["delta"] >= -BUDGET


def test_keep_pattern_without_counterpart_is_a_config_error(pattern: Any, tmp_path: Path, monkeypatch) -> None:
    from edgeconv.targets import pt2e_keep as keep

    monkeypatch.setattr(keep, "traced_values", lambda gm, args: {})
    with pytest.raises(ConfigError, match=r"'inner/conv2' .* no counterpart in the PyTorch graph the ExecuTorch"):
        _convert(pattern, tmp_path / "none", ("inner/conv2",))


def test_keep_pattern_matching_nothing_is_a_config_error(pattern: Any, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="'inner/conv9' matches no layer"):
        _convert(pattern, tmp_path / "nothing", ("inner/conv9",))
