"""The built wheel carries the four top-level packages and the console script, and imports from outside the repo."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_wheel_installs_and_imports_in_isolation(tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(wheels), str(ROOT)],
        check=True,
        timeout=300,
    )
    (wheel,) = wheels.glob("habitloop-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for package in ("agent", "agent/backends", "skills", "skills/packs", "tools", "memory"):
        assert f"{package}/__init__.py" in names, f"{package} missing from the wheel"
    builtin = [p for p in (ROOT / "skills" / "packs").iterdir() if (p / "pack.toml").is_file()]
    for folder in builtin:  # the built-in skill packs ship as package data, archives included
        for file in (f for f in folder.rglob("*") if f.is_file() and "__pycache__" not in f.parts):
            assert f"skills/packs/{folder.name}/{file.relative_to(folder).as_posix()}" in names, file
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "habitloop = agent.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()
    assert not any(n.startswith("tests/") for n in names), "tests must not be installed as a package"

    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
        check=True,
        timeout=300,
    )
    # -I: ignore the repo (cwd), PYTHONPATH and user site; the wheel's folder goes first on the path.
    probe = (
        "import sys; sys.path.insert(0, sys.argv[1]); "
        "import agent, skills, tools, memory, agent.cli.app, agent.serve.app; "
        "print('\\n'.join(m.__file__ for m in (agent, skills, tools, memory)))"
    )
    out = subprocess.run(
        [sys.executable, "-I", "-c", probe, str(target)], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    for line in out.stdout.split():
        assert line.startswith(str(target)), f"imported {line} instead of the installed wheel"
