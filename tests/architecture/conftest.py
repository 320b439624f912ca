"""Register the test plug-in package (tests/plugins) through a real entry point, as `pip install` would."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

PLUGINS = Path(__file__).parent.parent / "plugins"


def write_dist_info(root: Path) -> Path:
    """A minimal installed distribution whose entry points register the plug-in's targets."""
    d = root / "edgeconv_testplugin-0.1.dist-info"
    d.mkdir(parents=True, exist_ok=True)
    (d / "METADATA").write_text("Metadata-Version: 2.1\nName: edgeconv-testplugin\nVersion: 0.1\n")
    (d / "entry_points.txt").write_text(
        "[edgeconv.targets]\n"
        "echo = edgeconv_testplugin:EchoTarget\n"
        "crashy = edgeconv_testplugin:CrashyTarget\n"
        "sleepy = edgeconv_testplugin:SleepyTarget\n"
        "broken = edgeconv_testplugin_missing:Nope\n")
    return root


@pytest.fixture
def plugin_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    """The plug-in registered in this process and, through the returned env, in CLI subprocesses."""
    from edgeconv.targets import registry

    site = write_dist_info(tmp_path / "site")
    for p in (str(PLUGINS), str(site)):
        monkeypatch.syspath_prepend(p)
    monkeypatch.setenv("EDGECONV_PROFILES", str(PLUGINS / "profiles"))
    pythonpath = os.pathsep.join([str(PLUGINS), str(site), *sys.path])
    monkeypatch.setenv("PYTHONPATH", pythonpath)  # the benchmark worker is a subprocess: it must see the plug-in
    registry.registrations.cache_clear()
    env = {**os.environ, "PYTHONPATH": pythonpath}
    yield env
    registry.registrations.cache_clear()
