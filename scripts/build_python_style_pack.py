"""Write the built-in `python-style` pack from a home where `habitloop skills learn-style` made the skill.

    python scripts/build_python_style_pack.py HOME [--summary FILE] [-o FOLDER]

The skill is taken as it is (its revision carries the ruff rules, the repository's path, commit and file hashes,
and the gate's scores); the measured HumanEval numbers (scripts/humaneval_style.py's summary) go into the pack's
description, so `habitloop packs list` says what the pack does and how well. The output folder is replaced.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

from memory.recipe import style_of
from memory.style import StyleRules
from skills import SkillStore
from skills.packs import PackTask, TaskChecker, create_pack

NAME = "python-style"
ROOT = Path(__file__).resolve().parents[1]
# A request as HumanEval's are asked; the checker wants an annotated signature, as the style does.
TASKS = [
    PackTask(
        prompt="Write a Python function `count_vowels(text)`: Count the vowels in a text.",
        checker=TaskChecker(kind="regex", value=r"def count_vowels\(text: str\) -> int:"),
    ),
]


def description(rules: StyleRules, commit: str | None, summary: dict[str, Any] | None) -> str:
    origin = f"habitloop's own code (commit {str(commit)[:12]})"
    text = f"Writes Python the way {origin} does: {rules.describe()}."
    if summary and {"base", "skill"} <= set(summary.get("humaneval", {})):
        he = summary["humaneval"]
        parts = [
            f"{mode} {he[mode]['style_rate']:.0%} in style, pass@1 {he[mode]['pass_at_1']:.1%}"
            for mode in ("base", "retrieval", "skill")
            if mode in he
        ]
        text += f" Measured on HumanEval's {he['skill']['n']} test problems: " + "; ".join(parts) + "."
    return text + " LoRA r=8 on all linear layers (scripts/humaneval_style.sh, docs/humaneval-style.json)."


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("home", type=Path)
    parser.add_argument("--summary", type=Path, default=ROOT / "docs" / "humaneval-style.json")
    parser.add_argument("-o", "--output", type=Path, default=ROOT / "skills" / "packs" / "builtin" / NAME)
    args = parser.parse_args()
    store = SkillStore(args.home / "skills")
    record = store.revision(NAME)
    style = style_of(record)
    if style is None:
        raise SystemExit(f"{NAME} in {args.home} is not a style skill (made by `habitloop skills learn-style`)")
    summary = json.loads(args.summary.read_text()) if args.summary.is_file() else None
    text = description(style.rules, style.source.commit, summary)
    with tempfile.TemporaryDirectory() as scratch:
        built = create_pack(
            NAME, [NAME], [], Path(scratch) / NAME, store=store, version="1.0.0", description=text[:2000], tasks=TASKS
        )
        if args.output.exists():
            shutil.rmtree(args.output)
        shutil.copytree(built, args.output)
    print(f"wrote {args.output}: {text}")


if __name__ == "__main__":
    main()
