"""Integration: example 04 (two users, opposite preferences, personal consolidation) on the real base."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_example_04_each_user_gets_their_own_format(real_base: Any, real_home: Path) -> None:
    env = {**os.environ, "HABITLOOP_HOME": str(real_home)}
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "04_personal_instances.py")],
        env=env, capture_output=True, text=True, timeout=1200, cwd=ROOT,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    for user in ("alice", "bob"):
        match = re.search(rf"{user}: base (\d)/6, with {user}'s skill (\d)/6", result.stdout)
        assert match, result.stdout
        assert int(match.group(2)) > int(match.group(1)), result.stdout
    assert "shared skills: []" in result.stdout
