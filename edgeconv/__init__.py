"""edgeconv: take a trained PyTorch model to the devices it must run on, and prove how it runs there.

The public API is small and the CLI is a thin layer over it::

    import edgeconv
    prep = edgeconv.prepare("mymodels.py:build", weights="best.pth", inputs=["images:1x3x320x320"])
    art = edgeconv.convert_reference(prep, "openvino", out="out/openvino-fp32", precision="fp32")
"""

__version__ = "0.1.0"

from edgeconv.api import convert, doctor, list_targets  # noqa: E402
from edgeconv.pipeline import convert_reference, make_calibration, prepare  # noqa: E402

__all__ = ["__version__", "convert", "convert_reference", "doctor", "list_targets", "make_calibration", "prepare"]
