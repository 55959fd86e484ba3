"""Coding style as a skill, on the real base: "make my agent write code the way my repository does".

The built-in `python-style` pack holds a style learned from habitloop's own code (`habitloop skills learn-style`):
the ruff rules its functions keep to (annotations, google-convention docstrings, naming, pyupgrade, 120-character
lines...) and a LoRA adapter trained on its documented functions. This script installs it (unless the store has a
`python-style` skill already), asks the base and the skill for the same HumanEval test problems, and shows the code
each writes, what ruff finds in it under the style's rules, and whether HumanEval's tests pass (in a sandboxed
child). About 2 minutes on 2 cores for the default 4 problems.

    python examples/07_coding_style.py                   # uses $HABITLOOP_HOME (default ~/.habitloop)
    python examples/07_coding_style.py --problems 8
    python examples/07_coding_style.py --learn PATH      # learn PATH's style into python-style first (~30 min)
"""

from __future__ import annotations

import argparse

from agent import Agent, Settings
from agent.evals.humaneval.data import load_problems
from agent.evals.humaneval.harness import evaluate
from agent.style import learn_style
from skills.packs import install_pack

parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
parser.add_argument("--problems", type=int, default=4, help="HumanEval test problems to ask")
parser.add_argument("--learn", metavar="PATH", help="a repository (folder) or an installed package to learn from")
args = parser.parse_args()

settings = Settings()
agent = Agent(settings=settings, tools=[], max_steps=1, max_new_tokens=320)
if args.learn:
    learned = learn_style(agent, args.learn, "python-style")
    print(f"learned {learned.demonstrations} demonstrations from {learned.path}: {learned.rules.describe()}")
    print(f"  {learned.consolidation.reason if learned.consolidation else 'recorded only'}")
elif not agent.store.exists("python-style"):
    installed = install_pack("python-style", agent.store, settings.packs_dir)
    print(f"installed the built-in pack: {', '.join(installed.created_skills) or 'already there'}")

problems = load_problems(settings.home, "test", limit=args.problems)
reports = {mode: evaluate(agent, problems, mode=mode, skill="python-style") for mode in ("base", "skill")}
for i, problem in enumerate(problems):
    print(f"\n=== {problem.task_id}: {problem.request}")
    for mode, report in reports.items():
        case = report.cases[i]
        verdict = "in style" if case.in_style else "breaks " + ", ".join(sorted(set(case.violations)))
        print(f"--- {mode}: {verdict}; tests {case.status}")
        print(case.code)
print()
for mode, report in reports.items():
    print(
        f"{mode:>5}: style rate {report.style_rate:.0%}, pass@1 {report.pass_at_1:.0%}, "
        f"{report.prompt_tokens_mean:.0f} prompt tokens, {report.seconds_per_case:.1f} s per problem"
    )
