"""Every installed runner must give the same outputs for the same values whatever the input array's memory looks
like: a strided view, a transposed (non-contiguous) view, Fortran order, read-only, or a buffer the caller overwrites
right after the call. ncnn once read freed memory on a non-contiguous input (max abs 1e15 on a correct artifact).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgeconv.core.lazy import available
from edgeconv.pipeline import convert_reference
from edgeconv.targets.registry import get_target

#: (profile, modules the conversion and the runner need)
BACKENDS = [
    ("onnxruntime", ("onnxruntime",)),
    ("openvino", ("openvino",)),
    ("ncnn", ("ncnn", "pnnx")),
    ("tflite", ("litert_torch", "ai_edge_litert")),
    ("tensorrt", ("onnx", "onnxruntime")),
]


def _layouts(x: np.ndarray) -> dict[str, np.ndarray]:
    """The same values as ``x`` in memory layouts a caller can hand in."""
    n, c, h, w = x.shape
    strided = np.zeros((n, c, h, w * 2), x.dtype)
    strided[..., ::2] = x
    nhwc = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
    ro = x.copy()
    ro.flags.writeable = False
    return {"strided": strided[..., ::2], "transposed": nhwc.transpose(0, 3, 1, 2), "fortran": np.asfortranarray(x),
            "read_only": ro}


@pytest.mark.parametrize("profile,modules", BACKENDS, ids=[b[0] for b in BACKENDS])
def test_runner_inputs_in_any_memory_layout(profile: str, modules: tuple[str, ...], tiny_prepared,
                                            tmp_path: Path) -> None:
    missing = [m for m in modules if not available(m)]
    if missing:
        pytest.skip(f"{profile} needs {', '.join(missing)}")
    art = convert_reference(tiny_prepared, profile, out=tmp_path / profile, precision="fp32")
    name = tiny_prepared.reference.inputs[0].name
    x = tiny_prepared.reference.random_feeds(1, seed=11)[0][name].astype(np.float32)
    assert not np.shares_memory(x, _layouts(x)["strided"])
    with get_target(art.manifest["target"]).runner(art, threads=1) as r:
        want = r.infer({name: np.ascontiguousarray(x)})
        for kind, arr in _layouts(x).items():
            assert not arr.flags.c_contiguous or kind == "read_only"
            got = r.infer({name: arr})
            np.testing.assert_array_equal(arr, x, err_msg=f"{profile} wrote into the caller's {kind} input")
            for k in want:
                np.testing.assert_allclose(got[k], want[k], rtol=0, atol=1e-5, err_msg=f"{profile} {kind} {k}")
        # Outputs are the caller's: the next call (other inputs) does not change what an earlier one returned.
        first = r.infer({name: np.ascontiguousarray(x)})
        r.infer({name: np.zeros_like(x)})
        for k in want:
            np.testing.assert_array_equal(first[k], want[k], err_msg=f"{profile} output {k} changed by a later call")
        # A buffer the caller reuses right after the call must not change the outputs already returned.
        buf = x.copy()
        got = r.infer({name: buf})
        buf[...] = 1e6
        for k in want:
            np.testing.assert_allclose(got[k], want[k], rtol=0, atol=1e-5, err_msg=f"{profile} reused buffer {k}")
        # Three requests in flight on views of one array (throughput mode) give the per-request answers.
        views = [_layouts(x)["strided"], _layouts(x)["fortran"], np.ascontiguousarray(x)]
        outs = r.infer_async([{name: v} for v in views], 2)
        assert len(outs) == 3
        for o in outs:
            for k in want:
                np.testing.assert_allclose(o[k], want[k], rtol=0, atol=1e-5, err_msg=f"{profile} async {k}")
