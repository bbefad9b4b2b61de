"""metric_jax.train (in progress)."""
