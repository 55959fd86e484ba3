"""BFCL's AST rules, one hand-made case per rule, including the calls that must fail."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.evals.bfcl.checker import check_call, standardize_string

AREA = {
    "name": "geometry.area_circle",
    "description": "Area of a circle.",
    "parameters": {
        "type": "dict",
        "properties": {
            "radius": {"type": "float", "description": "radius"},
            "units": {"type": "string", "description": "unit"},
            "decimals": {"type": "integer", "description": "rounding"},
        },
        "required": ["radius"],
    },
}
AREA_ANSWER = [{"geometry.area_circle": {"radius": [10.0], "units": ["meters", "m", ""], "decimals": [""]}}]

SHAPES = {
    "name": "plot",
    "description": "Plot things.",
    "parameters": {
        "type": "dict",
        "properties": {
            "point": {"type": "tuple", "items": {"type": "integer"}, "description": "x, y"},
            "labels": {"type": "array", "items": {"type": "string"}, "description": "labels"},
            "weights": {"type": "array", "items": {"type": "float"}, "description": "weights"},
            "style": {"type": "dict", "description": "style", "properties": {}},
            "series": {"type": "array", "items": {"type": "dict"}, "description": "series"},
            "show": {"type": "boolean", "description": "show it"},
        },
        "required": ["point"],
    },
}
SHAPES_ANSWER = [
    {
        "plot": {
            "point": [[3, 4]],
            "labels": [["New York", "Los Angeles"], ""],
            "weights": [[0.5, 1.5], ""],
            "style": [{"color": ["red", "Red"], "width": [2, ""]}, ""],
            "series": [[{"name": ["a"]}, {"name": ["b"]}], ""],
            "show": [True, ""],
        }
    }
]


def call(name: str, **arguments: Any) -> dict[str, Any]:
    return {"name": name, "arguments": arguments}


def verdict(arguments: dict[str, Any], *, name: str = "geometry_area_circle") -> Any:
    return check_call([AREA], AREA_ANSWER, {"name": name, "arguments": arguments})


def shapes(**arguments: Any) -> Any:
    return check_call([SHAPES], SHAPES_ANSWER, call("plot", point=[3, 4], **arguments))


def test_a_correct_call_is_valid() -> None:
    result = verdict({"radius": 10.0, "units": "meters"})
    assert result.valid, result.reason


@pytest.mark.parametrize("name", ["geometry_area_circle", "geometry.area_circle"])
def test_dots_and_underscores_name_the_same_function(name: str) -> None:
    assert verdict({"radius": 10.0}, name=name).valid


@pytest.mark.parametrize("name", ["area_circle", "geometry_area_square", ""])
def test_a_wrong_function_name_fails(name: str) -> None:
    result = verdict({"radius": 10.0}, name=name)
    assert not result.valid and result.error_type.endswith("wrong_func_name")


def test_a_missing_required_parameter_fails() -> None:
    result = verdict({"units": "meters"})
    assert not result.valid and result.error_type.endswith("missing_required")


def test_an_unknown_parameter_fails() -> None:
    result = verdict({"radius": 10.0, "colour": "red"})
    assert not result.valid and result.error_type.endswith("unexpected_param")


def test_a_parameter_of_the_function_missing_from_the_answer_fails() -> None:
    answer = [{"geometry.area_circle": {"radius": [10.0]}}]
    result = check_call([AREA], answer, call("geometry_area_circle", radius=10.0, units="m"))
    assert not result.valid and result.error_type.endswith("unexpected_param")


def test_a_value_outside_the_acceptable_ones_fails() -> None:
    result = verdict({"radius": 11.0})
    assert not result.valid and result.error_type == "value_error:others"


def test_an_int_is_accepted_for_a_float() -> None:
    assert verdict({"radius": 10}).valid


def test_a_float_is_not_accepted_for_an_int() -> None:
    result = verdict({"radius": 10.0, "decimals": 2.0})
    assert not result.valid and result.error_type == "type_error:simple"


@pytest.mark.parametrize("value", ["10", True, None, [10.0]])
def test_other_types_fail_for_a_float(value: Any) -> None:
    assert not verdict({"radius": value}).valid


def test_a_bool_is_not_an_int() -> None:
    answer = [{"geometry.area_circle": {"radius": [10.0], "decimals": [1]}}]
    assert not check_call([AREA], answer, call("geometry_area_circle", radius=10.0, decimals=True)).valid
    assert check_call([AREA], answer, call("geometry_area_circle", radius=10.0, decimals=1)).valid


@pytest.mark.parametrize("units", ["Meters", " meters", "M", "m.", "m/"])
def test_strings_are_compared_after_bfcl_normalization(units: str) -> None:
    assert verdict({"radius": 10.0, "units": units}).valid


@pytest.mark.parametrize("units", ["metres", "km", "meter s x"])
def test_a_different_string_fails(units: str) -> None:
    result = verdict({"radius": 10.0, "units": units})
    assert not result.valid and result.error_type == "value_error:string"


def test_optional_parameters_may_be_omitted_only_when_empty_string_is_acceptable() -> None:
    assert verdict({"radius": 10.0}).valid  # units and decimals both accept ""
    answer = [{"geometry.area_circle": {"radius": [10.0], "units": ["meters"]}}]
    result = check_call([AREA], answer, call("geometry_area_circle", radius=10.0))
    assert not result.valid and result.error_type.endswith("missing_optional")


def test_a_tuple_parameter_takes_a_list_and_item_types_are_checked() -> None:
    assert shapes().valid
    assert not check_call([SHAPES], SHAPES_ANSWER, call("plot", point=[3, 5])).valid
    assert not check_call([SHAPES], SHAPES_ANSWER, call("plot", point=["3", "4"])).valid
    assert not check_call([SHAPES], SHAPES_ANSWER, call("plot", point=[4, 3])).valid  # order matters


def test_lists_compare_their_strings_normalized_and_in_order() -> None:
    assert shapes(labels=["new york", "Los-Angeles"]).valid
    assert not shapes(labels=["Los Angeles", "New York"]).valid
    assert not shapes(labels=["New York"]).valid


def test_list_items_are_not_promoted_from_int_to_float() -> None:
    assert shapes(weights=[0.5, 1.5]).valid
    assert not shapes(weights=[1, 2]).valid


def test_dicts_are_checked_key_by_key() -> None:
    assert shapes(style={"color": "RED", "width": 2}).valid
    assert shapes(style={"color": "red"}).valid  # width accepts ""
    assert not shapes(style={"color": "blue"}).valid
    assert not shapes(style={"color": "red", "alpha": 1}).valid
    assert not shapes(style={"width": 2}).valid  # color is not optional


def test_lists_of_dicts_are_checked_in_order() -> None:
    assert shapes(series=[{"name": "a"}, {"name": "B"}]).valid
    assert not shapes(series=[{"name": "b"}, {"name": "a"}]).valid
    assert not shapes(series=[{"name": "a"}]).valid


def test_booleans_must_be_booleans() -> None:
    assert shapes(show=True).valid
    assert not shapes(show="true").valid
    assert not shapes(show=False).valid


def test_a_variable_of_the_answers_own_type_is_accepted() -> None:
    # BFCL writes some answers as variable names (strings) for non-string parameters.
    answer = [{"geometry.area_circle": {"radius": ["r"]}}]
    assert check_call([AREA], answer, call("geometry_area_circle", radius="r")).valid
    assert not check_call([AREA], answer, call("geometry_area_circle", radius="s")).valid


def test_multiple_judges_the_expected_function_among_several() -> None:
    functions = [SHAPES, AREA]
    assert check_call(functions, AREA_ANSWER, call("geometry_area_circle", radius=10)).valid
    wrong = check_call(functions, AREA_ANSWER, call("plot", point=[3, 4]))
    assert not wrong.valid and wrong.error_type.endswith("wrong_func_name")


@pytest.mark.parametrize("bad", [None, "text", {"arguments": {}}, {"name": "geometry_area_circle", "arguments": []}])
def test_no_call_or_a_malformed_call_fails(bad: Any) -> None:
    result = check_call([AREA], AREA_ANSWER, bad)
    assert not result.valid and result.reason


@given(st.integers(), st.lists(st.integers(), min_size=1, max_size=4))
def test_an_integer_is_valid_exactly_when_acceptable(value: int, acceptable: list[int]) -> None:
    answer = [{"geometry.area_circle": {"radius": [10.0], "decimals": acceptable}}]
    result = check_call([AREA], answer, call("geometry_area_circle", radius=10.0, decimals=value))
    assert result.valid == (value in acceptable)


@given(st.text(max_size=20), st.text(max_size=20))
def test_a_string_is_valid_exactly_when_the_normalized_forms_agree(value: str, acceptable: str) -> None:
    answer = [{"geometry.area_circle": {"radius": [10.0], "units": [acceptable]}}]
    result = check_call([AREA], answer, call("geometry_area_circle", radius=10.0, units=value))
    assert result.valid == (standardize_string(value) == standardize_string(acceptable))


@given(st.text(alphabet=st.characters(codec="ascii"), max_size=20))
def test_normalization_ignores_case_and_the_punctuation_bfcl_ignores(text: str) -> None:
    assert standardize_string(text) == standardize_string(text.upper().replace(" ", " , ").replace("X", "X-_"))
