"""Training: distributed one-shot (cycle) training of STMAE. Nothing imports this package."""
