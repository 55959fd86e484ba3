"""BFCL memory's answer rule (agent.evals.memory.checker): hand-made cases, and properties of the standardization."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.evals.memory.checker import is_correct, standardize


@pytest.mark.parametrize(
    ("answer", "acceptable", "expected"),
    [
        ("Your name is Michael.", ["Michael"], True),
        ("MICHAEL", ["michael"], True),
        ("Michaela", ["Michael"], False),  # a whole word, not a substring
        ("You are 35 years old", ["35", "thirty five"], True),
        ("You are thirty five", ["35", "thirty five"], True),
        ("You are thirty-five", ["35", "thirty five"], False),  # "-" is removed, not spaced: "thirtyfive"
        ("It was on April 1, 2024", ["April 1 2024"], True),  # the comma goes
        ("You live in newyork", ["New York"], False),  # whitespace is kept (BFCL's code, not its docstring)
        ("You live in New  York", ["New York"], False),  # and not collapsed
        ("(Seattle)", ["Seattle"], True),
        ("Joe's bike", ["Joe's"], True),  # ' becomes " on both sides
        ('Joe"s bike', ["Joe's"], True),
        ("the steam_wand is bent", ["steam wand"], False),  # "_" is removed: "steamwand"
        ("the steam wand is bent", ["steam-wand"], False),  # "steamwand" is no word of the answer
        ("Losartan 50 mg once daily", ["Losartan 50 mg"], True),
        ("anything", [], False),
        ("I do not know", ["Seattle", "Portland"], False),
    ],
)
def test_hand_made_answers(answer: str, acceptable: list[str], expected: bool) -> None:
    assert is_correct(answer, acceptable) is expected


def test_standardize_follows_bfcl() -> None:
    assert standardize("A.b,c/d-e_f*g^h(i)j") == "abcdefghij"
    assert standardize("It's  OK") == 'it"s  ok'


_DROPPED = ",./-_*^()"
_words = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJ0123456789 '", min_size=0, max_size=40)


@given(answer=_words, option=_words, inserts=st.lists(st.tuples(st.integers(0, 40), st.sampled_from(_DROPPED))))
def test_the_dropped_characters_never_change_a_verdict(
    answer: str, option: str, inserts: list[tuple[int, str]]
) -> None:
    noisy = answer
    for position, char in inserts:
        noisy = noisy[:position] + char + noisy[position:]
    assert is_correct(noisy, [option]) == is_correct(answer, [option])
    assert is_correct(noisy.swapcase(), [option.upper()]) == is_correct(answer, [option])


@given(
    before=st.text(alphabet="!?: ", max_size=10),
    option=st.from_regex(r"[a-z0-9]([a-z0-9 ]{0,10}[a-z0-9])?", fullmatch=True),
    after=st.text(alphabet="!?: ", max_size=10),
)
def test_an_option_standing_alone_is_always_found(before: str, option: str, after: str) -> None:
    assert is_correct(f"{before} {option.title()}. {after}", [option])
    assert not is_correct(f"{before} q{option}q {after}", [option])
