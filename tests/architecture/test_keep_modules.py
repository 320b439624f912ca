"""``--keep-fp32`` takes PyTorch module names as well as node names: a module path is expanded to its nodes once,
where the context is built, so every backend's own matching sees exact node names."""

from __future__ import annotations

from typing import Any

import pytest

from edgeconv.core.errors import ConfigError


def test_module_name_expands_to_its_nodes(pattern: Any) -> None:
    from edgeconv.pipeline import build_context

    prep, cal, _ = pattern("outlier")
    _, ctx = build_context(prep, _profile(), "int8", calibration=cal, keep_fp32=("conv2",))
    assert ctx.keep_fp32_nodes == ("/inner/conv2/Conv",)
    assert ctx.keep_fp32 == ("/inner/conv2/Conv",)  # what the backends re-match: exact names
    _, same = build_context(prep, _profile(), "int8", calibration=cal, keep_fp32=("inner/conv2",))
    assert same.keep_fp32_nodes == ctx.keep_fp32_nodes  # the scope spelling finds the same node


def test_unknown_module_is_a_config_error_naming_both_spellings(pattern: Any) -> None:
    from edgeconv.pipeline import build_context

    prep, cal, _ = pattern("outlier")
    with pytest.raises(ConfigError, match="conv9") as e:
        build_context(prep, _profile(), "int8", calibration=cal, keep_fp32=("conv9",))
    assert "module names" in (e.value.hint or "")


def _profile() -> Any:
    from edgeconv.profiles import load_profile

    return load_profile("onnxruntime")
