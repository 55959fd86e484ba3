"""Evaluations and experiments: BFCL (`agent.evals.bfcl`), BFCL memory (`agent.evals.memory`), the demo, and the
learning curve, rank sweep and transfer."""
