"""CTC: greedy decode against a hand-built case, a brute force and torch; layouts; CER against a brute-force edit
distance; labels from file names and CSV files."""

from __future__ import annotations

import functools
import itertools
from pathlib import Path

import numpy as np
import pytest

from edgeconv import tasks
from edgeconv.core.errors import ConfigError
from edgeconv.tasks.ctc import edit_distance, greedy_decode, load_labels


def _one_hot(seq: list[int], k: int) -> np.ndarray:
    """[1, T, k] scores whose argmax per step is ``seq``."""
    x = np.full((1, len(seq), k), -1.0, np.float32)
    x[0, np.arange(len(seq)), seq] = 2.0
    return x


def test_hand_built_decode() -> None:
    # h h _ e l l _ l o o  -> "hello": repeats collapse, the blank separates the two l's
    syms = "_helo"
    path = [syms.index(c) for c in "hh_ell_loo"]
    assert greedy_decode(_one_hot(path, 5), blank=0) == [tuple(syms.index(c) for c in "hello")]
    assert greedy_decode(_one_hot([0, 0, 0], 5), blank=0) == [()]
    t = tasks.parse("ctc:alphabet=helo,blank=0")  # 4 symbols for 5 classes: the blank is inserted at 0
    assert t.predict({"y": _one_hot(path, 5)}) == [tuple("hello")]
    t = tasks.parse("ctc:alphabet=helo_,blank=last")  # the blank's slot in the alphabet (LPRNet's CHARS)
    assert t.predict(_one_hot([syms.index(c) - 1 if c != "_" else 4 for c in "hh_ell_loo"], 5)) == [tuple("hello")]


def _brute(scores: np.ndarray, blank: int) -> tuple[int, ...]:
    """Independent: python max per step, itertools.groupby to collapse, then drop the blank."""
    best = [max(range(len(step)), key=lambda c, s=step: (s[c], -c)) for step in scores.tolist()]
    return tuple(c for c, _ in itertools.groupby(best) if c != blank)


@pytest.mark.parametrize("blank", [0, 7])
def test_decode_matches_brute_force_and_torch(blank: int) -> None:
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(blank)
    x = rng.normal(size=(16, 25, 8)).astype(np.float32)  # [N, T, C]
    x[:, 1::3] = x[:, 0:-1:3]  # every third step repeats the one before it, so collapsing matters
    got = greedy_decode(x, blank=blank, layout="NTC")
    assert got == [_brute(x[i], blank) for i in range(len(x))]
    for i, seq in enumerate(got):
        ids = torch.unique_consecutive(torch.from_numpy(x[i]).argmax(-1))
        assert seq == tuple(int(v) for v in ids if int(v) != blank)
    assert greedy_decode(x.transpose(0, 2, 1), blank, "NCT") == got
    assert greedy_decode(x.transpose(1, 0, 2), blank, "TNC") == got


def test_layout_auto_detection() -> None:
    t = tasks.parse("ctc:alphabet=0123456789")
    assert t.resolve((1, 11, 18))[:2] == ("NCT", 0)  # LPRNet-like [N, C, T]
    assert t.resolve((1, 18, 11))[0] == "NTC"
    assert t.resolve((18, 1, 11))[0] == "TNC"  # time-major CRNN on one image
    assert t.resolve((1, 11, 1, 18))[0] == "NCT"  # [N, C, 1, T]
    with pytest.raises(ConfigError, match="both axes"):
        t.resolve((1, 11, 11))
    with pytest.raises(ConfigError, match="no axis"):
        t.resolve((1, 30, 40))
    with pytest.raises(ConfigError, match="13 classes but the alphabet 10"):
        tasks.parse("ctc:alphabet=0123456789,layout=NCT").resolve((1, 13, 5))
    with pytest.raises(ConfigError, match="without an alphabet"):
        tasks.parse("ctc").resolve((1, 11, 18))
    assert tasks.parse("ctc:layout=NTC").predict(_one_hot([1, 1, 0, 2], 3)) == [(1, 2)]  # ids without alphabet


@functools.cache
def _lev(a: str, b: str) -> int:
    """Brute-force recursive edit distance (the definition)."""
    if not a or not b:
        return len(a) + len(b)
    return min(_lev(a[1:], b) + 1, _lev(a, b[1:]) + 1, _lev(a[1:], b[1:]) + (a[0] != b[0]))


def test_edit_distance_and_cer_against_brute_force() -> None:
    rng = np.random.default_rng(0)
    for _ in range(200):
        a = "".join(rng.choice(list("abc"), int(rng.integers(0, 7))))
        b = "".join(rng.choice(list("abc"), int(rng.integers(0, 7))))
        assert edit_distance(a, b) == _lev(a, b)
    t = tasks.parse("ctc:alphabet=abc,layout=NTC")
    labels = ["abc", "aab", "c"]
    preds = [[tuple("abc")], [tuple("ab")], [tuple("cc")]]
    stats = t.sample_stats(preds, t.targets(labels, [{}] * 3, preds))
    m = t.summarize(stats)
    assert m["exact_match"] == pytest.approx(100 / 3)
    assert m["cer"] == pytest.approx(100 * (0 + _lev("ab", "aab") + _lev("cc", "c")) / 7)


def test_score_labelled_and_label_free() -> None:
    t = tasks.parse("ctc:alphabet=ab,blank=0,layout=NTC")
    ref = [{"y": _one_hot(p, 3)} for p in ([1, 0, 2], [2, 2, 1], [1, 1, 1])]
    got = [{"y": _one_hot(p, 3)} for p in ([1, 0, 2], [2, 0, 2], [1, 1, 1])]
    b = tasks.score(t, ref, got, labels=["ab", "ba", "aa"])
    assert (b["metric"], b["reference"], b["value"]) == ("exact_match", pytest.approx(200 / 3),
                                                           pytest.approx(100 / 3))
    assert b["delta"] == pytest.approx(-100 / 3) and b["labelled"] and b["samples"] == 3
    lo, hi = b["delta_ci95"]
    assert lo <= b["delta"] <= hi <= 0
    assert b["extra"]["examples"][1] == {"reference": "ba", "artifact": "bb", "label": "ba"}
    free = tasks.score(t, ref, got)
    assert (free["metric"], free["reference"], free["value"]) == ("exact_agreement", 100.0, pytest.approx(200 / 3))
    assert free["extra"]["label_free_cer"] == pytest.approx(100 * 1 / 5)  # "bb" vs "ba"; 5 reference symbols


def _files(root: Path, names: list[str]) -> list[Path]:
    root.mkdir(parents=True, exist_ok=True)
    out = []
    for n in names:
        (root / n).write_bytes(b"")
        out.append(root / n)
    return out


def test_labels_from_names_and_csv(tmp_path: Path) -> None:
    t = lambda opt: tasks.parse(f"ctc:alphabet=0123456789AB{opt}")  # noqa: E731
    files = _files(tmp_path / "a", ["A12_0001.jpg", "B3-x.png"])
    assert load_labels(files, tmp_path / "a", t(",labels=prefix")) == ["A12", "B3"]
    assert load_labels(files, tmp_path / "a", t("")) == ["A12", "B3"]  # auto: stems do not spell, prefixes do
    assert load_labels(files, tmp_path / "a", t(",labels=none")) is None
    with pytest.raises(ConfigError, match=r"holds '_'.*A12_0001\.jpg"):
        load_labels(files, tmp_path / "a", t(",labels=stem"))
    (tmp_path / "a" / "labels.csv").write_text('file,label\nA12_0001.jpg,"1,2"\nB3-x,AB\n')
    assert load_labels(files, tmp_path / "a", tasks.parse("ctc:alphabet=12AB,")) == ["1,2", "AB"]  # auto: the CSV
    with pytest.raises(ConfigError, match="has no row"):
        load_labels([*files, *_files(tmp_path / "a", ["C.png"])], tmp_path / "a", t(",labels=labels.csv"))
    nothing = _files(tmp_path / "b", ["IMG_0001.jpg"])
    assert load_labels(nothing, tmp_path / "b", t("")) is None  # auto: nothing spells -> label-free
