"""A coding style as a skill: the ruff rules a repository keeps to, reading a repository into demonstrations, and
`learn_style` consolidating them on the tiny base."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from langgraph.checkpoint.memory import InMemorySaver

from agent import Agent, Settings
from agent.style import learn_style, teachable
from memory import HashingEmbedder, InMemoryBuffer
from memory.recipe import style_of
from memory.repository import read_repository, request_for
from memory.style import StyleRules, check_code, code_of, discover_rules, family_of, in_style
from skills import SkillStore, UserError


def styled(i: int, width: int = 0) -> str:
    """A function in one house style: annotated, a google docstring, a long line when `width` asks for one."""
    padding = f"  # {'x' * max(0, width - 30)}" if width else ""
    return f'def add_{i}(a: int, b: int) -> int:\n    """Add two numbers."""\n    return a + b + {i}{padding}\n'


def bare(i: int) -> str:
    return f"def sub_{i}(a, b):\n    return a - b\n"


def test_the_rules_are_what_the_functions_keep_to_and_code_is_checked_against_them() -> None:
    rules = discover_rules([styled(i) for i in range(20)])
    assert set(rules.select) >= {"ANN", "D", "N"} and "ANN001" not in rules.ignore and rules.functions == 20
    unannotated, annotated = check_code([bare(1), styled(1)], rules)
    assert {"ANN001", "ANN201", "D103"} <= set(unannotated.violations) and not unannotated.in_style
    assert annotated.in_style and annotated.violations == ()
    assert unannotated.families()["ANN"] >= 3


def test_a_rule_most_functions_break_is_left_out_and_a_rare_breach_is_not() -> None:
    mostly_bare = [bare(i) for i in range(18)] + [styled(i) for i in range(2)]
    rules = discover_rules(mostly_bare, max_violation_share=0.1)
    assert {"ANN001", "ANN201", "D103"} <= set(rules.ignore)
    assert check_code([bare(99)], rules)[0].in_style, "the repository's own habit is its style"
    rare = discover_rules([styled(i) for i in range(19)] + [bare(0)], max_violation_share=0.1)
    assert "ANN001" not in rare.ignore and not check_code([bare(1)], rare)[0].in_style


def test_the_line_length_is_the_shortest_usual_one_the_functions_keep_to() -> None:
    assert discover_rules([styled(i, width=95) for i in range(10)]).line_length == 100
    assert discover_rules([styled(i) for i in range(10)]).line_length == 79
    rules = StyleRules(select=("E",), line_length=79)
    assert check_code([styled(0, width=95)], rules)[0].violations == ("E501",)


def test_code_that_does_not_parse_is_never_in_style_and_order_is_kept() -> None:
    rules = discover_rules([styled(i) for i in range(5)])
    checks = check_code(["def f(:\n", styled(3), bare(2)], rules)
    assert "invalid-syntax" in checks[0].violations and checks[0].families()["syntax"] >= 1
    assert checks[1].in_style and not checks[2].in_style
    assert check_code([], rules) == []
    assert check_code(["", "x = 1"], rules)[0].violations == ("no-function",), "no function is no function in style"
    judge = in_style(rules)
    assert judge(f"Here it is:\n```python\n{styled(4)}```\nDone.", "ignored") and not judge(bare(1), "")
    assert family_of("ANN201") == "ANN" and family_of("D401") == "D" and family_of("C401") == "C4"


@given(st.text(max_size=300))
def test_the_code_of_any_reply_is_a_part_of_it(reply: str) -> None:
    code = code_of(reply)
    assert code in reply


def test_the_code_of_a_reply_is_its_first_fenced_block() -> None:
    assert code_of("Sure:\n```python\ndef f():\n    pass\n```\nand\n```\nx = 1\n```") == "def f():\n    pass"
    assert code_of("```py\nx = 1\n") == "x = 1", "an unclosed fence runs to the end"
    assert code_of("def g():\n    return 1") == "def g():\n    return 1"


def write_repository(root: Path, n: int = 8) -> Path:
    (root / "pkg").mkdir(parents=True)
    body = "\n\n".join(styled(i) for i in range(n))
    (root / "pkg" / "maths.py").write_text('"""Maths."""\n\n' + body)
    (root / "pkg" / "things.py").write_text(
        "class Thing:\n    def method(self, x: int) -> int:\n        return x\n\n\n"
        "def spread(first, *rest, key=None, **options):\n    return first\n"
    )
    (root / "pkg" / "broken.py").write_text("def oops(:\n")
    (root / "tests").mkdir()
    (root / "tests" / "test_maths.py").write_text("def test_it():\n    assert True\n")
    (root / ".hidden").mkdir()
    (root / ".hidden" / "x.py").write_text("def hidden():\n    pass\n")
    return root


def test_a_repository_is_read_into_its_module_level_functions(tmp_path: Path) -> None:
    origin, functions = read_repository(str(write_repository(tmp_path / "repo")))
    names = [f.name for f in functions]
    assert names[:8] == [f"add_{i}" for i in range(8)] and names[8:] == ["spread"]
    assert "test_it" not in names and "hidden" not in names and "method" not in names
    spread = functions[-1]
    assert spread.params == ("first", "*rest", "key", "**options") and spread.description == ""
    assert functions[0].request == "Write a Python function `add_0(a, b)`: Add two numbers."
    assert functions[0].demonstration().answer == f"```python\n{styled(0).rstrip()}\n```"
    assert set(origin.files) == {"pkg/maths.py", "pkg/things.py", "pkg/broken.py"} and origin.commit is None
    assert all(len(h) == 64 for h in origin.files.values())


STANDALONE = '''"""A module of one project."""

from __future__ import annotations

import json
import os.path
from collections.abc import Sequence
from typing import Any as Anything

from project.errors import ProjectError

LIMIT = 3


def dump(items: Sequence[Anything]) -> str:
    """Items as JSON."""
    return json.dumps(list(items))


def checked(text: str) -> Settings:
    """Only an annotation names the project's type."""
    import re

    return re.sub("a", "b", text)


def raising(x: int) -> int:
    """Raises the project's error."""
    if x > LIMIT:
        raise ProjectError(x)
    return x


def lazy(x: int) -> int:
    """Imports a third-party module itself."""
    import numpy

    return int(numpy.sum(x))


@cache
def decorated(x: int) -> int:
    """A decorator from nowhere."""
    return x


def joined(a: str) -> str:
    """os.path, imported as a dotted module."""
    return os.path.join(a, "b")
'''


def test_a_function_brings_its_standard_imports_and_one_that_needs_its_repository_is_not_self_contained(
    tmp_path: Path,
) -> None:
    (tmp_path / "repo").mkdir()
    (tmp_path / "repo" / "module.py").write_text(STANDALONE)
    functions = {f.name: f for f in read_repository(str(tmp_path / "repo"))[1]}
    dump, checked = functions["dump"], functions["checked"]
    assert dump.imports == ("import json", "from collections.abc import Sequence", "from typing import Any as Anything")
    assert dump.self_contained and dump.answer.startswith("import json\n") and dump.answer.endswith(dump.code)
    assert checked.self_contained and checked.imports == (), "a name only annotations use is not run"
    assert functions["raising"].unresolved == ("LIMIT", "ProjectError")
    assert functions["lazy"].unresolved == ("numpy",), "a third-party import is not there elsewhere"
    assert functions["decorated"].unresolved == ("cache",)
    assert functions["joined"].unresolved == ("os",), "`import os.path` is not carried"
    assert dump.demonstration(standalone=True).answer == f"```python\n{dump.answer}\n```"
    assert dump.demonstration().answer == f"```python\n{dump.code}\n```"


def test_self_contained_asks_for_the_functions_that_run_outside_their_repository(tmp_path: Path) -> None:
    (tmp_path / "repo").mkdir()
    (tmp_path / "repo" / "module.py").write_text(STANDALONE)
    functions = read_repository(str(tmp_path / "repo"))[1]
    rules = StyleRules(select=["E"], ignore=[], convention=None, line_length=120, functions=len(functions))
    chosen, in_style = teachable(functions, rules, max_lines=30, self_contained=True)
    assert sorted(f.name for f in chosen) == ["checked", "dump"] and in_style == len(functions)
    assert len(teachable(functions, rules, max_lines=30)[0]) == len(functions), "by default every function is"


def test_a_git_repository_records_its_commit_and_a_package_its_version(tmp_path: Path) -> None:
    repo = write_repository(tmp_path / "repo")
    git = ["git", "-C", str(repo), "-c", "user.email=a@b", "-c", "user.name=a"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "x"], check=True)
    head = subprocess.run([*git, "rev-parse", "HEAD"], check=True, capture_output=True, text=True).stdout.strip()
    assert read_repository(str(repo))[0].commit == head
    origin, functions = read_repository("typer")
    assert origin.package == "typer" and origin.version and functions


def test_a_bad_source_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="neither a folder nor an installed package"):
        read_repository("no_such_package_here")
    with pytest.raises(UserError, match="not a folder"):
        read_repository(str(tmp_path / "missing" / "dir"))
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "a.py").write_text("x = 1\n")
    with pytest.raises(UserError, match="no Python functions"):
        read_repository(str(tmp_path / "empty"))


def test_the_request_names_the_parameters_and_ends_as_a_sentence() -> None:
    assert request_for("f", ("a",), "Do it") == "Write a Python function `f(a)`: Do it."
    assert request_for("g", (), "") == "Write a Python function `g()`."


# --------------------------------------------------------------------------------- learning, on the tiny base

TINY: dict[str, Any] = {"min_steps": 1, "max_steps": 2, "max_new_tokens": 8, "replay": 1, "holdout_fraction": 0.25}


def tiny_agent(home: Path, base: Any) -> Agent:
    return Agent(
        settings=Settings(home=home),
        base=base,
        store=SkillStore(home / "skills", base_fingerprint=base.fingerprint),
        tools=[],
        max_steps=1,
        checkpointer=InMemorySaver(),
        buffer=InMemoryBuffer(HashingEmbedder()),
    )


def test_learn_style_consolidates_the_documented_in_style_functions_into_a_style_skill(
    tmp_path: Path, fresh_base: Any
) -> None:
    agent = tiny_agent(tmp_path / "home", fresh_base)
    repo = write_repository(tmp_path / "repo")
    report = learn_style(agent, str(repo), "house-style", **TINY)
    assert (report.functions, report.demonstrations, report.files) == (9, 8, 3)
    assert report.consolidation is not None and report.consolidation.skill == "house-style"
    assert report.promoted, report.consolidation.reason  # the tiny base writes no function: 0 vs 0 in style
    manifest = agent.store.get("house-style")
    record = agent.store.revision("house-style")
    assert manifest.kind == "style" and "ruff ANN" in manifest.description
    style = style_of(record)
    assert style is not None and style.rules == report.rules
    assert style.source.files.keys() == {"pkg/maths.py", "pkg/things.py", "pkg/broken.py"}
    assert len(record.provenance.episode_ids) == 8
    assert record.evaluation.metrics["candidate_heldout_match"] == 0.0, "an empty or garbled reply is not in style"
    assert agent.buffer.stats().unconsolidated_successes == 0, "the buffer lets them go"


def test_record_only_leaves_the_demonstrations_for_retrieval(tmp_path: Path, fresh_base: Any) -> None:
    agent = tiny_agent(tmp_path / "home", fresh_base)
    report = learn_style(agent, str(write_repository(tmp_path / "repo")), "house-style", consolidate=False)
    assert report.consolidation is None and not agent.store.exists("house-style")
    assert agent.buffer.stats().unconsolidated_successes == 8
    hits = agent.recall("Write a Python function `add_3(a, b)`: Add two numbers.", k=1)
    assert hits[0][1].startswith("```python\ndef add_")


def test_too_few_functions_to_teach_is_refused_before_anything_is_recorded(tmp_path: Path, fresh_base: Any) -> None:
    agent = tiny_agent(tmp_path / "home", fresh_base)
    repo = write_repository(tmp_path / "repo", n=2)
    with pytest.raises(UserError, match="at least 4"):
        learn_style(agent, str(repo), "house-style")
    assert agent.buffer.stats().unconsolidated_successes == 0


def test_self_contained_demonstrations_bring_their_imports(tmp_path: Path, fresh_base: Any) -> None:
    agent = tiny_agent(tmp_path / "home", fresh_base)
    repo = write_repository(tmp_path / "repo")
    (repo / "pkg" / "module.py").write_text(STANDALONE)
    report = learn_style(agent, str(repo), "house-style", self_contained=True, consolidate=False)
    assert report.self_contained and report.demonstrations == 10, "8 adders, `dump` and `checked`: no others"
    hits = agent.recall("Write a Python function `dump(items)`: Items as JSON.", k=1)
    assert hits[0][1].startswith("```python\nimport json\nfrom collections.abc import Sequence\n")
