"""Post-processing beside the graph: the files every detector artifact carries, and the library's door onto them.

Why files and not only a library call: the application on the device may have neither edgeconv nor Python.  Each
artifact gets ``postprocess.json`` (the spec + which stage its graph ends at), ``postprocess.py`` (numpy only, the
reference implementation, a verbatim copy of ``standalone.py``) and ``postprocess.hpp`` (C++11, generated), so the
same few lines turn any backend's outputs into the contract.  Inside edgeconv the very same ``standalone`` code runs,
so there is one implementation to trust.
"""

from __future__ import annotations

import functools
import json
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from edgeconv.core.errors import ConfigError
from edgeconv.postprocess import standalone
from edgeconv.postprocess.cpp import render_header
from edgeconv.postprocess.spec import SCHEMA, STAGES, PostprocessSpec, as_spec

JSON_FILE = "postprocess.json"
PY_FILE = "postprocess.py"
HPP_FILE = "postprocess.hpp"
FILES = (JSON_FILE, PY_FILE, HPP_FILE)


def postprocess_record(params: PostprocessSpec | Any, stage: str = "raw") -> dict[str, Any]:
    """What ``postprocess.json`` holds (and what the manifest should record under ``"postprocess"``)."""
    spec = as_spec(params)
    if stage not in STAGES:
        raise ConfigError(f"post-processing: unknown stage '{stage}'", hint=f"stages: {', '.join(STAGES)}",
                          stage="postprocess")
    return {"schema": SCHEMA, "stage": stage, "spec": spec.to_dict(),
            "contract": {"detections": "(N, K, 6) float32: x1, y1, x2, y2 (input pixels), score, class; "
                                       "best first, rows past count all zero", "count": "(N,) int32",
                         "K": spec.max_det},
            "files": {"python": PY_FILE, "cpp": HPP_FILE}}


def write_postprocessor(out_dir: str | Path, params: PostprocessSpec | Any, *, stage: str = "raw") -> list[str]:
    """Write ``postprocess.json``/``.py``/``.hpp`` into ``out_dir``; returns their names (relative to it).

    ``stage``: what the artifact's graph outputs: ``raw`` head maps, ``candidates`` (decode + top-M, no NMS op) or
    ``detections`` (the contract already; the files then only pass it through, for a uniform application).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    record = postprocess_record(params, stage)
    (out / JSON_FILE).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    shutil.copyfile(Path(standalone.__file__), out / PY_FILE)
    (out / HPP_FILE).write_text(render_header(params), encoding="utf-8")
    return list(FILES)


@functools.lru_cache(maxsize=32)
def _record(spec: PostprocessSpec) -> dict[str, Any]:
    return {"spec": spec.validate().to_dict()}


def apply_postprocessor(raw_outputs: Mapping[str, np.ndarray], params: PostprocessSpec | Any) -> tuple[np.ndarray,
                                                                                                       np.ndarray]:
    """Raw outputs (or candidates, or the contract) -> ``(dets (N, K, 6) float32, count (N,) int32)``."""
    record = _record(params) if isinstance(params, PostprocessSpec) else {"spec": as_spec(params).to_dict()}
    return standalone.apply(raw_outputs, record)


def read_postprocessor(artifact_dir: str | Path) -> dict[str, Any]:
    """The artifact's ``postprocess.json``, validated (a ConfigError when it is missing or malformed)."""
    path = Path(artifact_dir) / JSON_FILE
    if not path.is_file():
        raise ConfigError(f"post-processing: {path} does not exist",
                          hint="convert with --postprocess end2end (it writes the post-processor files)",
                          stage="postprocess")
    record = json.loads(path.read_text(encoding="utf-8"))
    PostprocessSpec.from_dict(record.get("spec") or {})
    return record


def load_postprocessor(artifact_dir: str | Path) -> Callable[[Mapping[str, np.ndarray]], tuple[np.ndarray, np.ndarray]]:
    """A callable mapping this artifact's runner outputs to the contract (whatever stage its graph ends at)."""
    record = read_postprocessor(artifact_dir)

    def post(outputs: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        return standalone.apply(outputs, record)

    return post


def harness_postprocess(artifact_dir: str | Path) -> Callable[[Mapping[str, np.ndarray]], list[Any]]:
    """The bench harness's ``post`` for an end2end artifact: outputs -> ``list[Detections]`` (one per image)."""
    from edgeconv.postprocess.verify import to_detections

    post = load_postprocessor(artifact_dir)

    def run(outputs: Mapping[str, np.ndarray]) -> list[Any]:
        return to_detections(*post(outputs))

    return run
