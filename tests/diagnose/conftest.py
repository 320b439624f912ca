"""The plain and the hostile four-stage CNN (tests/fixtures/int8_patterns.py), exported with the dynamo exporter,
with a calibration sample and the inputs diagnose compares on."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


@pytest.fixture(scope="session")
def chains(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """name ("chain" | "hostile") -> (prepared reference, calibration set); built once per session."""
    pytest.importorskip("onnxruntime", reason="diagnose runs the reference on ONNX Runtime")
    import int8_patterns as patterns

    from edgeconv.calibration.dataset import CalibrationSet
    from edgeconv.calibration.preprocess import Preprocess
    from edgeconv.pipeline import prepare

    made: dict[str, Any] = {}

    def get(name: str) -> Any:
        if name not in made:
            from edgeconv.diagnose.modules import reference_module_map

            prep = prepare(f"{FIXTURES / 'int8_patterns.py'}:build_{name}", inputs=["images:1x3x32x32"])
            reference_module_map(prep.reference)  # the dynamo re-export for module names, cached for the session
            root = patterns.write_calibration(name, tmp_path_factory.mktemp(f"calib-{name}"), n=64)
            made[name] = (prep, CalibrationSet(root, Preprocess(size=(32, 32)), "images", (1, 3, 32, 32),
                                               size=None, warn_small=False))
        return made[name]

    return get


@pytest.fixture(scope="session")
def feeds() -> list[dict[str, Any]]:
    import int8_patterns as patterns

    return [{"images": x[None]} for x in patterns.inputs("chain", 4, 99)[0]]


@pytest.fixture(scope="session")
def int8_artifact(chains: Any, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """(name, target) -> an INT8 artifact, converted with blocking tolerances lifted (the hostile model is meant to
    be bad), once per session."""
    from edgeconv.pipeline import convert_reference
    from edgeconv.plan import with_tolerances
    from edgeconv.profiles import load_profile

    made: dict[tuple[str, str], Any] = {}

    def get(name: str, target: str) -> Any:
        if (name, target) not in made:
            prep, cal = chains(name)
            prof = with_tolerances(load_profile(target), {"int8": {"cosine": -1.0, "task_delta": 1e9}})
            out = tmp_path_factory.mktemp(f"{name}-{target}") / "int8"
            made[(name, target)] = convert_reference(prep, prof, out=out, precision="int8", calibration=cal,
                                                     use_cache=False)
        return made[(name, target)]

    return get
