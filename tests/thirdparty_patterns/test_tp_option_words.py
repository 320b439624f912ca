"""``--option KEY=false`` as the README writes it: a bool option took the string 'false' and was refused."""

from __future__ import annotations

from edgeconv.intake.loader import parse_model_args
from edgeconv.targets.registry import get_target


def test_true_false_none_words_are_python_values_in_any_case() -> None:
    got = parse_model_args(["a=false", "b=TRUE", "c=True", "d=none", "e=Null", "f=falsey", "g=0"])
    assert got == {"a": False, "b": True, "c": True, "d": None, "e": None, "f": "falsey", "g": 0}


def test_a_bool_backend_option_accepts_the_documented_spelling() -> None:
    opts = parse_model_args(["int8_fallback=false"])
    checked = get_target("onnxruntime").check_options(opts, "--option")
    assert checked["int8_fallback"] is False
