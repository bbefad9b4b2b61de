"""metric_jax.models (in progress)."""
