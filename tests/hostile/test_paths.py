"""Nothing lands outside --out; a user's folder is never replaced; leftovers of killed runs are cleaned."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from edgeconv.core.artifact import MANIFEST, atomic_dir, check_out_dir, clean_stale, safe_child
from edgeconv.core.errors import ConfigError
from edgeconv.profiles import load_profile_file


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


@pytest.mark.parametrize("name", ["../escaped", "../../../escaped", "a/b", "/abs", ".hidden", "..", "", "a\x00b",
                                  "x" * 200])
def test_safe_child_refuses_names_that_leave_root(tmp_path: Path, name: str) -> None:
    with pytest.raises(ConfigError):
        safe_child(tmp_path, name)


def test_safe_child_refuses_a_planted_symlink(tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "out" / "onnxruntime-fp32").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(ConfigError, match="symbolic link"):
        safe_child(tmp_path / "out", "onnxruntime-fp32")
    assert safe_child(tmp_path / "out", "openvino-int8") == (tmp_path / "out" / "openvino-int8").absolute()


def test_profile_name_traversal_is_refused(tmp_path: Path) -> None:
    p = tmp_path / "evil.toml"
    p.write_text('backend = "onnxruntime"\nname = "../../../escaped"\n')
    with pytest.raises(ConfigError) as ei:
        load_profile_file(p)
    assert str(p) in ei.value.message and "name" in ei.value.message


def test_atomic_dir_never_replaces_a_users_folder(tmp_path: Path) -> None:
    dest = tmp_path / "onnxruntime-fp32"
    dest.mkdir()
    (dest / "thesis.tex").write_text("years of work")
    with pytest.raises(ConfigError, match="not an edgeconv artifact"), atomic_dir(dest) as tmp:
        (tmp / "model.onnx").write_bytes(b"x")
    assert (dest / "thesis.tex").read_text() == "years of work"
    assert [p.name for p in tmp_path.iterdir()] == ["onnxruntime-fp32"]
    with pytest.raises(ConfigError, match="not an edgeconv artifact"):
        check_out_dir(tmp_path, replace=dest)


def test_atomic_dir_replaces_an_artifact_and_honours_the_umask(tmp_path: Path) -> None:
    dest = tmp_path / "art"
    old = os.umask(0o022)
    try:
        for body in ("one", "two"):
            with atomic_dir(dest) as tmp:
                (tmp / MANIFEST).write_text("{}")
                (tmp / "f").write_text(body)
    finally:
        os.umask(old)
    assert (dest / "f").read_text() == "two"
    assert dest.stat().st_mode & 0o777 == 0o755


def test_stale_temp_folders_of_dead_runs_are_cleaned_live_ones_kept(tmp_path: Path) -> None:
    dead, live = _dead_pid(), os.getpid()
    stale = tmp_path / f".art.tmp-{dead}-abcd1234"
    aside = tmp_path / f".art.old-{dead}"
    mine = tmp_path / f".art.tmp-{live}-zzzz9999"
    for d in (stale, aside, mine):
        d.mkdir()
        (d / "half.bin").write_bytes(b"x")
    with atomic_dir(tmp_path / "art") as tmp:
        (tmp / MANIFEST).write_text("{}")
    assert not stale.exists() and not aside.exists() and mine.exists()
    assert clean_stale(tmp_path) == []


def test_check_out_dir_refuses_files_and_unwritable_folders(tmp_path: Path) -> None:
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(ConfigError, match="is a file"):
        check_out_dir(f)
    check_out_dir(tmp_path / "new" / "deeper")  # creatable: fine
    assert not (tmp_path / "new").exists()  # and checking did not create it
    if os.geteuid() == 0:
        pytest.skip("root can write read-only folders: the read-only case cannot be observed")
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        with pytest.raises(ConfigError, match="not writable"):
            check_out_dir(ro / "out")
    finally:
        ro.chmod(0o755)


def test_no_reference_work_folder_is_left_behind(tmp_path: Path) -> None:
    fix = Path(__file__).parents[1] / "fixtures" / "tiny_model.py"
    dead = _dead_pid()
    tmproot = Path(tempfile.gettempdir())
    stale = tmproot / f"edgeconv-ref-{dead}-stale"
    stale.mkdir(exist_ok=True)
    code = ("from edgeconv.intake.loader import load_source\n"
            "from edgeconv.export.reference import prepare_reference\n"
            "from edgeconv.core.tensors import TensorSpec\n"
            f"src = load_source({str(fix)!r} + ':build')\n"
            "ref = prepare_reference(src, [TensorSpec('images', (1, 3, 16, 16))], use_cache=False,"
            " exporters=('legacy',))\n"
            "assert ref.onnx_path.is_file()\n"
            "import os; print(os.getpid())\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "EDGECONV_CACHE": str(tmp_path / "cache")})
    assert out.returncode == 0, out.stderr[-2000:]
    pid = out.stdout.strip().splitlines()[-1]
    assert not list(tmproot.glob(f"edgeconv-ref-{pid}-*"))
    assert not stale.exists()
