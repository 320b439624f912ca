"""A venv with no backend: ``import edgeconv`` works and ``--help`` works on every command, none marked broken.

A real bare venv would need the base dependencies reinstalled (minutes); instead a subprocess blocks every backend
(and torch, onnx, onnxruntime: the CLI must not need them to start) with a meta-path finder, which is what an
uninstalled package looks like to ``import``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

BLOCKED = ("torch", "onnx", "onnxruntime", "onnxscript", "onnxsim", "onnxslim", "openvino", "nncf", "ncnn", "pnnx",
           "litert_torch", "ai_edge_litert", "tflite_runtime", "tensorrt", "polygraphy", "modelopt", "MNN", "cv2",
           "coremltools", "executorch", "rknn", "pycocotools", "safetensors")

SCRIPT = """
import importlib.abc, io, json, sys, contextlib
BLOCKED = set({blocked!r})

class Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        return None

sys.meta_path.insert(0, Blocker())
import click
import edgeconv
from edgeconv.cli import main

def walk(cmd, path):
    yield path
    if isinstance(cmd, click.Group):
        for n, c in sorted(cmd.commands.items()):
            yield from walk(c, path + [n])

results = {{}}
for path in walk(main, []):
    buf = io.StringIO()
    code = 0
    with contextlib.redirect_stdout(buf):
        try:
            main(path + ["--help"], prog_name="edgeconv", standalone_mode=False)
        except SystemExit as e:
            code = e.code or 0
        except Exception as e:
            code = repr(e)
    results[" ".join(path) or "(root)"] = {{"code": code, "broken": "BROKEN" in buf.getvalue(),
                                            "usage": buf.getvalue().startswith("Usage:")}}
loaded = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
print(json.dumps({{"results": results, "loaded": loaded, "version": edgeconv.__version__}}))
"""


def test_import_and_help_everywhere_without_any_backend() -> None:
    res = subprocess.run([sys.executable, "-c", textwrap.dedent(SCRIPT.format(blocked=BLOCKED))],
                         capture_output=True, text=True, timeout=300, check=False)
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout.strip().splitlines()[-1])
    assert doc["loaded"] == []
    results = doc["results"]
    assert {"(root)", "convert", "targets", "doctor", "bench", "run", "compare", "demo", "calibrate", "inspect",
            "cache", "cache info"} <= set(results)
    for name, r in results.items():
        assert r["code"] == 0 and r["usage"], (name, r)
        assert not r["broken"], f"{name} is listed broken without backends"
