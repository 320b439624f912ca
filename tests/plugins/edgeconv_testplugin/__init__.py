"""A target plug-in that lives outside edgeconv/: registered only through an entry point (see the tests).

``echo`` copies the reference ONNX and runs it on ONNX Runtime (a working backend); ``crashy`` segfaults while
converting and ``sleepy`` hangs, to show that native failures are isolated to their own row.
"""

from __future__ import annotations

import os
import shutil
import signal
import time
from typing import Any

from edgeconv.targets.base import ConversionResult, ConvertContext, Option, OrtRunner, Runner, Target


class EchoTarget(Target):
    name = "echo"
    extra = "echo"
    modules = ("onnxruntime",)
    precisions = ("fp32",)
    isolate = True
    description = "test plug-in: the reference ONNX on ONNX Runtime"
    options = {"flavour": Option(str, "plain", "a plug-in's own option", choices=("plain", "salty"))}

    def convert(self, ctx: ConvertContext) -> ConversionResult:
        shutil.copyfile(ctx.reference.onnx_path, ctx.out_dir / "echo.onnx")
        return ConversionResult(["echo.onnx"], {"model": "echo.onnx"}, {"flavour": ctx.option("flavour", "plain"),
                                                                          "pid": os.getpid()})

    def runner(self, artifact: Any, *, threads: int | None = None, **kw: Any) -> Runner:
        return OrtRunner(artifact.file("model"), threads=threads)


class CrashyTarget(EchoTarget):
    name = "crashy"
    description = "test plug-in: segfaults in convert"

    def convert(self, ctx: ConvertContext) -> ConversionResult:
        os.kill(os.getpid(), signal.SIGSEGV)
        raise AssertionError("unreachable")


class SleepyTarget(EchoTarget):
    name = "sleepy"
    description = "test plug-in: hangs in convert"

    def convert(self, ctx: ConvertContext) -> ConversionResult:
        time.sleep(600)
        raise AssertionError("unreachable")
