"""Sweep files: each `get_sweep()` returns an `experiments.sweep.Sweep` (base config, variants, seeds, claims)."""
