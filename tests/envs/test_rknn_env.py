"""The real ``rknn`` environment: made once (slow, ~1 min, 1.4 GB), then checked in a few seconds."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from edgeconv.envs import manager
from edgeconv.targets.rknn.env import ENV

#: The suite's conftest gives each session a fresh cache, but this environment is 1.4 GB and a minute to make, so
#: it lives outside the repo and across runs: $EDGECONV_TEST_ENVS, default the user default ~/.cache/edgeconv/envs.
TEST_ENVS = Path(os.environ.get("EDGECONV_TEST_ENVS", "~/.cache/edgeconv/envs")).expanduser()


def use_test_envs(monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("EDGECONV_ENVS", str(TEST_ENVS))
    return TEST_ENVS


def existing_rknn_env(monkeypatch: pytest.MonkeyPatch) -> manager.BackendEnv | None:
    use_test_envs(monkeypatch)
    return manager.locate(ENV)


def test_spec_pins_every_requirement_and_installs_the_toolkit_without_its_torch_pin() -> None:
    assert all("==" in r for r in ENV.all_requirements())
    assert ENV.no_deps == ("rknn-toolkit2==2.5.0",)
    assert "torch==2.13.0" in ENV.requirements and "numpy==1.26.4" in ENV.requirements


@pytest.mark.slow
def test_create_rknn_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    use_test_envs(monkeypatch)
    env = manager.ensure(ENV, implicit=False)
    assert env.versions["rknn-toolkit2"] == "2.5.0" and env.versions["numpy"] == "1.26.4"


def test_existing_rknn_environment_imports_the_toolkit(monkeypatch: pytest.MonkeyPatch) -> None:
    env = existing_rknn_env(monkeypatch)
    if env is None:
        pytest.skip("rknn environment not made yet (edgeconv env create rknn, or the slow test)")
    st = manager.status(ENV, deep=True)
    assert st["ok"], st["problem"]
    assert st["versions"]["rknn-toolkit2"] == "2.5.0" and st["versions"]["torch"].startswith("2.13.0")
    # the toolkit's numpy is the environment's, not ours: the main environment is untouched
    import numpy

    assert numpy.__version__ != st["versions"]["numpy"]
    assert "rknn" not in subprocess.run([sys.executable, "-m", "pip", "list"], capture_output=True, text=True).stdout
