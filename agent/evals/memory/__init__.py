"""BFCL memory: `data` (conversations and questions from the bfcl-eval wheel), `checker` (BFCL's answer rule),
`play` (the conversations told to each user's agent), `harness` (the questions asked cold, five modes), `isolation`
(one user's memory adapter asked another user's questions), `report` (JSON, plot, markdown table).

Import from the modules, as with `agent.evals.bfcl`.
"""
