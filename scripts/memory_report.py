"""One BFCL memory report from several runs: the README's table and picture when the modes ran as separate commands.

    python scripts/memory_report.py docs/memory-eval-*.jsonl RUN.json ... [--reports reports] [--stem memory-eval]

A `.jsonl` file holds per-answer rows (`habitloop eval memory --out`); a `.json` file is what `habitloop eval memory
--json` printed (its rows, with their seconds per question, and its leak matrix). A (scenario, mode) measured in a
`.json` keeps that row; the others are summarised from their answers (no seconds: the answers do not carry them).
Writes `<reports>/<stem>.json` and `.png` with `agent.evals.memory.report.write_memory_report` and prints the
markdown table (the leak matrix below it, when there is one).
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path
from statistics import fmean

from agent.evals.memory.data import DEV_SCENARIOS, FINAL_SCENARIOS
from agent.evals.memory.harness import MODES, MemoryAnswer, MemoryEvalReport, check_mode
from agent.evals.memory.isolation import LeakCell
from agent.evals.memory.report import markdown_table, write_memory_report


def summarise(scenario: str, mode: str, answers: list[MemoryAnswer]) -> MemoryEvalReport:
    return MemoryEvalReport(
        scenario=scenario,
        mode=check_mode(mode),
        n=len(answers),
        accuracy=fmean(a.correct for a in answers),
        control_accuracy=fmean(a.control_correct for a in answers),
        prompt_tokens_mean=fmean(a.prompt_tokens for a in answers),
        answer_tokens_mean=fmean(a.answer_tokens for a in answers),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("files", nargs="+", type=Path)
    parser.add_argument("--reports", type=Path, default=Path("reports"))
    parser.add_argument("--stem", default="memory-eval")
    args = parser.parse_args()
    answers: dict[tuple[str, str], dict[str, MemoryAnswer]] = defaultdict(dict)
    rows: dict[tuple[str, str], MemoryEvalReport] = {}
    cells: dict[tuple[str, str], LeakCell] = {}
    for path in args.files:
        if path.suffix == ".jsonl":
            for line in path.read_text().splitlines():
                answer = MemoryAnswer.model_validate_json(line)
                answers[answer.scenario, answer.mode][answer.id] = answer
            continue
        payload = json.loads(path.read_text())
        for row in payload.get("rows", []):
            report = MemoryEvalReport.model_validate(row)
            rows[report.scenario, report.mode] = report
        for cell in payload.get("isolation", []):
            leak = LeakCell.model_validate(cell)
            cells[leak.asker, leak.owner] = leak
    for key, by_id in answers.items():
        if key not in rows:
            rows[key] = summarise(*key, list(by_id.values()))
    order = {s: i for i, s in enumerate((*DEV_SCENARIOS, *FINAL_SCENARIOS))}
    reports = sorted(rows.values(), key=lambda r: (order.get(r.scenario, 99), MODES.index(r.mode)))
    files = write_memory_report(reports, args.reports, isolation=list(cells.values()), stem=args.stem)
    print(markdown_table(reports))
    if cells:
        print("| asker | adapter of | n | leak rate | base (chance) |\n| --- | --- | ---: | ---: | ---: |")
        for c in cells.values():
            print(f"| {c.asker} | {c.owner} | {c.n} | {c.leak_rate:.1%} | {c.base_leak_rate:.1%} |")
    print(f"report: {files.json_path}" + (f" and {files.png_path}" if files.png_path else ""))


if __name__ == "__main__":
    main()
