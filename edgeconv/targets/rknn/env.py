"""The ``rknn`` backend environment: rknn-toolkit2 2.5.0 and the smallest set of real dependencies it runs with.

Why these pins and ``--no-deps`` for the toolkit: its metadata asks for ``torch<=2.4.0``, which from PyPI on x86-64
is a CUDA build (a ~800 MB wheel plus ~2.5 GB of nvidia-* libraries).  The toolkit imports torch at module level
(``rknn.api.rknn_utils``) but converts ONNX without needing that old version: the CPU torch 2.13.0 this project
already pins works (measured: ONNX → .rknn fp16/int8 and the simulator), so it is installed instead and the toolkit
itself goes in with ``--no-deps``.  opencv-python-headless replaces opencv-python (same ``cv2``, no libGL), and
setuptools stays below 81 because the toolkit imports ``pkg_resources``.  Every other pin is the set pip resolved
for the toolkit's own requirements (numpy <= 1.26.4, onnx <= 1.18, protobuf <= 4.25.4), frozen so that a new
release upstream cannot change an environment that has the same name.
"""

from __future__ import annotations

from edgeconv.envs.spec import EnvSpec

TOOLKIT = "rknn-toolkit2==2.5.0"

ENV = EnvSpec(
    name="rknn",
    requirements=(
        "numpy==1.26.4", "onnx==1.18.0", "onnxruntime==1.26.0", "protobuf==4.25.4", "torch==2.13.0",
        "opencv-python-headless==4.11.0.86", "scipy==1.17.1", "fast-histogram==0.14", "psutil==7.2.2",
        "ruamel.yaml==0.19.1", "tqdm==4.70.1", "setuptools==80.10.2",
        "sympy==1.14.0", "networkx==3.6.1", "Jinja2==3.1.6", "MarkupSafe==3.0.4", "filelock==4.3.1",
        "fsspec==2026.9.0", "mpmath==1.3.0", "typing_extensions==4.16.0", "flatbuffers==25.12.19",
        "packaging==26.4",
    ),
    no_deps=(TOOLKIT,),
    imports=("rknn.api", "onnxruntime", "cv2"),
    versions_of=("rknn-toolkit2", "numpy", "onnx", "onnxruntime", "torch"),
    python_versions=("3.11", "3.12"),
    platforms=("x86_64", "aarch64"),
    size_hint="about 1.4 GB, about a minute with a local torch wheel",
    notes=("torch is the CPU 2.13.0 build, not the <=2.4.0 the toolkit's metadata asks for (installed --no-deps)",),
)
