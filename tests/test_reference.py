"""One skill reference: `name`, `name@3`, `owner/name`, `a+b@3`, parsed in one place for the agent, the CLI and the
server; the store protocols every read view satisfies."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from skills import InvalidSkillNameError, SkillCatalog, SkillReader, SkillRef, SkillStore, UserError
from skills.instances import LayeredStore, PersonalView
from skills.reference import format_refs


def test_the_grammar() -> None:
    assert SkillRef.parse_one("tool-habits") == SkillRef("tool-habits")
    assert SkillRef.parse_one("tool-habits@3") == SkillRef("tool-habits", 3)
    assert SkillRef.parse_one("alice/pref@2") == SkillRef("pref", 2, owner="alice")
    assert SkillRef.parse("a+alice/b@3") == [SkillRef("a"), SkillRef("b", 3, owner="alice")]
    ref = SkillRef("pref", 2, owner="alice")
    assert (ref.qualified, ref.pair(), ref.format(), ref.format(pin=False)) == (
        "alice/pref",
        ("alice/pref", 2),
        "alice/pref@2",
        "alice/pref",
    )
    assert SkillRef.of("alice/pref", 4) == SkillRef("pref", 4, owner="alice")
    assert format_refs([SkillRef("a", 1), SkillRef("b")]) == "a@1+b"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a@0", "positive integer"),
        ("a@x", "positive integer"),
        ("a@1@2", "positive integer"),
        ("a@", "positive integer"),
        ("A", "invalid skill name"),
        ("../x", "not an instance name"),
        ("a/b/c", "not an instance name"),
        ("a b", "invalid skill name"),
    ],
)
def test_bad_references_say_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(UserError, match=message):
        SkillRef.parse_one(text)


def test_bad_compositions_are_refused() -> None:
    for text, message in (("a++b", "empty part"), ("a+", "empty part"), ("", "empty"), ("a+a@2", "twice")):
        with pytest.raises(UserError, match=message):
            SkillRef.parse(text)
    with pytest.raises(InvalidSkillNameError):
        SkillRef("Not A Slug")


_slug = st.from_regex(r"[a-z0-9](?:[a-z0-9_-]{0,10}[a-z0-9])?", fullmatch=True)


@given(st.lists(st.tuples(st.none() | _slug, _slug, st.none() | st.integers(1, 10**6)), max_size=4, min_size=1))
def test_references_round_trip(parts: list[tuple[str | None, str, int | None]]) -> None:
    refs = list({(owner, name): SkillRef(name, revision, owner) for owner, name, revision in parts}.values())
    assert SkillRef.parse(format_refs(refs)) == refs


def test_every_read_view_is_a_skill_reader(tmp_path: Path) -> None:
    shared = SkillStore(tmp_path / "skills")
    views = [shared, LayeredStore(shared, tmp_path / "instances"), PersonalView(shared, "alice")]
    assert all(isinstance(view, SkillReader) for view in views)
    assert isinstance(shared, SkillCatalog), "the router rescans a store"
