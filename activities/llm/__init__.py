"""The model layer: providers behind ModelClient, one error taxonomy, chains, breaker, budgets."""
