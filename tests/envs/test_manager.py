"""Backend environments: made once with a notice, found afterwards, unfinished ones redone, failures in one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgeconv.core.errors import MissingDependencyError
from edgeconv.envs import manager
from edgeconv.envs.spec import EnvSpec

BARE = EnvSpec(name="bare", requirements=(), imports=("json", "sqlite3"), versions_of=("no-such-dist",))


@pytest.fixture(autouse=True)
def envs_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("EDGECONV_ENVS", str(tmp_path / "envs"))
    monkeypatch.delenv("EDGECONV_WHEELHOUSE", raising=False)
    monkeypatch.delenv("EDGECONV_ENV_AUTO", raising=False)
    return tmp_path / "envs"


def test_key_names_the_pins_and_the_interpreter() -> None:
    a = EnvSpec(name="x", requirements=("numpy==1.26.4",))
    assert a.key("3.11", "x86_64") == EnvSpec(name="x", requirements=("numpy==1.26.4",)).key("3.11", "x86_64")
    assert a.key("3.11", "x86_64") != EnvSpec(name="x", requirements=("numpy==1.26.3",)).key("3.11", "x86_64")
    assert a.key("3.11", "x86_64") != a.key("3.12", "x86_64") != a.key("3.11", "aarch64")
    assert len(a.key()) == 64


def test_create_once_then_reuse(envs_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    env = manager.ensure(BARE, quiet=True)
    err = capsys.readouterr().err
    assert "creating backend environment 'bare'" in err and "reused afterwards" in err
    assert env.path.parent == envs_dir and env.path.name == f"bare-{BARE.key()}"
    rec = json.loads((env.path / manager.RECORD).read_text())
    assert rec["versions"] == {"no-such-dist": None} and rec["python"].startswith("3.")
    assert rec["bytes"] > 0 and rec["create_seconds"] >= 0
    again = manager.ensure(BARE, quiet=True)
    assert again.path == env.path and "creating" not in capsys.readouterr().err  # no network, no notice
    st = manager.status(BARE, deep=True)
    assert st["exists"] and st["ok"] and st["problem"] is None and st["python"] == rec["python"]
    # an unfinished folder (no record) is not an environment: it is removed and made again
    (env.path / manager.RECORD).unlink()
    assert manager.locate(BARE) is None
    assert manager.status(BARE)["exists"] is False
    redone = manager.ensure(BARE, quiet=True)
    assert (redone.path / manager.RECORD).is_file()
    assert manager.remove(BARE) == redone.path and not redone.path.exists()


def test_implicit_creation_can_be_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGECONV_ENV_AUTO", "0")
    with pytest.raises(MissingDependencyError, match="does not exist and EDGECONV_ENV_AUTO=0") as e:
        manager.ensure(BARE, quiet=True)
    assert "edgeconv env create bare" in (e.value.hint or "")


def test_unavailable_package_is_one_line_naming_it(envs_dir: Path) -> None:
    spec = EnvSpec(name="nowheel", requirements=("edgeconv-no-such-package==0.0.1",))
    with pytest.raises(MissingDependencyError) as e:
        manager.create(spec, no_index=True, quiet=True)
    msg = e.value.one_line()
    assert "\n" not in msg
    assert "could not be created: edgeconv-no-such-package==0.0.1" in msg
    assert "EDGECONV_WHEELHOUSE" in e.value.hint and "--find-links" in e.value.hint
    assert not manager.env_path(spec).exists()  # nothing half-made is left to be mistaken for an environment


def test_unsupported_python_is_refused_before_anything_is_made() -> None:
    spec = EnvSpec(name="old", requirements=("x==1",), no_deps=("toolkit==2.5.0",), python_versions=("2.7",))
    with pytest.raises(MissingDependencyError, match=r"toolkit==2.5.0 has no wheel for Python 3\.\d+"):
        manager.create(spec, quiet=True)
    assert not manager.env_path(spec).exists()


def test_wheelhouse_becomes_find_links(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("EDGECONV_WHEELHOUSE", f"{tmp_path / 'a'}:{tmp_path / 'b'}")
    argv = manager.pip_argv("py", tmp_path / "log", find_links=("/w",), no_index=True)
    assert argv[:4] == ["py", "-m", "pip", "install"] and "--no-index" in argv
    links = [argv[i + 1] for i, a in enumerate(argv) if a == "--find-links"]
    assert links == ["/w", str(tmp_path / "a"), str(tmp_path / "b")]


@pytest.mark.parametrize(("text", "pkg", "why"), [
    ("ERROR: Could not find a version that satisfies the requirement rknn-toolkit2==2.5.0 (from versions: none)\n"
     "ERROR: No matching distribution found for rknn-toolkit2==2.5.0", "rknn-toolkit2==2.5.0", "no wheel"),
    ("WARNING: Retrying ... NewConnectionError('Failed to establish a new connection: [Errno 101] Network is "
     "unreachable')\nERROR: No matching distribution found for torch==2.13.0", "torch==2.13.0", "no network"),
    ("ERROR: Could not install packages due to an OSError: [Errno 28] No space left on device", None, "OSError"),
])
def test_pip_failures_in_words(text: str, pkg: str | None, why: str) -> None:
    got_pkg, got_why = manager.pip_failure(text)
    assert got_pkg == pkg and why in got_why
