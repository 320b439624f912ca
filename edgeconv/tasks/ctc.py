"""Sequence recognition with a CTC head (text lines, licence plates): greedy decode, exact match, CER.

Why built in: an OCR network's accuracy is "did the whole string come out right", which no tensor drift and no
one-hot classification hack measures. Greedy decoding (argmax per step, collapse repeats, drop the blank) is what
CRNN/LPRNet-style deployments run, so it is the number a user ships.

The alphabet lists the symbols in class order. It may include the blank's slot (``len == classes``; the symbol there
is ignored, as in LPRNet's ``CHARS`` whose last entry is ``-``) or leave it out (``len == classes - 1``; the blank is
inserted at ``blank``, as in CRNN key files). Which one is decided from the output's class count.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from edgeconv.core.console import log
from edgeconv.core.errors import ConfigError
from edgeconv.tasks.base import Task

LAYOUTS = ("NCT", "NTC", "TNC")


def greedy_decode(logits: np.ndarray, blank: int = 0, layout: str = "NTC") -> list[tuple[int, ...]]:
    """Best-path CTC decode: per batch entry, argmax per time step, collapse repeats, then drop ``blank``.

    Ties in the argmax go to the lowest class index (numpy's argmax), which is what torch's argmax does too.
    """
    x = to_ntc(np.asarray(logits), layout)
    best = x.argmax(-1)
    out = []
    for row in best:
        keep = np.ones(len(row), dtype=bool)
        keep[1:] = row[1:] != row[:-1]
        seq = row[keep]
        out.append(tuple(int(v) for v in seq[seq != blank]))
    return out


def to_ntc(x: np.ndarray, layout: str) -> np.ndarray:
    """[N, C, T] / [N, T, C] / [T, N, C] (a 4-D [N, C, 1, T] head is squeezed first) -> [N, T, C]."""
    if x.ndim == 4 and x.shape[2] == 1:
        x = x[:, :, 0, :]
    if x.ndim == 2:  # [T, C] without a batch axis
        x = x[None]
    if x.ndim != 3:
        raise ConfigError(f"task ctc: output of shape {list(x.shape)} is not a sequence of class scores",
                          hint="expected [N,C,T], [N,T,C] or [T,N,C]; pick the output with ctc:output=NAME")
    if layout == "NCT":
        return x.transpose(0, 2, 1)
    if layout == "TNC":
        return x.transpose(1, 0, 2)
    return x


def edit_distance(a: Sequence[Any], b: Sequence[Any]) -> int:
    """Levenshtein distance (insertions, deletions, substitutions cost 1)."""
    if len(a) < len(b):
        a, b = b, a
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def read_alphabet(value: str) -> list[str]:
    """``@file`` or an existing path: one symbol per line (empty lines skipped; a line of one space is the space
    symbol); a file of a single line is read as a string of one-character symbols. Anything else: the inline
    string, one character per symbol."""
    path = Path(value[1:] if value.startswith("@") else value).expanduser()
    if value.startswith("@") or (len(value) > 4 and path.suffix.lower() in (".txt", ".keys", ".dict", ".lst")) \
            or (path.is_file() and len(value) > 1):
        if not path.is_file():
            raise ConfigError(f"task ctc: alphabet file {path} does not exist",
                              hint="alphabet=@FILE (one symbol per line) or an inline string alphabet=0123...")
        lines = [ln.rstrip("\r\n") for ln in path.read_text(encoding="utf-8").splitlines()]
        lines = [ln for ln in lines if ln != ""]
        if len(lines) == 1 and len(lines[0]) > 1:
            return list(lines[0])
        return lines
    return list(value)


def read_labels_csv(path: Path) -> dict[str, str]:
    """``file,label`` rows (a ``file,label`` header is skipped) -> {file as written: label}."""
    if not path.is_file():
        raise ConfigError(f"task ctc: labels file {path} does not exist", hint="labels=stem|prefix|none|FILE.csv")
    with path.open(newline="", encoding="utf-8") as f:
        rows = [r for r in csv.reader(f) if r]
    if rows and [c.strip().lower() for c in rows[0][:2]] == ["file", "label"]:
        rows = rows[1:]
    bad = next((r for r in rows if len(r) < 2), None)
    if bad is not None:
        raise ConfigError(f"task ctc: {path}: row {bad!r} is not file,label")
    return {r[0].strip(): ",".join(r[1:]) for r in rows}


class CtcTask(Task):
    """``ctc:alphabet=...,blank=0|last,layout=NCT|NTC|TNC,output=NAME,labels=auto|stem|prefix|none|FILE.csv``."""

    name: ClassVar[str] = "ctc"
    keys: ClassVar[tuple[str, ...]] = ("alphabet", "blank", "layout", "output", "labels")
    scored: ClassVar[bool] = True
    metric: ClassVar[str] = "exact_match"
    label_free_metric: ClassVar[str] = "exact_agreement"

    def validate(self) -> None:
        self.symbols: list[str] | None = read_alphabet(self.options["alphabet"]) if "alphabet" in self.options \
            else None
        if self.symbols is not None and not self.symbols:
            raise ConfigError("task ctc: the alphabet is empty")
        b = self.options.get("blank", "0").strip().lower()
        if b not in ("first", "last") and not re.fullmatch(r"-?\d+", b):
            raise ConfigError(f"task ctc: blank={b!r} is not an index, 'first' or 'last'")
        self._blank = {"first": "0", "last": "-1"}.get(b, b)
        lay = self.options.get("layout", "auto").upper()
        if lay not in (*LAYOUTS, "AUTO"):
            raise ConfigError(f"task ctc: layout={lay!r} (valid: {', '.join(LAYOUTS)}, auto)")
        self.layout: str | None = None if lay == "AUTO" else lay
        lab = self.options.get("labels", "auto")
        if lab not in ("auto", "stem", "prefix", "none") and not lab.lower().endswith((".csv", ".txt")):
            raise ConfigError(f"task ctc: labels={lab!r} (valid: auto, stem, prefix, none, FILE.csv)")
        self._resolved: dict[tuple[int, ...], tuple[str, int, list[str] | None]] = {}

    # -- geometry of the head -------------------------------------------------------------------------------------
    def resolve(self, shape: Sequence[int]) -> tuple[str, int, list[str] | None]:
        """(layout, blank index, symbol per class or None) for an output of ``shape``, decided once per shape."""
        shape = tuple(int(s) for s in shape)
        if shape in self._resolved:
            return self._resolved[shape]
        s = shape[:2] + shape[3:] if len(shape) == 4 and shape[2] == 1 else shape
        if len(s) == 2:
            s = (1, *s)
        if len(s) != 3:
            raise ConfigError(f"task ctc: output of shape {list(shape)} is not [N,C,T], [N,T,C] or [T,N,C]",
                              hint="pick the sequence output with ctc:output=NAME")
        class_axis = {"NCT": 1, "NTC": 2, "TNC": 2}
        layout = self.layout
        if layout is None:
            if self.symbols is None:
                raise ConfigError(f"task ctc: cannot tell the class axis of output {list(shape)} without an alphabet",
                                  hint="pass ctc:alphabet=... or ctc:layout=NCT|NTC|TNC")
            ks = {len(self.symbols), len(self.symbols) + 1}
            hits = [lay for lay in ("NCT", "NTC") if s[class_axis[lay]] in ks]
            if len(hits) != 1:
                why = "both axes" if hits else "no axis"
                raise ConfigError(f"task ctc: {why} of output {list(shape)} match{'es' if not hits else ''} the "
                                  f"alphabet's {len(self.symbols)} symbols (+ blank)",
                                  hint="pass ctc:layout=NCT|NTC|TNC (and check the alphabet)")
            layout = hits[0]
            if layout == "NTC" and s[0] != 1 and s[1] == 1:
                layout = "TNC"  # [T, 1, C]: a time-major head run on one image
        k = s[class_axis[layout]]
        blank = int(self._blank)
        if not -k <= blank < k:
            raise ConfigError(f"task ctc: blank={blank} is outside the output's {k} classes")
        blank %= k
        per_class: list[str] | None = None
        if self.symbols is not None:
            if len(self.symbols) == k:
                per_class = list(self.symbols)
            elif len(self.symbols) == k - 1:
                per_class = [*self.symbols[:blank], "", *self.symbols[blank:]]
            else:
                raise ConfigError(f"task ctc: the output has {k} classes but the alphabet {len(self.symbols)} "
                                  f"symbols (expected {k} with the blank's slot, or {k - 1} without)",
                                  hint="check ctc:alphabet= and ctc:layout=")
            per_class[blank] = ""
        self._resolved[shape] = (layout, blank, per_class)
        return self._resolved[shape]

    # -- scoring --------------------------------------------------------------------------------------------------
    def predict(self, outputs: Mapping[str, np.ndarray] | np.ndarray) -> list[tuple[Any, ...]]:
        """One output dict -> per batch entry the decoded symbols (class ids when there is no alphabet)."""
        x = self.tensor(outputs)
        layout, blank, per_class = self.resolve(x.shape)
        seqs = greedy_decode(x, blank, layout)
        return seqs if per_class is None else [tuple(per_class[i] for i in q) for q in seqs]

    @staticmethod
    def text(pred: Sequence[Any]) -> str:
        """A prediction (or encoded label) -> its string."""
        return "".join(str(p) for p in pred) if all(isinstance(p, str) for p in pred) else \
            " ".join(str(p) for p in pred)

    def encode(self, label: str) -> tuple[str, ...]:
        """A label string -> its symbols, longest symbol first (symbols may be several characters)."""
        if self.symbols is None:
            raise ConfigError("task ctc: labels need the alphabet", hint="pass ctc:alphabet=... or labels=none")
        syms = sorted({s for s in self.symbols if s}, key=len, reverse=True)
        out, i = [], 0
        while i < len(label):
            m = next((s for s in syms if label.startswith(s, i)), None)
            if m is None:
                raise ConfigError(f"task ctc: label {label!r} holds {label[i]!r}, which is not in the alphabet",
                                  hint="labels=prefix (stem up to the first _ or -), a labels CSV, or labels=none")
            out.append(m)
            i += len(m)
        return tuple(out)

    def targets(self, labels: Sequence[Any], metas: Sequence[Mapping[str, Any]],
                preds: Sequence[list[Any]]) -> list[list[tuple[str, ...]]]:
        return [[self.encode(str(lab))] for lab in labels]

    def sample_stats(self, preds: Sequence[list[Any]], targets: Sequence[list[Any]]) -> np.ndarray:
        """Per sample: [exact matches, edit operations, target symbols, sequences]; targets are encoded labels or,
        label-free, the reference's own predictions."""
        rows = np.zeros((len(preds), 4), np.float64)
        for i, (ps, ts) in enumerate(zip(preds, targets, strict=True)):
            if len(ps) != len(ts):
                raise ConfigError(f"task ctc: sample {i} has {len(ps)} sequences but {len(ts)} targets")
            for p, t in zip(ps, ts, strict=True):
                d = edit_distance(p, t)
                rows[i] += (float(d == 0), d, len(t), 1)
        return rows

    def summarize(self, stats: np.ndarray) -> dict[str, float]:
        s = np.asarray(stats, np.float64).reshape(-1, 4).sum(0)
        return {"exact_match": float(100.0 * s[0] / s[3]) if s[3] else float("nan"),
                "cer": float(100.0 * s[1] / s[2]) if s[2] else (0.0 if s[1] == 0 else float("inf"))}


def load_labels(files: Sequence[Path], root: Path, task: CtcTask) -> list[str] | None:
    """Labels for ``files`` from the ``labels=`` option: ``stem``, ``prefix`` (stem up to the first ``_``/``-``),
    a CSV ``file,label`` (relative path, file name or stem), ``none``; ``auto`` (default): ``labels.csv`` in the
    data folder if present, else the stems if they all spell in the alphabet, else the prefixes, else none."""
    mode = task.options.get("labels", "auto")
    if mode == "none":
        return None
    root = root if root.is_dir() else root.parent
    if mode == "auto" and (root / "labels.csv").is_file():
        mode = str(root / "labels.csv")
    if mode.lower().endswith((".csv", ".txt")):
        p = Path(mode).expanduser()
        table = read_labels_csv(p if p.is_absolute() or p.is_file() else root / p)
        out = []
        for f in files:
            rel = f.relative_to(root).as_posix() if f.is_relative_to(root) else f.name
            lab = next((table[k] for k in (rel, f.name, f.stem) if k in table), None)
            if lab is None:
                raise ConfigError(f"task ctc: {f.name} has no row in the labels file", hint="add a file,label row")
            out.append(lab)
        return _checked(out, task, files)
    stems = [f.stem for f in files]
    prefixes = [re.split(r"[_-]", s, maxsplit=1)[0] for s in stems]
    if mode == "stem":
        return _checked(stems, task, files)
    if mode == "prefix":
        return _checked(prefixes, task, files)
    if task.symbols is None:
        log.info("task ctc: no alphabet, so file names are not read as labels (label-free agreement only)")
        return None
    for cand in (stems, prefixes):
        try:
            return _checked(cand, task, files)
        except ConfigError:
            continue
    log.warning("task ctc: file names (e.g. %s) do not spell in the alphabet: scoring label-free agreement only "
                "(pass labels=FILE.csv for real labels)", files[0].name if files else "?")
    return None


def _checked(labels: list[str], task: CtcTask, files: Sequence[Path]) -> list[str]:
    for lab, f in zip(labels, files, strict=True):
        try:
            task.encode(lab)
        except ConfigError as e:
            raise ConfigError(f"{e.message} (from {f.name})", hint=e.hint) from e
    return labels
