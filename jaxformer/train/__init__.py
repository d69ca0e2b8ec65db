"""Training: optimizer, sharded train state, the step, the loop, metrics."""
