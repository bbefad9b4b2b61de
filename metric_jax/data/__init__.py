"""metric_jax.data (in progress)."""
