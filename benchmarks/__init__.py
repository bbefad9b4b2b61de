"""Speed and memory benchmarks of metric_jax against the matmul floor and pytorch-metric-learning."""
