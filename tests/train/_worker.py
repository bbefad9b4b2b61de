"""Subprocess worker for the resume and multi-host tests: trains a tiny embedder on a synthetic, `(seed, step)`-pure data
stream with `metric_jax.train.fit` and saves the final parameters to an .npz file.

  python -m tests.train._worker --out params.npz --steps 6 [--workdir DIR --checkpoint_every 1 --sleep 0.3]
                                [--devices 4] [--coordinator host:port --num_processes 2 --process_id 0]
                                [--loss contrastive] [--memory_size 12]

`--loss` names a registry loss (the step then runs it row-sharded, `axis_name="batch"`); the default is `tiny_loss`, a plain
function that the step gives the gathered batch. `--memory_size` turns on the cross-batch memory (needs `--loss`).
"""

import argparse
import os
import sys
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")

GLOBAL_BATCH = 8
IMAGE_SHAPE = (8, 8, 1)


def synthetic_batches(start_step, *, process_index=0, process_count=1, sleep=0.0, seed=0):
  """This process's contiguous slice of the global batch of every step >= start_step (4 classes x 2 images)."""
  import numpy as np
  share = GLOBAL_BATCH // process_count
  lo = process_index * share
  step = start_step
  while True:
    rng = np.random.default_rng([seed, step])
    labels = rng.permutation(np.repeat(np.arange(4), 2)).astype(np.int32)
    images = (rng.normal(size=(GLOBAL_BATCH,) + IMAGE_SHAPE) + labels[:, None, None, None]).astype(np.float32)
    if sleep:
      time.sleep(sleep)
    yield {"image": images[lo:lo + share], "label": labels[lo:lo + share], "valid": np.ones(share, bool)}
    step += 1


def tiny_loss(embeddings, labels, *, valid=None):
  """Mean squared distance of positive pairs minus a capped mean over negative pairs (a stand-in metric loss)."""
  import jax.numpy as jnp
  from metric_jax import labels as labels_lib, pairwise
  masks = labels_lib.pair_masks(labels, query_valid=valid)
  d2 = pairwise.squared_euclidean(embeddings)
  pos = jnp.sum(jnp.where(masks.positive, d2, 0.0)) / jnp.maximum(jnp.sum(masks.positive), 1)
  neg = jnp.sum(jnp.where(masks.negative, jnp.minimum(d2, 2.0), 0.0)) / jnp.maximum(jnp.sum(masks.negative), 1)
  return pos - 0.5 * neg


def build_trainer(devices=None, loss=None, memory_size=0):
  from flax import nnx
  from metric_jax import models, train
  model = models.Embedder(models.SmallResNet(IMAGE_SHAPE, widths=(4, 8), rngs=nnx.Rngs(0)), IMAGE_SHAPE, 4,
                          layers=("stage1", "stage2"), rngs=nnx.Rngs(1))
  _, params, _ = train.split_model(model)
  optimizer = train.make_optimizer({"model": params, "loss": {}}, optimizer="adam", learning_rate=1e-2,
                                   new_layer_lr_multiplier=10.0)
  return train.Trainer(model, train.metric_objective(loss or tiny_loss), optimizer, mesh=train.make_mesh(devices),
                       memory_size=memory_size)


def flat_params(trainer, state):
  import jax
  import numpy as np
  leaves = jax.tree_util.tree_flatten_with_path(jax.device_get(trainer.local_copy(
      {"params": state.params, "model_state": state.model_state, "opt_state": state.opt_state,
       "memory": state.memory})))[0]
  return {jax.tree_util.keystr(path): np.asarray(leaf) for path, leaf in leaves}


def main(argv=None):
  parser = argparse.ArgumentParser()
  parser.add_argument("--out", required=True)
  parser.add_argument("--steps", type=int, default=6)
  parser.add_argument("--workdir", default=None)
  parser.add_argument("--checkpoint_every", type=int, default=0)
  parser.add_argument("--sleep", type=float, default=0.0)
  parser.add_argument("--devices", type=int, default=4)
  parser.add_argument("--coordinator", default=None)
  parser.add_argument("--num_processes", type=int, default=1)
  parser.add_argument("--process_id", type=int, default=0)
  parser.add_argument("--loss", default=None)
  parser.add_argument("--memory_size", type=int, default=0)
  args = parser.parse_args(argv)

  from metric_jax.train import distributed
  import jax
  jax.config.update("jax_num_cpu_devices", args.devices)
  distributed.initialize(args.coordinator, args.num_processes, args.process_id)
  import numpy as np
  from metric_jax import train

  trainer = build_trainer(loss=args.loss, memory_size=args.memory_size)
  state = trainer.init_state(seed=0)
  state, summary = train.fit(
      trainer, state,
      lambda start: synthetic_batches(start, process_index=jax.process_index(), process_count=jax.process_count(),
                                      sleep=args.sleep),
      num_steps=args.steps, workdir=args.workdir, checkpoint_every=args.checkpoint_every, log_every=1,
      progress=False)
  if jax.process_index() == 0:
    np.savez(args.out, start_step=summary["start_step"], **flat_params(trainer, state))
  print(f"done start_step={summary['start_step']} loss={summary['train'].get('loss')}", flush=True)


if __name__ == "__main__":
  sys.exit(main())
