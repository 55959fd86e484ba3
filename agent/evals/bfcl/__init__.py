"""BFCL: `data` (from the bfcl-eval wheel), `checker` (BFCL's AST rules), `harness` (the cases through the agent
loop), `practice` (learning from the train split), `recipe` (the tool-habit consolidation).

Import from the modules: this package imports nothing, so `python -m agent.evals.bfcl.data` runs cleanly.
"""
