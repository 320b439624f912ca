"""Task spec strings: parsing, options, and one-line errors that name the bad key and the valid ones."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgeconv import tasks
from edgeconv.core.errors import ConfigError


def test_names_and_plain_specs() -> None:
    assert tasks.names() == ["detection", "classification", "ctc", "segmentation"]
    assert isinstance(tasks.parse("detection"), tasks.DetectionTask)
    assert tasks.parse(None) is None
    t = tasks.parse("segmentation:ignore=0,output=seg")
    assert (t.name, t.ignore, t.output, t.spec) == ("segmentation", 0, "seg", "segmentation:ignore=0,output=seg")
    assert tasks.parse(t) is t
    assert tasks.name_of("ctc:alphabet=ab") == "ctc"


def test_inline_alphabet_keeps_commas_and_equals() -> None:
    t = tasks.parse("ctc:alphabet=x=y,1,2,blank=last")
    assert t.symbols == list("x=y,1,2") and t.options["blank"] == "last"
    with pytest.raises(ConfigError, match="unknown option 'b'"):  # ",word=" always starts a key (documented)
        tasks.parse("ctc:alphabet=a,b=c")


def test_alphabet_file_one_symbol_per_line(tmp_path: Path) -> None:
    f = tmp_path / "keys.txt"
    f.write_text("a\nb\n \nch\n\n", encoding="utf-8")
    assert tasks.parse(f"ctc:alphabet=@{f}").symbols == ["a", "b", " ", "ch"]
    assert tasks.parse(f"ctc:alphabet={f}").symbols == ["a", "b", " ", "ch"]
    one = tmp_path / "one.txt"
    one.write_text("0123456789\n")
    assert tasks.parse(f"ctc:alphabet={one}").symbols == list("0123456789")


@pytest.mark.parametrize(("spec", "needle"), [
    ("ctc:blnk=0", "unknown option 'blnk' (valid: alphabet, blank, layout, output, labels)"),
    ("segmentation:ignor=255", "unknown option 'ignor' (valid: ignore, output, masks, classes, threshold)"),
    ("detection:iou=0.5", "unknown option 'iou' (valid: none)"),
    ("ocr", "unknown task 'ocr' (valid: detection, classification, ctc, segmentation)"),
    ("ctc:blank=middle", "blank='middle'"),
    ("ctc:layout=CTN", "layout='CTN'"),
    ("ctc:alphabet=@/nonexistent/keys.txt", "does not exist"),
    ("segmentation:ignore=x", "ignore='x' is not a number"),
    ("ctc:alphabet=ab,blank=0,blank=1", "given twice"),
])
def test_bad_specs_are_one_line_config_errors(spec: str, needle: str) -> None:
    with pytest.raises(ConfigError) as e:
        tasks.parse(spec)
    assert needle in e.value.message and "\n" not in e.value.one_line()
    assert e.value.exit_code == 2
