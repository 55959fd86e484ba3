"""Evaluations and experiments: BFCL (`agent.evals.bfcl`), the demo, and the learning curve, rank sweep and transfer."""
