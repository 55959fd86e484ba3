"""The `habitloop skills ...` commands on a store of tiny-model skills (real-base commands: tests/integration)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from agent.cli.app import app
from agent.testing import tiny_base
from skills import ChatExample, SkillStore, TrainConfig, train_lora

runner = CliRunner()


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A HABITLOOP_HOME with two skills; `alpha` has revisions 1 (promoted), 2 (promoted), 3 (rejected)."""
    root = tmp_path_factory.mktemp("home")
    base = tiny_base()
    store = SkillStore(root / "skills", base_fingerprint=base.fingerprint)
    examples = [ChatExample.from_pair("ping", "pong")]
    folders = []
    for seed in range(3):
        result = train_lora(
            base.model,
            base.tokenizer,
            examples,
            root / f"a{seed}",
            config=TrainConfig(steps=1, seed=seed),
            progress=False,
        )
        folders.append(result.adapter_dir)
    store.create("alpha", folders[0], kind="tool_habit", description="answers pong")
    store.add_revision("alpha", folders[1])
    store.add_revision("alpha", folders[2], promote=False, note="worse")
    store.create("beta", folders[1], kind="style", description="another one", tags=["x"])
    return root


def invoke(home: Path, *args: str) -> object:
    result = runner.invoke(app, list(args), env={"HABITLOOP_HOME": str(home)}, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


def test_skills_list_json(home: Path) -> None:
    payload = json.loads(invoke(home, "skills", "list", "--json").output)
    assert [s["name"] for s in payload["skills"]] == ["alpha", "beta"]
    alpha = payload["skills"][0]
    assert alpha["current"] == 2 and alpha["revisions"] == [1, 2, 3] and alpha["kind"] == "tool_habit"
    assert payload["problems"] == []


def test_skills_show_and_history_json(home: Path) -> None:
    shown = json.loads(invoke(home, "skills", "show", "alpha", "--json").output)
    assert shown["manifest"]["name"] == "alpha" and shown["revision"]["number"] == 2
    history = json.loads(invoke(home, "skills", "history", "alpha", "--json").output)
    assert [(r["number"], r["status"], r["current"]) for r in history["revisions"]] == [
        (1, "promoted", False),
        (2, "promoted", True),
        (3, "rejected", False),
    ]
    assert history["revisions"][1]["parent"] == 1


def test_human_output_has_tables(home: Path) -> None:
    assert "alpha" in invoke(home, "skills", "list").output
    assert "rejected" in invoke(home, "skills", "history", "alpha").output


def test_rollback_then_export_delete(home: Path, tmp_path: Path) -> None:
    rolled = json.loads(invoke(home, "skills", "rollback", "beta", "--to", "1", "--json").output)
    assert rolled == {"name": "beta", "current": 1}
    archive = tmp_path / "beta.tar.gz"
    invoke(home, "skills", "export", "beta", "-o", str(archive))
    assert archive.stat().st_size > 0
    invoke(home, "skills", "delete", "beta", "--yes")
    names = [s["name"] for s in json.loads(invoke(home, "skills", "list", "--json").output)["skills"]]
    assert names == ["alpha"]


def _cli(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HABITLOOP_HOME": str(home)}
    return subprocess.run(
        [sys.executable, "-m", "agent.cli", *args], env=env, capture_output=True, text=True, timeout=120
    )


def test_errors_are_one_line_with_a_fix_and_exit_2(home: Path) -> None:
    missing = _cli(home, "skills", "show", "nope")
    assert missing.returncode == 2
    assert "no skill named 'nope'" in missing.stderr and "fix:" in missing.stderr
    assert "Traceback" not in missing.stderr
    hostile = _cli(home, "skills", "show", "../etc")
    assert hostile.returncode == 2 and "invalid skill name" in hostile.stderr


def test_corrupt_skill_is_reported_not_fatal(tmp_path: Path, home: Path) -> None:
    import shutil

    copy = tmp_path / "home"
    shutil.copytree(home, copy)
    (copy / "skills" / "alpha" / "manifest.json").write_text("{not json")
    result = _cli(copy, "skills", "list", "--json")
    assert result.returncode == 0, result.stderr
    payload = json.loads(result.stdout)
    assert [p["name"] for p in payload["problems"]] == ["alpha"]
    assert "unreadable" in payload["problems"][0]["error"]


# ------------------------------------------------------------------------------------------------ hostile text

# Text a skill's or pack's author controls: raw ESC / OSC 8 / BEL / C1 / carriage return, and rich markup.
HOSTILE = (
    "\x1b[31mRED \x1b]8;;https://evil.example\x07osc\x1b]8;;\x07 \x9b2J \rback "
    "[bold red]B[/] [link=https://evil.example]L[/link]"
)
INERT = ("[bold red]B[/]", "[link=https://evil.example]L[/link]", "\\x1b[31mRED", "\\x07", "\\x9b2J", "\\x0dback")


def _assert_inert(output: str, shown_at_least: int = len(INERT)) -> None:
    for raw in ("\x1b", "\x07", "\x9b", "\r"):
        assert raw not in output, (raw, output)
    for shown in INERT[:shown_at_least]:
        assert shown in output, (shown, output)


@pytest.fixture
def wide(monkeypatch: pytest.MonkeyPatch) -> None:
    """A console wide enough that table cells do not wrap (the checks look for whole strings)."""
    from rich.console import Console

    from agent.cli import output

    monkeypatch.setattr(output, "console", Console(width=1000))


def test_skill_text_is_printed_inert(tmp_path: Path, adapter: Callable[[str], Path], tiny: Any, wide: None) -> None:
    store = SkillStore(tmp_path / "skills", base_fingerprint=tiny.fingerprint)
    store.create("evil", adapter("alpha"), kind="style", description=HOSTILE, tags=[HOSTILE])
    _assert_inert(invoke(tmp_path, "skills", "list").output)
    _assert_inert(invoke(tmp_path, "skills", "show", "evil").output)
    assert json.loads(invoke(tmp_path, "skills", "show", "evil", "--json").output)["manifest"]["description"] == HOSTILE


def test_pack_text_is_printed_inert(tmp_path: Path, adapter: Callable[[str], Path], tiny: Any, wide: None) -> None:
    from skills.packs import PackTask, create_pack, install_pack

    src = SkillStore(tmp_path / "src", base_fingerprint=tiny.fingerprint)
    src.create("alpha", adapter("alpha"), kind="style")
    pack = create_pack(
        "evil-pack", ["alpha"], [], tmp_path / "evil-pack", store=src, description=HOSTILE,
        tasks=[PackTask(prompt=HOSTILE)],
    )  # fmt: skip
    home = tmp_path / "home"
    install_pack(pack, SkillStore(home / "skills", base_fingerprint=src.base_fingerprint), home / "packs")
    _assert_inert(invoke(home, "packs", "list").output, 1)  # (its first 80 characters)
    shown = invoke(home, "packs", "show", "evil-pack").output
    _assert_inert(shown)
    assert json.loads(invoke(home, "packs", "show", "evil-pack", "--json").output)["description"] == HOSTILE


def test_error_messages_are_printed_inert(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """An error quotes what the user or a file gave (here a skill name): rich must not read it as markup."""
    from agent import cli

    monkeypatch.setenv("HABITLOOP_HOME", str(tmp_path))
    monkeypatch.setattr("sys.argv", ["habitloop", "skills", "delete", "[bold red]B[/]", "--yes"])
    with pytest.raises(SystemExit):
        cli.main()
    err = capsys.readouterr().err
    assert "[bold red]B[/]" in err, err
