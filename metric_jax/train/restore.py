"""Restoring a trained model from a run directory.

A run directory written by `python -m experiments.train` (one seed: `<workdir>/seed_<s>`) holds `config.json` (the full
config), `run.json` (input shape, number of training classes), `preprocess.npz` (statistics the preprocessing fitted on
the training images) and `checkpoints/`. `restore` rebuilds the model, objective and optimizer from the config through
`metric_jax.train.from_config` — the same code that built them for training — and restores the checkpoint into them:

    model, config, state = metric_jax.train.restore("runs/default/seed_0")
    embeddings = model(images, train=False)["embedding"]
"""

from __future__ import annotations

import json
import os
from typing import Any, Callable, NamedTuple, Optional

import numpy as np

CONFIG_FILE = "config.json"
RUN_FILE = "run.json"
PREPROCESS_FILE = "preprocess.npz"


class RestoredRun(NamedTuple):
  model: Any              # the nnx model with the checkpoint's parameters; call model(images, train=False)
  config: Any             # ml_collections.ConfigDict of the run
  state: Any              # metric_jax.train.TrainState (replicated on this process's devices)
  trainer: Any            # metric_jax.train.Trainer (embed_fn, train_step, ...)
  test_transform: Callable  # uint8 images [N, H, W, C] -> float32 network inputs, as at evaluation
  info: dict              # run.json: input_shape, num_train_classes, dataset, ...


def _run_dir(workdir: str) -> str:
  """`workdir` itself when it holds a run; else its only `seed_*` run."""
  if os.path.exists(os.path.join(workdir, CONFIG_FILE)) and os.path.exists(os.path.join(workdir, RUN_FILE)):
    return workdir
  if os.path.isdir(workdir):
    seeds = sorted(d for d in os.listdir(workdir) if d.startswith("seed_")
                   and os.path.exists(os.path.join(workdir, d, RUN_FILE)))
    if len(seeds) == 1:
      return os.path.join(workdir, seeds[0])
    if seeds:
      raise ValueError(f"`workdir` {workdir} holds {len(seeds)} runs ({', '.join(seeds)}); pass one of them.")
  raise FileNotFoundError(f"`workdir` {workdir} holds no run ({CONFIG_FILE} and {RUN_FILE} written by "
                          f"`python -m experiments.train`).")


def restore_run(workdir: str, *, step: Optional[int] = None) -> RestoredRun:
  """Everything `restore` gives, plus the trainer, the evaluation transform and the run's facts.

  Args:
    workdir: a run directory (or a workdir holding exactly one `seed_*` run).
    step: checkpoint step to restore; default the latest.
  """
  import ml_collections
  from metric_jax.train import from_config
  from metric_jax.train.checkpoint import Checkpointer
  run_dir = _run_dir(workdir)
  with open(os.path.join(run_dir, CONFIG_FILE)) as f:
    config = ml_collections.ConfigDict(json.load(f))
  with open(os.path.join(run_dir, RUN_FILE)) as f:
    info = json.load(f)
  input_shape = tuple(int(v) for v in info["input_shape"])
  num_classes = int(info["num_train_classes"])
  trainer, loss_params = from_config.build_trainer(config, input_shape, num_classes)
  consts = {"d0": np.zeros((num_classes,), np.float32)} if from_config.uses_density_adaptivity(config) else {}
  template = trainer.init_state(seed=int(config.seed), loss_params=loss_params, loss_consts=consts)
  checkpointer = Checkpointer(os.path.join(run_dir, "checkpoints"), async_save=False)
  try:
    state, _ = checkpointer.restore(template, step)
  finally:
    checkpointer.close()
  stats_path = os.path.join(run_dir, PREPROCESS_FILE)
  stats = dict(np.load(stats_path)) if os.path.exists(stats_path) else {}
  _, test_transform = from_config.make_transforms(config, stats, info.get("image_shape", input_shape))
  rng = np.random.default_rng(0)
  return RestoredRun(trainer.model(state), config, state, trainer, lambda x: test_transform(x, rng), info)


def restore(workdir: str, *, step: Optional[int] = None):
  """`(model, config, state)` of the run in `workdir`: the nnx model with the trained parameters (callable as during
  evaluation, `model(images, train=False)["embedding"]`), the run's config and its `TrainState`."""
  run = restore_run(workdir, step=step)
  return run.model, run.config, run.state


__all__ = ["restore", "restore_run", "RestoredRun", "CONFIG_FILE", "RUN_FILE", "PREPROCESS_FILE"]
