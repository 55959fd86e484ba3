"""Skill names, skill kinds and the manifest models: bad input fails at the edge, naming the field."""

from __future__ import annotations

import string
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

import skills.manifest
from skills import (
    HabitloopError,
    InvalidSkillNameError,
    LoraSpec,
    SkillManifest,
    UserError,
    register_skill_kind,
    skill_kinds,
    validate_skill_name,
)

SLUG = r"[a-z0-9](?:[a-z0-9_-]{0,62}[a-z0-9])?"
ROOT = Path("/srv/habitloop/skills")

valid_names = st.from_regex(SLUG, fullmatch=True)


def _is_rejected(name: Any) -> bool:
    with pytest.raises(InvalidSkillNameError) as info:
        validate_skill_name(name)
    # the error is for the developer and tells them what a name may be
    assert isinstance(info.value, UserError) and isinstance(info.value, ValueError)
    assert "a-z" in str(info.value)
    return True


# ------------------------------------------------------------------------------------------------ names


@given(valid_names)
def test_valid_slugs_are_accepted_unchanged(name: str) -> None:
    assert validate_skill_name(name) == name


@pytest.mark.parametrize(
    "name",
    ["a", "z9", "tool-habit", "snake_case", "0", "a" * 64, "a-b_c-1", "9lives"],
)
def test_examples_of_valid_names(name: str) -> None:
    assert validate_skill_name(name) == name


@pytest.mark.parametrize(
    "name",
    [
        "",
        ".",
        "..",
        "../x",
        "a/b",
        "a\\b",
        "/abs",
        "a.b",
        ".hidden",
        "with space",
        " lead",
        "trail ",
        "Upper",
        "ALLCAPS",
        "-lead",
        "trail-",
        "_lead",
        "trail_",
        "a" * 65,
        "abc\n",
        "tab\tname",
        "naïve",
        "nul\x00",
        None,
        3,
    ],
)
def test_examples_of_invalid_names(name: Any) -> None:
    assert _is_rejected(name)


@given(st.tuples(valid_names, st.sampled_from(["/", "\\", "..", ".", " ", "\n", "\x00"]), valid_names).map("".join))
def test_names_with_path_characters_are_rejected(name: str) -> None:
    assert _is_rejected(name)


@given(valid_names.filter(lambda n: any(c in string.ascii_lowercase for c in n)))
def test_uppercase_is_rejected(name: str) -> None:
    assert _is_rejected(name.upper())


@given(valid_names, st.sampled_from(["-", "_"]), st.booleans())
def test_leading_or_trailing_separator_is_rejected(name: str, sep: str, leading: bool) -> None:
    assert _is_rejected(sep + name if leading else name + sep)


@given(st.from_regex(r"[a-z0-9]{65,80}", fullmatch=True))
def test_longer_than_64_is_rejected(name: str) -> None:
    assert _is_rejected(name)


@given(st.text(max_size=80))
def test_any_accepted_name_stays_inside_its_root(name: str) -> None:
    try:
        validate_skill_name(name)
    except InvalidSkillNameError:
        return
    child = ROOT / name
    assert child.parent == ROOT
    assert child.name == name
    assert Path(str(child)).resolve().parent == ROOT.resolve()


# ------------------------------------------------------------------------------------------------ kinds


@pytest.fixture
def private_kinds(monkeypatch: pytest.MonkeyPatch) -> None:
    """Register kinds into a copy of the registry, so a test's kinds do not leak into other tests."""
    monkeypatch.setattr(skills.manifest, "_SKILL_KINDS", dict(skills.manifest._SKILL_KINDS))


def test_builtin_kinds_are_registered() -> None:
    assert {"tool_habit", "style", "domain", "preference", "memory"} <= set(skill_kinds())


def test_register_skill_kind_refuses_duplicates(private_kinds: None) -> None:
    register_skill_kind("test-kind", "a kind only this test uses")
    assert skill_kinds()["test-kind"] == "a kind only this test uses"
    with pytest.raises(UserError, match="already registered"):
        register_skill_kind("test-kind", "a second definition")
    with pytest.raises(UserError, match="already registered"):
        register_skill_kind("style", "redefined")
    # the first definitions win
    assert skill_kinds()["test-kind"] == "a kind only this test uses"
    assert skill_kinds()["style"] != "redefined"


def test_register_skill_kind_checks_the_name(private_kinds: None) -> None:
    with pytest.raises(InvalidSkillNameError):
        register_skill_kind("Bad Kind", "no")
    assert "Bad Kind" not in skill_kinds()


def test_skill_kinds_returns_a_copy() -> None:
    kinds = skill_kinds()
    kinds["injected"] = "x"
    assert "injected" not in skill_kinds()


def test_a_registered_kind_is_accepted_by_the_manifest(private_kinds: None) -> None:
    with pytest.raises(ValidationError):
        SkillManifest(**_manifest_fields(kind="newkind"))
    register_skill_kind("newkind", "registered by a test")
    assert SkillManifest(**_manifest_fields(kind="newkind")).kind == "newkind"


# ------------------------------------------------------------------------------------------------ manifest


def _manifest_fields(**overrides: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "name": "my-skill",
        "kind": "style",
        "base_fingerprint": "sha256:abc",
        "lora": LoraSpec(),
        "current": 1,
    }
    return fields | overrides


def _error_locations(error: ValidationError) -> set[tuple[Any, ...]]:
    return {tuple(e["loc"]) for e in error.errors()}


def test_a_valid_manifest_round_trips_through_json() -> None:
    manifest = SkillManifest(**_manifest_fields(tags=("a", "b")))
    assert SkillManifest.model_validate_json(manifest.model_dump_json()) == manifest


@pytest.mark.parametrize(
    ("field", "value", "needle"),
    [
        ("kind", "no-such-kind", "unknown skill kind"),
        ("name", "Bad/Name", "invalid skill name"),
        ("name", "..", "invalid skill name"),
        ("schema_version", skills.manifest.SCHEMA_VERSION + 1, "newer"),
        ("current", 0, "greater than or equal"),
        ("base_fingerprint", "", "at least 1"),
    ],
)
def test_manifest_rejects_bad_fields_naming_the_field(field: str, value: Any, needle: str) -> None:
    with pytest.raises(ValidationError) as info:
        SkillManifest(**_manifest_fields(**{field: value}))
    assert _error_locations(info.value) == {(field,)}
    assert needle in str(info.value)
    # not a HabitloopError: pydantic's own error, which the store converts at its edge
    assert not isinstance(info.value, HabitloopError)


def test_manifest_rejects_unknown_fields_when_read_from_disk() -> None:
    payload = SkillManifest(**_manifest_fields()).model_dump(mode="json") | {"surprise": 1}
    with pytest.raises(ValidationError) as info:
        SkillManifest.model_validate(payload)
    assert _error_locations(info.value) == {("surprise",)}


def test_manifest_accepts_the_current_schema_version() -> None:
    manifest = SkillManifest(**_manifest_fields(schema_version=skills.manifest.SCHEMA_VERSION))
    assert manifest.schema_version == skills.manifest.SCHEMA_VERSION


# ------------------------------------------------------------------------------------------------ LoraSpec

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@given(
    r=st.integers(1, 64),
    alpha=st.integers(1, 256),
    dropout=st.sampled_from([0.0, 0.05, 0.1, 0.5]),
    targets=st.lists(st.sampled_from(TARGETS), min_size=1, unique=True),
)
def test_lora_spec_round_trips_through_peft_config(r: int, alpha: int, dropout: float, targets: list[str]) -> None:
    spec = LoraSpec(r=r, alpha=alpha, dropout=dropout, target_modules=tuple(targets))
    peft_config = spec.to_peft()
    assert (peft_config.r, peft_config.lora_alpha, peft_config.lora_dropout) == (r, alpha, dropout)
    back = LoraSpec.from_adapter_config(peft_config.to_dict())
    # the order of target modules carries no meaning; from_adapter_config normalises it (sorted)
    assert back == spec.model_copy(update={"target_modules": tuple(sorted(targets))})
    # and a second trip is the identity
    assert LoraSpec.from_adapter_config(back.to_peft().to_dict()) == back


def test_lora_spec_reads_a_saved_adapter_config(tmp_path: Path) -> None:
    import json

    LoraSpec(r=4, alpha=8, target_modules=("v_proj", "q_proj")).to_peft().save_pretrained(str(tmp_path))
    saved = json.loads((tmp_path / "adapter_config.json").read_text())
    assert LoraSpec.from_adapter_config(saved) == LoraSpec(r=4, alpha=8, target_modules=("q_proj", "v_proj"))


@pytest.mark.parametrize(
    ("config", "needle"),
    [
        ({"peft_type": "IA3", "r": 8, "target_modules": ["q_proj"]}, "peft_type"),
        ({"peft_type": "LORA", "r": 8, "target_modules": []}, "target_modules"),
        ({"peft_type": "LORA", "r": 8}, "target_modules"),
    ],
)
def test_lora_spec_refuses_configs_that_are_not_lora(config: dict[str, Any], needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        LoraSpec.from_adapter_config(config)


def test_lora_spec_accepts_a_single_target_string() -> None:
    spec = LoraSpec.from_adapter_config({"peft_type": "LORA", "r": 2, "lora_alpha": 4, "target_modules": "q_proj"})
    assert spec.target_modules == ("q_proj",)
    assert spec.alpha == 4


@pytest.mark.parametrize("field", ["r", "alpha", "dropout", "target_modules"])
def test_lora_spec_validates_its_fields(field: str) -> None:
    bad = {"r": 0, "alpha": 0, "dropout": 1.0, "target_modules": ()}[field]
    with pytest.raises(ValidationError) as info:
        LoraSpec(**{field: bad})
    assert _error_locations(info.value) == {(field,)}
