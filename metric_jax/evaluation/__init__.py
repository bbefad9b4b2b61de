"""metric_jax.evaluation (in progress)."""
