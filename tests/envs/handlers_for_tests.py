"""A handler for the worker tests: self-contained, like a toolkit handler (numpy only)."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any


class Expected(Exception):
    kind = "conversion"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.hint = "a hint from the handler"


def echo(args: dict[str, Any], job_dir: Path) -> dict[str, Any]:
    os.write(1, b"native stdout line\n")  # what a C toolkit prints: must not reach the protocol
    print("python stdout line")
    (job_dir / "made.txt").write_text(args["text"])
    return {"doubled": args["n"] * 2, "cwd": os.getcwd()}


def fail(args: dict[str, Any], job_dir: Path) -> None:
    raise Expected("op FancyOp is not supported")


def bug(args: dict[str, Any], job_dir: Path) -> None:
    raise ZeroDivisionError("a bug in the toolkit")


def crash(args: dict[str, Any], job_dir: Path) -> None:
    os.abort()


def hang(args: dict[str, Any], job_dir: Path) -> None:
    time.sleep(60)


class Doubler:
    info = {"kind": "doubler"}

    def __init__(self, factor: float) -> None:
        self.factor = factor

    def infer(self, feeds: dict[str, Any]) -> dict[str, Any]:
        os.write(1, b"native chatter during inference\n" * 100)
        if "boom" in feeds:
            raise ValueError("bad input")
        return {"y:0": feeds["x"] * self.factor}


def open_doubler(args: dict[str, Any], job_dir: Path) -> Doubler:
    return Doubler(args["factor"])
