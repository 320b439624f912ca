"""TFLite INT8 per-layer float fallback on the outlier pattern (tests/fixtures/int8_patterns.py): keeping the culprit
conv and the Add feeding it in float (by module scope and ONNX node name) leaves a float CONV_2D in the .tflite and
removes the drift;
a keep pattern that matches nothing is a loud error, never a silently fully quantized model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("litert_torch", reason="tflite target needs litert-torch (pip install 'edgeconv[tflite]')")
pytest.importorskip("ai_edge_litert", reason="tflite runner needs ai-edge-litert (pip install 'edgeconv[tflite]')")

from edgeconv.core.errors import ConfigError  # noqa: E402
from edgeconv.quant.fallback import PERMISSIVE  # noqa: E402

BUDGET = 0.5


def _convert(pattern: Any, out: Path, keep: tuple[str, ...] = ()) -> Any:
    from edgeconv.pipeline import convert_reference
    from edgeconv.plan import with_tolerances
    from edgeconv.profiles import load_profile

    prep, cal, ev = pattern("outlier")
    profile = with_tolerances(load_profile("tflite"), {"int8": dict(PERMISSIVE)})  # over budget keeps its delta
    return convert_reference(prep, profile, out=out, precision="int8", calibration=cal, evaluator=ev,
                             keep_fp32=keep, options={"observer": "minmax"}, use_cache=False)


def _conv_input_types(art: Any) -> list[Any]:
    """The dtype of each CONV_2D's activation input, in graph order (the 5x5 conv first, the culprit 1x1 second)."""
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(art.file("model")))
    tensors = {t["index"]: t for t in it.get_tensor_details()}
    return [tensors[op["inputs"][0]]["dtype"] for op in it._get_ops_details() if op["op_name"] == "CONV_2D"]


@pytest.fixture(scope="module")
def baseline(pattern: Any, tmp_path_factory: pytest.TempPathFactory) -> Any:
    return _convert(pattern, tmp_path_factory.mktemp("tflite-keep") / "base")


def test_outlier_pattern_is_over_budget_on_tflite_int8(baseline: Any) -> None:
    assert baseline.manifest["verification"]["task"]["delta"] < -10 * BUDGET
    assert _conv_input_types(baseline) == [np.int8, np.int8]


def test_keeping_the_culprit_module_float_removes_the_drift(pattern: Any, baseline: Any, tmp_path: Path) -> None:
    # The outlier tensor's producer (the Add, by ONNX node name) and consumer (self.conv2, by module scope): with
    # the residual Add quantized like every other add, keeping the conv alone leaves the spike's scale on its input.
    art = _convert(pattern, tmp_path / "kept", ("inner/conv2", "/inner/Add"))
    q = art.manifest["conversion"]["quantization"]
    assert q["keep_fp32"]["patterns"]["inner/conv2"]["onnx"] == ["/inner/conv2/Conv"]
    (traced,) = q["keep_fp32"]["patterns"]["inner/conv2"]["traced"]
    assert traced in q["kept_float"]
    assert _conv_input_types(art) == [np.int8, np.float32]  # the culprit conv really runs in float, the other not
    delta = art.manifest["verification"]["task"]["delta"]
    assert delta >= -BUDGET > baseline.manifest["verification"]["task"]["delta"]


def test_keep_pattern_matching_nothing_is_a_config_error(pattern: Any, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="'inner/conv9' matches no layer") as e:
        _convert(pattern, tmp_path / "none", ("inner/conv9",))
    assert "conv" in (e.value.hint or "")  # the closest node names are offered
