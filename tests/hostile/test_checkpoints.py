"""Hostile and broken checkpoints: nothing from a file runs unless trusted; every fault names the user's file."""

from __future__ import annotations

import io
import struct
import sys
import zipfile
from pathlib import Path

import pytest
import torch

from edgeconv.core.errors import ModelLoadError
from edgeconv.intake.loader import load_source, load_state_dict

FIX = Path(__file__).parents[1] / "fixtures" / "tiny_model.py"


class _Payload:
    """Unpickling this writes a marker file: proof that a pickle was executed."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').write('ran')",))


def _good_pt2(path: Path) -> Path:
    import tiny_model

    m = tiny_model.build().eval()
    torch.export.save(torch.export.export(m, (torch.rand(1, 3, 32, 32),)), str(path))
    return path


def _replace_entry(src: Path, dst: Path, suffix: str, data: bytes | None,
                   extra: dict[str, bytes] | None = None) -> Path:
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as zout:
        for info in zin.infolist():
            body = zin.read(info.filename)
            if data is not None and info.filename.endswith(suffix):
                body = data
            zout.writestr(info, body)
        prefix = zin.namelist()[0].split("/")[0]
        for name, body in (extra or {}).items():
            zout.writestr(f"{prefix}/{name}", body)
    return dst


@pytest.fixture
def hostile_pt2(tmp_path: Path) -> tuple[Path, Path]:
    marker = tmp_path / "PWNED"
    buf = io.BytesIO()
    torch.save(_Payload(marker), buf)
    good = _good_pt2(tmp_path / "good.pt2")
    return _replace_entry(good, tmp_path / "evil.pt2", "sample_inputs/model.pt", buf.getvalue()), marker


def test_hostile_pt2_is_refused_without_running_and_quietly(hostile_pt2, capfd) -> None:
    evil, marker = hostile_pt2
    with pytest.raises(ModelLoadError) as ei:
        load_source(str(evil))
    assert not marker.exists(), "the pickle payload ran"
    assert "--trust-checkpoint" in ei.value.hint and str(evil) in ei.value.message
    assert "\n" not in ei.value.one_line()
    err = capfd.readouterr().err
    assert "Traceback" not in err and "Fallback" not in err and "weights_only" not in err


def test_trust_checkpoint_is_what_lets_a_pickle_run(hostile_pt2) -> None:
    evil, marker = hostile_pt2
    with pytest.raises(ModelLoadError):  # the payload returns None where torch expects inputs
        load_source(str(evil), trust_checkpoint=True)
    assert marker.exists()


def test_benign_pt2_still_loads_safely(tmp_path: Path) -> None:
    src = load_source(str(_good_pt2(tmp_path / "m.pt2")))
    assert src.kind == "exported-program"
    x = torch.rand(1, 3, 32, 32)
    assert src.module(x).shape[1] == 4


def test_pt2_with_compiled_code_or_not_a_zip_is_refused(tmp_path: Path) -> None:
    good = _good_pt2(tmp_path / "good.pt2")
    aoti = _replace_entry(good, tmp_path / "aoti.pt2", "", None, {"data/aotinductor/model/libx.so": b"\x7fELF"})
    with pytest.raises(ModelLoadError, match="compiled code") as ei:
        load_source(str(aoti))
    assert "--trust-checkpoint" in ei.value.hint
    junk = tmp_path / "junk.pt2"
    junk.write_bytes(b"not a zip at all")
    with pytest.raises(ModelLoadError, match=r"not a torch\.export \.pt2 archive"):
        load_source(str(junk))


def test_plain_pickle_checkpoint_stays_refused(tmp_path: Path) -> None:
    marker = tmp_path / "PWNED"
    p = tmp_path / "evil.pth"
    torch.save({"state_dict": _Payload(marker)}, p)
    with pytest.raises(ModelLoadError, match="arbitrary unpickling"):
        load_source(f"{FIX}:build", weights=str(p))
    assert not marker.exists()


@pytest.mark.parametrize("kind", ["garbage", "huge-header", "truncated"])
def test_broken_safetensors_are_model_load_errors(tmp_path: Path, kind: str) -> None:
    import tiny_model
    from safetensors.torch import save_file

    p = tmp_path / "w.safetensors"
    if kind == "garbage":
        p.write_bytes(b"\x00\x01garbage" * 10)
    elif kind == "huge-header":
        p.write_bytes(struct.pack("<Q", 1 << 60) + b"{}")
    else:
        save_file(tiny_model.build().state_dict(), str(p))
        p.write_bytes(p.read_bytes()[:-200])
    with pytest.raises(ModelLoadError) as ei:
        load_state_dict(p)
    assert str(p) in ei.value.message and ei.value.hint


def _write(tmp_path: Path, name: str, body: str) -> Path:
    f = tmp_path / name
    f.write_text(body)
    return f


@pytest.mark.parametrize("body", [
    "import sys\ndef build():\n    sys.exit(0)\n",
    "import sys\nsys.exit(0)\ndef build():\n    pass\n",
    "def build():\n    raise GeneratorExit('odd')\n",
    "def build():\n    raise RuntimeError('boom')\n",
])
def test_user_code_that_exits_or_raises_is_a_model_load_error(tmp_path: Path, body: str) -> None:
    f = _write(tmp_path, "factory.py", body)
    with pytest.raises(ModelLoadError) as ei:
        load_source(f"{f}:build")
    assert str(f) in ei.value.message


def test_ctrl_c_in_user_code_stays_a_keyboard_interrupt(tmp_path: Path) -> None:
    f = _write(tmp_path, "factory.py", "def build():\n    raise KeyboardInterrupt\n")
    with pytest.raises(KeyboardInterrupt):
        load_source(f"{f}:build")


def test_factory_folder_stays_importable_for_build_and_trusted_pickles(tmp_path: Path) -> None:
    (tmp_path / "ec_models_fixture.py").write_text(
        "import torch\nclass Net(torch.nn.Module):\n    def __init__(self):\n        super().__init__()\n"
        "        self.conv = torch.nn.Conv2d(3, 2, 1)\n    def forward(self, x):\n        return self.conv(x)\n")
    f = _write(tmp_path, "factory.py", "def build():\n    from ec_models_fixture import Net\n    return Net()\n")
    sys.path.insert(0, str(tmp_path))
    try:
        import ec_models_fixture

        full = tmp_path / "full.pt"
        torch.save(ec_models_fixture.Net(), full)  # a whole-model pickle that refers to the user's module by name
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("ec_models_fixture", None)
    src = load_source(f"{f}:build", weights=str(full), trust_checkpoint=True)
    assert src.kind == "factory" and not src.module.training
    assert str(tmp_path) in sys.path  # still reachable later in the run (lazy imports in forward, unpickling)
    assert sys.path.index(str(tmp_path)) > 0
