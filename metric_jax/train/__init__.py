"""Training: train state, the `jax.shard_map` SPMD step, objectives, optimizers with parameter groups, checkpoints, loop."""

from metric_jax.train.checkpoint import Checkpointer
from metric_jax.train import from_config
from metric_jax.train.loop import MetricsWriter, NonFiniteError, fit, read_metrics
from metric_jax.train.objectives import (PAIR_KINDS, class_densities, init_loss_params, metric_objective,
                                         pair_objective)
from metric_jax.train.optim import make_optimizer, make_schedule, param_labels
from metric_jax.train.restore import RestoredRun, restore, restore_run
from metric_jax.train.step import AXIS, Trainer, TrainState, make_mesh, split_model

__all__ = ["AXIS", "Trainer", "TrainState", "make_mesh", "split_model", "metric_objective", "pair_objective",
           "init_loss_params", "class_densities", "PAIR_KINDS", "make_optimizer", "make_schedule", "param_labels",
           "Checkpointer", "fit", "MetricsWriter", "read_metrics", "NonFiniteError", "from_config", "restore",
           "restore_run", "RestoredRun"]
